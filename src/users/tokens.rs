//! Access tokens at rest: only their SHA-256 is stored.
//!
//! A copy of the data folder (a backup, a disk sent for repair) must not log anyone in. Tokens
//! are 32 random alphanumerics (~190 bits), so an unsalted SHA-256 is enough: nobody can search
//! that space, and the lookup on every request stays one hash and one read. The token itself
//! lives only in the client and, briefly, in the answer that hands it out.
//!
//! Stores written before hashing keep tokens in plaintext (as the `tokens` key and in each
//! device record); [`UserService::hash_stored_tokens`] rewrites them once at start, so every
//! session survives the upgrade.

use sha2::{Digest, Sha256};

use super::{Device, UserService};
use crate::{
    error::{Error, Result},
    storage::{Batch, Table},
};

/// Marks keys of the `tokens` table that are hashes (a plaintext token never starts with `#`).
const HASHED: u8 = b'#';
/// Set in the global table once every stored token is hashed.
const MIGRATED_KEY: &[u8] = b"tokens_hashed";
/// Devices rewritten per batch while migrating.
const MIGRATION_BATCH: usize = 1_000;

/// The SHA-256 of an access token: what is stored and what the token cache is keyed by.
pub(crate) type TokenHash = [u8; 32];

pub(crate) fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The `tokens` table's key of a token with this hash.
pub(crate) fn key(hash: &TokenHash) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(HASHED);
    key.extend_from_slice(hash);
    key
}

/// A device record's token hash, as stored (hex).
pub(crate) fn to_hex(hash: &TokenHash) -> String {
    hex::encode(hash)
}

pub(crate) fn from_hex(hex_hash: &str) -> Option<TokenHash> {
    hex::decode(hex_hash).ok()?.try_into().ok()
}

impl UserService {
    /// Replaces every plaintext token a store from before token hashing holds by its hash;
    /// then never runs again. Run at start, before any request.
    pub(crate) async fn hash_stored_tokens(&self) -> Result<()> {
        if self.store.get(Table::Global, MIGRATED_KEY)?.is_some() {
            return Ok(());
        }
        let mut migrated = 0usize;
        let mut batch = Batch::new();
        let mut in_batch = 0;
        for entry in self.store.scan_prefix(Table::Devices, b"") {
            let (key, value) = entry?;
            let mut device: Device =
                serde_json::from_slice(&value).map_err(|e| Error::internal(e.to_string()))?;
            let Some(token) = device.legacy_token.take() else {
                continue;
            };
            let hashed = hash(&token);
            device.token_hash = to_hex(&hashed);
            if let Some(record) = self.store.get(Table::Tokens, token.as_bytes())? {
                batch.put(Table::Tokens, self::key(&hashed), record.to_vec());
            }
            batch.delete(Table::Tokens, token.into_bytes());
            batch.put(
                Table::Devices,
                key.to_vec(),
                serde_json::to_vec(&device).map_err(|e| Error::internal(e.to_string()))?,
            );
            migrated += 1;
            in_batch += 1;
            if in_batch == MIGRATION_BATCH {
                self.store.write_durable(std::mem::take(&mut batch)).await?;
                in_batch = 0;
            }
        }
        // Plaintext keys no device points to could not log anyone in; they go too.
        for entry in self.store.scan_prefix(Table::Tokens, b"") {
            let (key, _) = entry?;
            if key.first() != Some(&HASHED) {
                batch.delete(Table::Tokens, key.to_vec());
            }
        }
        batch.put(Table::Global, MIGRATED_KEY, vec![1]);
        self.store.write_durable(batch).await?;
        if migrated > 0 {
            tracing::info!(devices = migrated, "access tokens are now stored hashed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{owned_server_name, user_id};

    use super::*;
    use crate::{storage::Store, stream::Notifier, stream::Stream};

    /// A store from before token hashing: after the migration the same token still logs in,
    /// and neither the token nor its old key is stored anywhere.
    #[tokio::test]
    async fn plaintext_tokens_of_an_old_store_are_hashed_and_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let users = UserService::new(
            store.clone(),
            Arc::new(Stream::open(store.clone()).unwrap()),
            Arc::new(Notifier::default()),
            owned_server_name!("localhost"),
            Box::new(crate::e2ee::DeviceKeys),
        );
        let token = "ABCdef0123456789ABCdef0123456789";
        let mut batch = Batch::new();
        batch.put(
            Table::Tokens,
            token.as_bytes().to_vec(),
            br#"{"user_id":"@ana:localhost","device_id":"DEV"}"#.to_vec(),
        );
        batch.put(
            Table::Tokens,
            b"orphanTOKENorphanTOKENorphan1234".to_vec(),
            b"{}".to_vec(),
        );
        batch.put(
            Table::Devices,
            crate::storage::Key::new().str("@ana:localhost").str("DEV"),
            format!(r#"{{"device_id":"DEV","access_token":"{token}"}}"#).into_bytes(),
        );
        store.write_durable(batch).await.unwrap();

        users.hash_stored_tokens().await.unwrap();
        let who = users
            .authenticate(token)
            .unwrap()
            .expect("the session survives");
        assert_eq!(who.user_id, user_id!("@ana:localhost"));
        assert_eq!(who.device_id.as_str(), "DEV");
        assert!(
            store
                .get(Table::Tokens, token.as_bytes())
                .unwrap()
                .is_none()
        );
        let keys: Vec<Vec<u8>> = store
            .scan_prefix(Table::Tokens, b"")
            .map(|e| e.unwrap().0.to_vec())
            .collect();
        assert_eq!(keys, vec![key(&hash(token))], "only the hashed key is left");
        let device = users
            .device(user_id!("@ana:localhost"), "DEV".into())
            .unwrap()
            .unwrap();
        assert_eq!(device.token_hash, to_hex(&hash(token)));
        let stored = serde_json::to_string(&device).unwrap();
        assert!(!stored.contains(token), "{stored}");
        // Runs once: a later start does not touch the tokens again.
        users.hash_stored_tokens().await.unwrap();
        assert!(users.authenticate(token).unwrap().is_some());
    }
}
