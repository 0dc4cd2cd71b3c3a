//! The narrow key-value layer every service stores through.
//!
//! Services see named [`Table`]s of byte keys and values, atomic multi-table [`Batch`]es and a
//! durability barrier ([`Store::durable`]); nothing above this module names sled. Keys are built
//! with [`keys::Key`]: big-endian integers and `0xFF`-separated strings (UTF-8 never contains
//! `0xFF`), so byte order is the order services range-scan in.
//!
//! All tables live in one sled tree, each under a one-byte prefix: a batch spanning tables is
//! then one `apply_batch`, atomic and several times cheaper than sled's multi-tree transactions,
//! which dominated the send path when each table was a tree of its own (measured: see
//! `docs/performance.md`). Scans never cross a table because every key carries its prefix.
//!
//! Durability is a group commit: [`Store::write`] applies a batch in memory (atomically) and
//! returns a ticket; [`Store::durable`] waits
//! until one background flush has covered that ticket. Requests arriving while a flush runs share
//! the next one, so throughput does not pay one `fsync` per request.

pub mod keys;

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::sync::oneshot;

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
    /// user, device, room, event type, txn id → event id, for idempotent sends.
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
    /// room short id, receipt type, user, thread → the user's current receipt.
    Receipts,
    /// room short id, stream position → a receipt change.
    ReceiptLog,
    /// user, app id, pushkey → pusher.
    Pushers,
    /// app id, pushkey, user → (), to find a pushkey's other users.
    PusherKeys,
    /// appservice id → its pusher's cursor and pending transaction.
    AppserviceState,
    /// parent position, rel_type, child position → child's event type, sender, annotation key.
    Relations,
    /// room short id, position of the thread's latest reply, root position → ().
    ThreadRoots,
    /// user, device → the device's uploaded identity keys (JSON).
    DeviceKeys,
    /// user, device, algorithm, key id → an unclaimed one-time key (JSON).
    OneTimeKeys,
    /// user, device, algorithm → the fallback key with its id and whether it was used.
    FallbackKeys,
    /// user, usage (`master`, `self_signing`, `user_signing`) → cross-signing key (JSON).
    CrossSigningKeys,
    /// target user, target key id, signer → signatures one user made on another's key.
    KeySignatures,
    /// stream position, user → (), users whose device list or cross-signing keys changed.
    DeviceListChanges,
    /// user, device, stream position → a to-device message waiting for the device.
    ToDeviceInbox,
    /// sender, sender device, txn id → (), `sendToDevice` transactions already handled.
    ToDeviceTxns,
    /// user, version → key backup version record.
    BackupVersions,
    /// user, version, room, session → backed-up session key (JSON).
    BackupKeys,
    /// media id → media record (uploader, content hash, type, name, size; or pending).
    Media,
    /// media id, width, height, method, animated → stored thumbnail.
    MediaThumbnails,
    /// uploader, media id → expiry, the async uploads created and not yet uploaded.
    MediaPending,
    /// room id → the support desk's record of a conversation (content, activity, counts).
    SupportConversations,
    /// facet, value, sort kind, sort time, room id → (): the conversation filters.
    SupportIndex,
    /// ticket number → ticket record.
    SupportTickets,
    /// facet, value, ticket number → (): ticket filters and idempotency of `!ticket`.
    SupportTicketIndex,
    /// time, sequence → an administrative action.
    SupportAudit,
    /// name → the support bot's durable state (its stream cursor, per-room markers).
    SupportState,
}

impl Table {
    const ALL: [Table; 42] = [
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
        Table::Receipts,
        Table::ReceiptLog,
        Table::Pushers,
        Table::PusherKeys,
        Table::AppserviceState,
        Table::Relations,
        Table::ThreadRoots,
        Table::DeviceKeys,
        Table::OneTimeKeys,
        Table::FallbackKeys,
        Table::CrossSigningKeys,
        Table::KeySignatures,
        Table::DeviceListChanges,
        Table::ToDeviceInbox,
        Table::ToDeviceTxns,
        Table::BackupVersions,
        Table::BackupKeys,
        Table::Media,
        Table::MediaThumbnails,
        Table::MediaPending,
        Table::SupportConversations,
        Table::SupportIndex,
        Table::SupportTickets,
        Table::SupportTicketIndex,
        Table::SupportAudit,
        Table::SupportState,
    ];

