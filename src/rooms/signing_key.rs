//! The server's signing key, kept: created on first start, in the store forever after.
//!
//! Every PDU this server creates carries a signature with it, so the key must survive restarts:
//! a new key would make the server's own history unverifiable to future federation peers.

use ruma::{OwnedServerName, ServerSigningKeyId, signatures::Ed25519KeyPair};

use crate::{
    events::SigningKey,
    storage::{Batch, Result, StorageError, Store, Table},
};

const KEY_RECORD: &[u8] = b"signing_key";

/// Loads the server's key from the store, generating and storing one on first start.
pub(crate) async fn load_signing_key(
    store: &Store,
    server_name: OwnedServerName,
) -> Result<SigningKey> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_key_is_made_once_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let server = ruma::owned_server_name!("example.org");
        let first = {
            let store = Store::open(dir.path(), 8).unwrap();
            load_signing_key(&store, server.clone()).await.unwrap()
        };
        let store = Store::open(dir.path(), 8).unwrap();
        let again = load_signing_key(&store, server.clone()).await.unwrap();
        assert_eq!(again.key_pair.public_key(), first.key_pair.public_key());
        assert_eq!(again.key_pair.version(), first.key_pair.version());
        assert_eq!(again.server_name, server);
    }

    #[tokio::test]
    async fn a_damaged_record_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let mut batch = Batch::new();
        batch.put(Table::Global, KEY_RECORD, b"no separator here".to_vec());
        store.write_durable(batch).await.unwrap();
        let err = load_signing_key(&store, ruma::owned_server_name!("example.org"))
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("no separator"), "{err}");
    }
}
