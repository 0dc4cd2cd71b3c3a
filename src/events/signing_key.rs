//! The server's ed25519 signing key: created on first start, kept in the store forever after.
//!
//! Every PDU this server creates carries a signature with it, so the key must survive restarts:
//! a new key would make the server's own history unverifiable to future federation peers.

use ruma::{OwnedServerName, ServerSigningKeyId, signatures::Ed25519KeyPair};

use crate::storage::{Batch, Result, StorageError, Store, Table};

const KEY_RECORD: &[u8] = b"signing_key";

/// The key pair and the server it signs for; peers look it up as `ed25519:<the pair's version>`.
pub struct SigningKey {
    pub(crate) server_name: OwnedServerName,
    pub(crate) key_pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Loads the key from the store, generating and storing one on first start.
    pub(crate) async fn load_or_create(
        store: &Store,
        server_name: OwnedServerName,
    ) -> Result<Self> {
        let (version, der) = match store.get(Table::Global, KEY_RECORD)? {
            Some(record) => {
                let (version, der) = split_record(&record)?;
                (version.to_owned(), der.to_vec())
            }
            None => {
                let der = Ed25519KeyPair::generate();
                let version = random_version();
                let mut record = version.as_bytes().to_vec();
                record.push(0);
                record.extend_from_slice(&der);
                let mut batch = Batch::new();
                batch.put(Table::Global, KEY_RECORD, record);
                store.write_durable(batch).await?;
                tracing::info!(key_id = %format!("ed25519:{version}"), "generated signing key");
                (version, der.to_vec())
            }
        };
        let key_pair = Ed25519KeyPair::from_der(&der, version.clone())
            .map_err(|e| corrupt(format!("signing key: {e}")))?;
        // Every signature names the key by its id: a record whose version makes no valid id
        // fails here, at start, rather than in every event.
        ServerSigningKeyId::parse(format!("ed25519:{version}"))
            .map_err(|e| corrupt(format!("signing key id: {e}")))?;
        Ok(SigningKey {
            server_name,
            key_pair,
        })
    }

    /// The key of the spec's cryptographic test vectors (Appendices, "Cryptographic test
    /// vectors"): seed `YJDBA9Xn…XA1`, server `domain`, key id `ed25519:1`.
    #[cfg(test)]
    pub(crate) fn spec_test_key() -> Self {
        use base64::{
            Engine,
            engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
        };
        // The published seed has non-zero trailing bits, which strict decoders refuse.
        let lenient = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let seed = lenient
            .decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
            .expect("the spec's seed decodes");
        // A PKCS#8 v1 document holding just the 32-byte Ed25519 seed (RFC 8410).
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        SigningKey {
            server_name: ruma::owned_server_name!("domain"),
            key_pair: Ed25519KeyPair::from_der(&der, "1".into()).expect("a valid key"),
        }
    }
}

fn split_record(record: &[u8]) -> Result<(&str, &[u8])> {
    let nul = record
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| corrupt("no separator".into()))?;
    let version = std::str::from_utf8(&record[..nul]).map_err(|e| corrupt(e.to_string()))?;
    Ok((version, &record[nul + 1..]))
}

fn random_version() -> String {
    use rand::{Rng, distributions::Alphanumeric};
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(8)
        .map(char::from)
        .collect()
}

fn corrupt(detail: String) -> StorageError {
    StorageError::Corrupt {
        table: "global",
        detail,
    }
}
