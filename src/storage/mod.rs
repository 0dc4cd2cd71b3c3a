//! The narrow key-value layer every service stores through.
//!
//! Services see named [`Table`]s of byte keys and values, atomic multi-table [`Batch`]es and a
//! durability barrier ([`Store::durable`]); nothing above this module names sled. Keys are built
//! with [`keys::Key`]: big-endian integers and `0xFF`-separated strings (UTF-8 never contains
//! `0xFF`), so byte order is the order services range-scan in.
//!
//! Durability is a group commit: [`Store::write`] applies a batch in memory (atomically, through
//! a sled transaction over the tables it touches) and returns a ticket; [`Store::durable`] waits
//! until one background flush has covered that ticket. Requests arriving while a flush runs share
//! the next one, so throughput does not pay one `fsync` per request.

pub mod keys;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::{Notify, watch};

pub use keys::Key;
pub use sled::IVec;

/// Every table of the store. Adding one is adding a variant: the name is its sled tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Counters and singletons (stream position, signing key).
    Global,
    /// user id → account record.
    Users,
    /// access token → (user, device).
    Tokens,
    /// user, device → device record.
    Devices,
    /// user, room (empty for global), type → account data content.
    AccountData,
    /// user, filter id → filter definition.
    Filters,
    /// user, device, txn id → event id, for idempotent sends.
    TxnIds,
    /// stream position → stored event.
    Events,
    /// event id → stream position.
    EventIds,
    /// room → room record.
    Rooms,
    /// room short id, stream position → (), the room's timeline in order.
    Timeline,
    /// room short id, event type, state key → stream position of the current state event.
    RoomState,
    /// room short id, event type, state key, stream position → (), every state change.
    StateHistory,
    /// user, room → membership and position, the rooms a user is in or was in.
    UserRooms,
    /// alias → room id.
    Aliases,
    /// room id → (), rooms in the public directory.
    PublicRooms,
}

