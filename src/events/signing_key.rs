//! The server's ed25519 signing key, as PDU building uses it. Where it is kept is the room
//! service's business (`rooms/signing_key.rs`): nothing in `events` touches storage.

use ruma::{OwnedServerName, signatures::Ed25519KeyPair};

/// The key pair and the server it signs for; peers look it up as `ed25519:<the pair's version>`.
pub struct SigningKey {
    pub(crate) server_name: OwnedServerName,
    pub(crate) key_pair: Ed25519KeyPair,
}

impl SigningKey {
    /// The id peers know the key by: `ed25519:<version>`.
    pub(crate) fn key_id(&self) -> String {
        format!("ed25519:{}", self.key_pair.version())
    }

    /// The public half, as signature checks take it (this server's entry of a key map).
    pub(crate) fn public_keys(&self) -> ruma::signatures::PublicKeyMap {
        let mut set = ruma::signatures::PublicKeySet::new();
        set.insert(
            self.key_id(),
            ruma::serde::Base64::new(self.key_pair.public_key().to_vec()),
        );
        ruma::signatures::PublicKeyMap::from([(self.server_name.to_string(), set)])
    }

    /// A fresh key for `server_name` (tests: a second server, a forger).
    #[cfg(test)]
    pub(crate) fn generate(server_name: OwnedServerName) -> Self {
        let der = Ed25519KeyPair::generate();
        SigningKey {
            server_name,
            key_pair: Ed25519KeyPair::from_der(&der, "2".into()).expect("a valid key"),
        }
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