    /// The table's name, for error messages and operators.
    pub fn name(self) -> &'static str {
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
            Table::Receipts => "receipts",
            Table::ReceiptLog => "receipt_log",
            Table::Pushers => "pushers",
            Table::PusherKeys => "pusher_keys",
            Table::AppserviceState => "appservice_state",
            Table::Relations => "relations",
            Table::ThreadRoots => "thread_roots",
            Table::DeviceKeys => "device_keys",
            Table::OneTimeKeys => "one_time_keys",
            Table::FallbackKeys => "fallback_keys",
            Table::CrossSigningKeys => "cross_signing_keys",
            Table::KeySignatures => "key_signatures",
            Table::DeviceListChanges => "device_list_changes",
            Table::ToDeviceInbox => "to_device_inbox",
            Table::ToDeviceTxns => "to_device_txns",
            Table::BackupVersions => "backup_versions",
            Table::BackupKeys => "backup_keys",
            Table::Media => "media",
            Table::MediaThumbnails => "media_thumbnails",
            Table::MediaPending => "media_pending",
            Table::SupportConversations => "support_conversations",
            Table::SupportIndex => "support_index",
            Table::SupportTickets => "support_tickets",
            Table::SupportTicketIndex => "support_ticket_index",
            Table::SupportAudit => "support_audit",
            Table::SupportState => "support_state",
        }
    }

    /// The key prefix of the table: its place in [`Table::ALL`].
    fn prefix(self) -> u8 {
        Table::ALL
            .iter()
            .position(|t| *t == self)
            .expect("every table is in ALL") as u8
    }

    fn key(self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(self.prefix());
        k.extend_from_slice(key);
        k
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

    /// Whether the batch writes to `table`.
    pub fn touches(&self, table: Table) -> bool {
        self.ops.iter().any(|(t, _, _)| *t == table)
    }
}

/// Proof that a batch was applied; pass it to [`Store::durable`] to wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a write is not durable until `Store::durable` has been awaited"]
pub struct WriteTicket(u64);

/// The store: [`Table`]s in one sled tree, and the group-commit flusher.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// Number of batches applied so far; a batch's ticket is the value after its increment.
    applied: AtomicU64,
    /// Highest ticket known to be on disk, and the writers waiting for a higher one. Each waiter
    /// is woken only by the flush that covers its ticket: waking every waiter on every flush
    /// cost dozens of futex calls per write under load.
    durable: Mutex<Durable>,
    /// Set by a writer that waits; the flusher thread clears it when it starts a flush.
    flush_wanted: AtomicBool,
    /// The flusher thread, unparked when a writer waits.
    flusher: std::thread::Thread,
}