impl Table {
    const ALL: [Table; 16] = [
        Table::Global,
        Table::Users,
        Table::Tokens,
        Table::Devices,
        Table::AccountData,
        Table::Filters,
        Table::TxnIds,
        Table::Events,
        Table::EventIds,
        Table::Rooms,
        Table::Timeline,
        Table::RoomState,
        Table::StateHistory,
        Table::UserRooms,
        Table::Aliases,
        Table::PublicRooms,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Global => "global",
            Table::Users => "users",
            Table::Tokens => "tokens",
            Table::Devices => "devices",
            Table::AccountData => "account_data",
            Table::Filters => "filters",
            Table::TxnIds => "txn_ids",
            Table::Events => "events",
            Table::EventIds => "event_ids",
            Table::Rooms => "rooms",
            Table::Timeline => "timeline",
            Table::RoomState => "room_state",
            Table::StateHistory => "state_history",
            Table::UserRooms => "user_rooms",
            Table::Aliases => "aliases",
            Table::PublicRooms => "public_rooms",
        }
    }

    fn index(self) -> usize {
        Table::ALL
            .iter()
            .position(|t| *t == self)
            .expect("every table is in ALL")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage: corrupt record in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A set of writes applied atomically: all of them or none.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((table, key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push((table, key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Proof that a batch was applied; pass it to [`Store::durable`] to wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a write is not durable until `Store::durable` has been awaited"]
pub struct WriteTicket(u64);

/// The store: sled trees behind [`Table`]s, and the group-commit flusher.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// Number of batches applied so far; a batch's ticket is the value after its increment.
    applied: AtomicU64,
    /// Highest ticket known to be on disk.
    durable: watch::Sender<u64>,
    /// Wakes the flusher when a writer waits.
    flush_wanted: Arc<Notify>,
}

impl Store {
    /// Opens (or creates) the store in `path`, with sled's page cache bounded to `cache_mb` MiB.
    ///
    /// Spawns the flusher, so it must be called inside a tokio runtime.
    pub fn open(path: &Path, cache_mb: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb * 1024 * 1024)
            // We flush on demand (group commit); sled's periodic flusher would only add fsyncs.
            .flush_every_ms(None)
            .open()?;
        let trees = Table::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<sled::Result<Vec<_>>>()?;
        let (durable, _) = watch::channel(0);
        let store = Store {
            inner: Arc::new(Inner {
                db,
                trees,
                applied: AtomicU64::new(0),
                durable,
                flush_wanted: Arc::new(Notify::new()),
            }),
        };
        tokio::spawn(flusher(
            Arc::downgrade(&store.inner),
            store.inner.flush_wanted.clone(),
        ));
        Ok(store)
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        &self.inner.trees[table.index()]
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<IVec>> {
        Ok(self.tree(table).get(key)?)
    }

    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        Ok(self.tree(table).contains_key(key)?)
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(IVec, IVec)>> + use<> {
        self.tree(table)
            .scan_prefix(prefix)
            .map(|r| r.map_err(StorageError::from))
    }

    /// Entries with `from <= key < to`, in key order (reverse it for newest first).
    pub fn range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(IVec, IVec)>> + use<> {
        self.tree(table)
            .range(from.to_vec()..to.to_vec())
            .map(|r| r.map_err(StorageError::from))
    }

    /// The last entry of `table` whose key starts with `prefix`.
    pub fn last_with_prefix(&self, table: Table, prefix: &[u8]) -> Result<Option<(IVec, IVec)>> {
        self.tree(table)
            .scan_prefix(prefix)
            .next_back()
            .transpose()
            .map_err(Into::into)
    }

    /// Applies `batch` atomically. Readers see it at once; it is durable after
    /// [`Store::durable`] returns for the ticket.
    pub fn write(&self, batch: Batch) -> Result<WriteTicket> {
        let mut touched: Vec<usize> = batch.ops.iter().map(|(t, _, _)| t.index()).collect();
        touched.sort_unstable();
        touched.dedup();
        if touched.len() == 1 {
            let mut sled_batch = sled::Batch::default();
            for (_, key, value) in batch.ops {
                match value {
                    Some(v) => sled_batch.insert(key, v),
                    None => sled_batch.remove(key),
                }
            }
            self.inner.trees[touched[0]].apply_batch(sled_batch)?;
        } else if !touched.is_empty() {
            let trees: Vec<sled::Tree> = touched
                .iter()
                .map(|i| self.inner.trees[*i].clone())
                .collect();
            use sled::Transactional;
            trees
                .as_slice()
                .transaction(|tx| {
                    for (table, key, value) in &batch.ops {
                        let slot = touched.binary_search(&table.index()).expect("touched");
                        match value {
                            Some(v) => tx[slot].insert(key.as_slice(), v.as_slice())?,
                            None => tx[slot].remove(key.as_slice())?,
                        };
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => StorageError::Sled(e),
                    TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
                })?;
        }
        Ok(self.next_ticket())
    }

    /// Waits until the batch behind `ticket` (and every batch before it) is on disk.
    pub async fn durable(&self, ticket: WriteTicket) -> Result<()> {
        let mut rx = self.inner.durable.subscribe();
        if *rx.borrow() >= ticket.0 {
            return Ok(());
        }
        self.inner.flush_wanted.notify_one();
        rx.wait_for(|d| *d >= ticket.0).await.map_err(|_| {
            StorageError::Sled(sled::Error::ReportableBug("flusher stopped".into()))
        })?;
        Ok(())
    }

    /// Writes and waits for the disk: the common case for anything a client is told succeeded.
    pub async fn write_durable(&self, batch: Batch) -> Result<()> {
        let ticket = self.write(batch)?;
        self.durable(ticket).await
    }

    /// Inserts `value` only if `key` is absent; the ticket is `None` when the key existed.
    pub fn insert_if_absent(
        &self,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<WriteTicket>> {
        let swapped = self
            .tree(table)
            .compare_and_swap(key, None::<&[u8]>, Some(value))?;
        Ok(swapped.is_ok().then(|| self.next_ticket()))
    }

    fn next_ticket(&self) -> WriteTicket {
        WriteTicket(self.inner.applied.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Atomically adds `by` to a big-endian counter and returns the new value.
    pub fn increment(&self, table: Table, key: &[u8], by: u64) -> Result<u64> {
        let new = self.tree(table).update_and_fetch(key, |old| {
            let n = old.map(keys::decode_u64).unwrap_or(0);
            Some((n + by).to_be_bytes().to_vec())
        })?;
        Ok(new.map(|v| keys::decode_u64(&v)).unwrap_or(0))
    }

    /// Bytes on disk, for operators and benchmarks.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.db.size_on_disk()?)
    }
}

/// Flushes whenever a writer waits, covering every batch applied before the flush began.
///
/// Holds only a weak reference between flushes, so dropping the last [`Store`] closes sled.
async fn flusher(inner: std::sync::Weak<Inner>, wanted: Arc<Notify>) {
    loop {
        wanted.notified().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let target = strong.applied.load(Ordering::SeqCst);
        let db = strong.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => {
                strong.durable.send_if_modified(|d| {
                    let advanced = target > *d;
                    *d = (*d).max(target);
                    advanced
                });
            }
            Ok(Err(e)) => tracing::error!(error = %e, "flush failed; writers keep waiting"),
            Err(e) => tracing::error!(error = %e, "flush task panicked"),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wake the flusher so it sees the store is gone and exits.
        self.flush_wanted.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batch_spans_tables_and_becomes_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let mut batch = Batch::new();
        batch.put(Table::Users, b"a".to_vec(), b"1".to_vec());
        batch.put(Table::Tokens, b"t".to_vec(), b"2".to_vec());
        store.write_durable(batch).await.unwrap();
        assert_eq!(
            store.get(Table::Users, b"a").unwrap().unwrap().as_ref(),
            b"1"
        );
        assert_eq!(
            store.get(Table::Tokens, b"t").unwrap().unwrap().as_ref(),
            b"2"
        );
        drop(store);
        // Reopen: what `durable` acknowledged is there.
        let store = Store::open(dir.path(), 8).unwrap();
        assert_eq!(
            store.get(Table::Tokens, b"t").unwrap().unwrap().as_ref(),
            b"2"
        );
    }

    #[tokio::test]
    async fn counters_increment() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        assert_eq!(store.increment(Table::Global, b"n", 1).unwrap(), 1);
        assert_eq!(store.increment(Table::Global, b"n", 5).unwrap(), 6);
    }

    #[tokio::test]
    async fn prefix_scans_are_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let mut batch = Batch::new();
        for n in [3u64, 1, 2] {
            batch.put(Table::Timeline, Key::new().u64(7).u64(n).into_vec(), vec![]);
        }
        batch.put(Table::Timeline, Key::new().u64(8).u64(0).into_vec(), vec![]);
        store.write_durable(batch).await.unwrap();
        let got: Vec<u64> = store
            .scan_prefix(Table::Timeline, &Key::new().u64(7).into_vec())
            .map(|r| keys::decode_u64(&r.unwrap().0[8..]))
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
    }
}
