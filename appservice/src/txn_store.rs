//! Durable record of the transactions already processed.
//!
//! The homeserver retries a transaction with the same txnId until it gets a 200, so the answer
//! to the first attempt may be lost after the handler ran. Remembering finished txnIds on disk
//! (flushed before the 200 goes out) is what makes a retry, also one that arrives after the
//! appservice restarted, a no-op instead of a second delivery.
//!
//! Layout in one sled tree: `d<txnId>` → sequence number (big-endian u64) and
//! `s<sequence>` → txnId. The sequence keeps the ids in arrival order so the oldest can be
//! dropped once more than [`TxnStore::capacity`] are kept: a homeserver only ever retries its
//! most recent transaction, so a long tail buys nothing.

use std::path::Path;

use crate::group_flush::GroupFlush;

/// The default number of txnIds kept.
pub const DEFAULT_CAPACITY: u64 = 10_000;

const DONE: u8 = b'd';
const SEQ: u8 = b's';

/// Finished transaction ids, on disk.
#[derive(Clone)]
pub struct TxnStore {
    db: sled::Db,
    /// Never `flush_async`: see [`GroupFlush`].
    flusher: GroupFlush,
    capacity: u64,
}

/// The store could not be opened, read or flushed.
#[derive(Debug, thiserror::Error)]
#[error("transaction store: {0}")]
pub struct TxnStoreError(String);

impl From<sled::Error> for TxnStoreError {
    fn from(e: sled::Error) -> Self {
        Self(e.to_string())
    }
}

fn key(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

impl TxnStore {
    /// Opens (or creates) the store in the folder `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, TxnStoreError> {
        Self::open_with_capacity(dir, DEFAULT_CAPACITY)
    }

    pub fn open_with_capacity(dir: impl AsRef<Path>, capacity: u64) -> Result<Self, TxnStoreError> {
        // A small cache: the store holds short ids and is read once per transaction.
        let config = sled::Config::new()
            .path(dir.as_ref())
            .cache_capacity(4 << 20);
        // A store just dropped in this process (an appservice rebuilt, a test restarting it)
        // keeps its file lock until sled's background flusher lets go, a moment later; wait
        // for that, boundedly, instead of failing.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock && attempts < 300 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        let flusher = GroupFlush::new(db.clone(), "appservice-txns")
            .map_err(|e| TxnStoreError(format!("cannot start the flusher: {e}")))?;
        Ok(Self {
            db,
            flusher,
            capacity: capacity.max(1),
        })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether `txn_id` was already processed.
    pub fn is_done(&self, txn_id: &str) -> Result<bool, TxnStoreError> {
        Ok(self.db.contains_key(key(DONE, txn_id.as_bytes()))?)
    }

    /// Records `txn_id` as processed and returns once that is on disk. Callers serialize
    /// transactions (the router holds a lock), so reading the last sequence here is race-free.
    pub async fn mark_done(&self, txn_id: &str) -> Result<(), TxnStoreError> {
        let next = match self.db.scan_prefix([SEQ]).next_back() {
            Some(entry) => seq_of(&entry?.0) + 1,
            None => 0,
        };
        let mut batch = sled::Batch::default();
        batch.insert(key(DONE, txn_id.as_bytes()), &next.to_be_bytes());
        batch.insert(key(SEQ, &next.to_be_bytes()), txn_id.as_bytes());
        if next >= self.capacity {
            let oldest = next - self.capacity;
            for entry in self
                .db
                .range(key(SEQ, &0u64.to_be_bytes())..=key(SEQ, &oldest.to_be_bytes()))
            {
                let (seq_key, old_id) = entry?;
                batch.remove(seq_key);
                batch.remove(key(DONE, &old_id));
            }
        }
        self.db.apply_batch(batch)?;
        self.flusher.flush().await?;
        Ok(())
    }

    /// How many txnIds are kept.
    pub fn len(&self) -> usize {
        self.db.scan_prefix([SEQ]).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn seq_of(seq_key: &[u8]) -> u64 {
    let mut be = [0u8; 8];
    be.copy_from_slice(&seq_key[1..9]);
    u64::from_be_bytes(be)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_across_reopen_and_drops_the_oldest_past_capacity() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = TxnStore::open_with_capacity(dir.path(), 3).unwrap();
            assert!(!store.is_done("1").unwrap());
            for id in ["1", "2", "3"] {
                store.mark_done(id).await.unwrap();
            }
            assert!(store.is_done("1").unwrap());
        }
        // The flusher thread may drop the last database handle a moment after the store, and
        // sled's file lock goes with it.
        let store = (0..300)
            .find_map(|_| {
                let opened = TxnStore::open_with_capacity(dir.path(), 3).ok();
                if opened.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                opened
            })
            .expect("the store stayed locked after it was dropped");
        assert!(store.is_done("1").unwrap() && store.is_done("3").unwrap());
        store.mark_done("4").await.unwrap();
        assert!(!store.is_done("1").unwrap(), "oldest dropped");
        assert!(store.is_done("2").unwrap() && store.is_done("4").unwrap());
        assert_eq!(store.len(), 3);
    }
}