impl Store {
    /// Opens (or creates) the store in `path`, with sled's page cache bounded to `cache_mb` MiB.
    ///
    /// Starts the flusher thread.
    pub fn open(path: &Path, cache_mb: u64) -> Result<Self> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb * 1024 * 1024)
            // We flush on demand (group commit); sled's periodic flusher would only add fsyncs.
            .flush_every_ms(None);
        let db = open_when_free(&config)?;
        // The flusher is a plain thread: a flush is a blocking fsync, and a dedicated thread
        // avoids handing every flush to a pool.
        let (tx, rx) = std::sync::mpsc::channel::<std::sync::Weak<Inner>>();
        let flusher = std::thread::Builder::new()
            .name("charla-flusher".into())
            .spawn(move || {
                if let Ok(inner) = rx.recv() {
                    flusher(inner);
                }
            })
            .map_err(|e| StorageError::Sled(sled::Error::Io(e)))?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                applied: AtomicU64::new(0),
                durable: Mutex::new(Durable::default()),
                flush_wanted: AtomicBool::new(false),
                flusher: flusher.thread().clone(),
            }),
        };
        let _ = tx.send(Arc::downgrade(&store.inner));
        Ok(store)
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<IVec>> {
        Ok(self.inner.db.get(table.key(key))?)
    }

    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        Ok(self.inner.db.contains_key(table.key(key))?)
    }

    /// All entries whose key starts with `prefix`, in key order (keys without the table byte).
    pub fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(IVec, IVec)>> + use<> {
        self.inner.db.scan_prefix(table.key(prefix)).map(strip)
    }

    /// Entries with `from <= key < to`, in key order (reverse it for newest first).
    pub fn range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(IVec, IVec)>> + use<> {
        self.inner
            .db
            .range(table.key(from)..table.key(to))
            .map(strip)
    }

    /// The last entry of `table` whose key starts with `prefix`.
    pub fn last_with_prefix(&self, table: Table, prefix: &[u8]) -> Result<Option<(IVec, IVec)>> {
        self.scan_prefix(table, prefix).next_back().transpose()
    }

    /// Applies `batch` atomically. Readers see it at once; it is durable after
    /// [`Store::durable`] returns for the ticket.
    pub fn write(&self, batch: Batch) -> Result<WriteTicket> {
        let mut sled_batch = sled::Batch::default();
        for (table, key, value) in batch.ops {
            match value {
                Some(v) => sled_batch.insert(table.key(&key), v),
                None => sled_batch.remove(table.key(&key)),
            }
        }
        self.inner.db.apply_batch(sled_batch)?;
        Ok(self.next_ticket())
    }

    /// Waits until the batch behind `ticket` (and every batch before it) is on disk.
    pub async fn durable(&self, ticket: WriteTicket) -> Result<()> {
        let rx = {
            let mut d = self.inner.durable.lock().expect("durable lock");
            if d.flushed >= ticket.0 {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            d.waiting.entry(ticket.0).or_default().push(tx);
            rx
        };
        self.inner.flush_wanted.store(true, Ordering::SeqCst);
        self.inner.flusher.unpark();
        rx.await
            .map_err(|_| StorageError::Sled(sled::Error::ReportableBug("flusher stopped".into())))
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
            .inner
            .db
            .compare_and_swap(table.key(key), None::<&[u8]>, Some(value))?;
        Ok(swapped.is_ok().then(|| self.next_ticket()))
    }

    fn next_ticket(&self) -> WriteTicket {
        WriteTicket(self.inner.applied.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Atomically adds `by` to a big-endian counter and returns the new value.
    pub fn increment(&self, table: Table, key: &[u8], by: u64) -> Result<u64> {
        let new = self.inner.db.update_and_fetch(table.key(key), |old| {
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

/// Opens sled, waiting briefly if a store just closed in this process still holds the folder's
/// lock (its last reference may be finishing a flush on another thread).
fn open_when_free(config: &sled::Config) -> Result<sled::Db> {
    let mut attempts = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && attempts < 50 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.map_err(Into::into),
        }
    }
}

/// The durability watermark and who waits on it.
#[derive(Default)]
struct Durable {
    flushed: u64,
    waiting: std::collections::BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

/// Drops the table byte from a scanned key.
fn strip(entry: sled::Result<(IVec, IVec)>) -> Result<(IVec, IVec)> {
    let (k, v) = entry?;
    Ok((k.subslice(1, k.len() - 1), v))
}

/// Flushes whenever a writer waits, covering every batch applied before the flush began.
///
/// Holds only a weak reference between flushes, so dropping the last [`Store`] closes sled.
fn flusher(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if !strong.flush_wanted.swap(false, Ordering::SeqCst) {
            drop(strong);
            // A writer sets the flag before unparking, so a wake-up is never lost; the timeout
            // only bounds how long a dropped store keeps this thread around.
            std::thread::park_timeout(std::time::Duration::from_millis(200));
            continue;
        }
        let target = strong.applied.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        match strong.db.flush() {
            Ok(bytes) => {
                tracing::trace!(
                    target,
                    bytes,
                    micros = started.elapsed().as_micros() as u64,
                    "flushed"
                );
                let covered = {
                    let mut d = strong.durable.lock().expect("durable lock");
                    d.flushed = d.flushed.max(target);
                    let later = d.waiting.split_off(&(target + 1));
                    std::mem::replace(&mut d.waiting, later)
                };
                for tx in covered.into_values().flatten() {
                    let _ = tx.send(());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "flush failed; writers keep waiting");
                strong.flush_wanted.store(true, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wake the flusher so it sees the store is gone and exits.
        self.flusher.unpark();
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
