//! Durable record of the transactions already processed.
//!
//! The homeserver retries a transaction with the same txnId until it gets a 200, so the answer
//! to the first attempt may be lost after the handler ran. Remembering finished txnIds on disk
//! (durable before the 200 goes out) is what makes a retry, also one that arrives after the
//! appservice restarted, a no-op instead of a second delivery.
//!
//! The store is a `charla-storage` store of its own (write-ahead log with group commit; sled is
//! only flushed at checkpoints, so waiting for the disk never wakes sled's I/O pool). Two
//! tables: [`TxnTable::Done`] txnId → sequence number (big-endian u64) and [`TxnTable::Seq`]
//! sequence → txnId. The sequence keeps the ids in arrival order so the oldest can be dropped
//! once more than [`TxnStore::capacity`] are kept: a homeserver only ever retries its most
//! recent transaction, so a long tail buys nothing.

use std::path::Path;

use charla_storage::{Batch, StorageError, Store, TableSet, keys::decode_u64};

/// The default number of txnIds kept.
pub const DEFAULT_CAPACITY: u64 = 10_000;

/// The tables of the transaction store. Append only: a table's place is its key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnTable {
    /// txnId → its sequence number.
    Done,
    /// sequence number → txnId, oldest first.
    Seq,
}

impl TableSet for TxnTable {
    const STORE: &'static str = "as-txns";
    const ALL: &'static [Self] = &[TxnTable::Done, TxnTable::Seq];

    fn name(self) -> &'static str {
        match self {
            TxnTable::Done => "done",
            TxnTable::Seq => "seq",
        }
    }
}

/// Finished transaction ids, on disk.
#[derive(Clone)]
pub struct TxnStore {
    db: Store<TxnTable>,
    capacity: u64,
}

/// The store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("transaction store: {0}")]
pub struct TxnStoreError(String);

impl From<StorageError> for TxnStoreError {
    fn from(e: StorageError) -> Self {
        Self(e.to_string())
    }
}

impl TxnStore {
    /// What a backup of the process that runs this appservice takes this store through.
    pub fn backup_source(&self) -> charla_storage::BackupSource {
        self.db.backup_source()
    }

    /// Opens (or creates) the store in the folder `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, TxnStoreError> {
        Self::open_with_capacity(dir, DEFAULT_CAPACITY)
    }

    pub fn open_with_capacity(dir: impl AsRef<Path>, capacity: u64) -> Result<Self, TxnStoreError> {
        // A small cache: the store holds short ids and is read once per transaction. A store
        // just dropped in this process (an appservice rebuilt, a test restarting it) may hold
        // its folder a moment longer; `open` waits for that, boundedly.
        let db = Store::open(dir.as_ref(), 4)?;
        Ok(Self {
            db,
            capacity: capacity.max(1),
        })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether `txn_id` was already processed.
    pub fn is_done(&self, txn_id: &str) -> Result<bool, TxnStoreError> {
        Ok(self.db.contains(TxnTable::Done, txn_id.as_bytes())?)
    }

    /// Records `txn_id` as processed and returns once that is on disk. Callers serialize
    /// transactions (the router holds a lock), so reading the last sequence here is race-free.
    pub async fn mark_done(&self, txn_id: &str) -> Result<(), TxnStoreError> {
        let next = match self.db.last_with_prefix(TxnTable::Seq, b"")? {
            Some((seq, _)) => decode_u64(&seq) + 1,
            None => 0,
        };
        let mut batch = Batch::new();
        batch.put(TxnTable::Done, txn_id.as_bytes(), next.to_be_bytes());
        batch.put(TxnTable::Seq, next.to_be_bytes(), txn_id.as_bytes());
        if next >= self.capacity {
            let oldest = next - self.capacity;
            let dropped = self.db.range(
                TxnTable::Seq,
                &0u64.to_be_bytes(),
                &(oldest + 1).to_be_bytes(),
            );
            for entry in dropped {
                let (seq, old_id) = entry?;
                batch.delete(TxnTable::Seq, seq.to_vec());
                batch.delete(TxnTable::Done, old_id.to_vec());
            }
        }
        self.db.write_durable(batch).await?;
        Ok(())
    }

    /// How many txnIds are kept.
    pub fn len(&self) -> usize {
        self.db.scan_prefix(TxnTable::Seq, b"").count()
    }

    pub fn is_empty(&self) -> bool {
        self.db.scan_prefix(TxnTable::Seq, b"").next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_across_reopen_and_drops_the_oldest_past_capacity() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = TxnStore::open_with_capacity(dir.path(), 3).unwrap();
            assert!(store.is_empty());
            assert!(!store.is_done("1").unwrap());
            for id in ["1", "2", "3"] {
                store.mark_done(id).await.unwrap();
            }
            assert!(store.is_done("1").unwrap());
        }
        let store = TxnStore::open_with_capacity(dir.path(), 3).unwrap();
        assert!(store.is_done("1").unwrap() && store.is_done("3").unwrap());
        store.mark_done("4").await.unwrap();
        assert!(!store.is_done("1").unwrap(), "oldest dropped");
        assert!(store.is_done("2").unwrap() && store.is_done("4").unwrap());
        assert_eq!(store.len(), 3);
    }

    /// What `kill -9` leaves right after a 200: the folder as it is on disk, the store still
    /// open. Every txnId acknowledged is in it.
    #[tokio::test]
    async fn an_acknowledged_txn_id_survives_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = TxnStore::open(&live).unwrap();
        for n in 0..50 {
            store.mark_done(&format!("txn{n}")).await.unwrap();
        }
        let crash = dir.path().join("crash");
        charla_storage::copy_crash_image(&live, &crash).unwrap();
        let recovered = TxnStore::open(&crash).unwrap();
        for n in 0..50 {
            assert!(recovered.is_done(&format!("txn{n}")).unwrap(), "txn{n}");
        }
        assert!(!recovered.is_done("txn50").unwrap());
        assert_eq!(recovered.len(), 50);
        drop(store);
    }
}
