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
//! Durability is a group commit: [`Store::write`] applies a batch in memory (atomically), encodes
//! it into Charla's write-ahead log ([`wal`]) and returns a ticket; [`Store::durable`] waits
//! until one `fdatasync` of the log has covered that ticket. Requests arriving while a sync runs
//! share the next one, so throughput does not pay one `fsync` per request. The batches a sync
//! covered then reach sled as one batch; until then readers find them in the [`overlay`]. sled
//! itself is only flushed at log checkpoints.

mod flusher;
pub mod keys;
mod overlay;
mod wal;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
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
    /// cursor, or pusher (user, app id, pushkey) and sequence → the push gateway delivery's
    /// stream cursor and each pusher's queued notifications.
    PushGateway,
}

impl Table {
    const ALL: [Table; 43] = [
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
        Table::PushGateway,
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
            Table::PushGateway => "push_gateway",
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
    #[error("storage: write-ahead log: {0}")]
    Log(#[from] std::io::Error),
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

/// The store: [`Table`]s in one sled tree, its write-ahead log and the group-commit flusher.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// Log records not yet handed to the flusher. Every write to sled and its record happen
    /// under this one lock, so the log's order is the order sled applied them in.
    log: Mutex<PendingLog>,
    /// Highest ticket known to be on disk, and the writers waiting for a higher one. Each waiter
    /// is woken only by the flush that covers its ticket: waking every waiter on every flush
    /// cost dozens of futex calls per write under load.
    durable: Mutex<Durable>,
    /// Applied writes sled does not have yet.
    overlay: overlay::Overlay,
    /// Set by a writer that waits; the flusher thread clears it when it starts a flush.
    flush_wanted: AtomicBool,
    /// The flusher thread, unparked when a writer waits.
    flusher: std::thread::Thread,
    /// The open log segment. The flusher is its only user while the store is open; the last
    /// [`Store`]'s drop appends what is still pending.
    wal: Mutex<wal::Wal>,
    wal_dir: PathBuf,
}

#[derive(Default)]
struct PendingLog {
    /// Encoded for the log file.
    records: Vec<u8>,
    /// The same writes, full sled keys, for sled once the records are on disk.
    ops: Vec<(Vec<u8>, Option<IVec>)>,
    /// Number of batches applied so far; a batch's ticket is the value after its increment.
    applied: u64,
}

impl Store {
    /// Opens (or creates) the store in `path`, with sled's page cache bounded to `cache_mb` MiB.
    ///
    /// Replays the write-ahead log over what sled recovered, then starts the flusher thread.
    pub fn open(path: &Path, cache_mb: u64) -> Result<Self> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb * 1024 * 1024)
            // Durability comes from our log; sled is flushed at checkpoints only.
            .flush_every_ms(None);
        let db = open_when_free(&config)?;
        let wal_dir = path.join("wal");
        // Records go to sled in large batches: sled writes its log once per `apply_batch`, and a
        // full segment holds tens of thousands of records. Within a batch a later write to a
        // key replaces an earlier one, so the log's order is kept; a crash during replay only
        // means replaying again.
        let mut batch = sled::Batch::default();
        let mut batched = 0;
        let replayed = wal::replay(&wal_dir, |ops| {
            for (key, value) in ops {
                match value {
                    Some(v) => batch.insert(key, v),
                    None => batch.remove(key),
                }
                batched += 1;
            }
            if batched >= 65_536 {
                batched = 0;
                db.apply_batch(std::mem::take(&mut batch))
                    .map_err(std::io::Error::other)?;
            }
            Ok(())
        })?;
        db.apply_batch(batch)?;
        if replayed.records > 0 || replayed.torn_bytes > 0 {
            tracing::info!(
                records = replayed.records,
                torn_bytes = replayed.torn_bytes,
                "replayed the write-ahead log"
            );
        }
        let wal = wal::Wal::create(&wal_dir, replayed.last_segment)?;
        if let Some(last) = replayed.last_segment {
            db.flush()?;
            wal.remove_through(last)?;
        }
        // The flusher is a plain thread: a sync is a blocking `fdatasync`, and a dedicated
        // thread avoids handing every one to a pool.
        let (tx, rx) = std::sync::mpsc::channel::<std::sync::Weak<Inner>>();
        let flusher = std::thread::Builder::new()
            .name("charla-flusher".into())
            .spawn(move || {
                if let Ok(inner) = rx.recv() {
                    flusher::flusher(inner);
                }
            })?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                log: Mutex::new(PendingLog::default()),
                durable: Mutex::new(Durable::default()),
                overlay: overlay::Overlay::default(),
                flush_wanted: AtomicBool::new(false),
                flusher: flusher.thread().clone(),
                wal: Mutex::new(wal),
                wal_dir,
            }),
        };
        let _ = tx.send(Arc::downgrade(&store.inner));
        Ok(store)
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<IVec>> {
        self.get_full(&table.key(key))
    }

    fn get_full(&self, key: &[u8]) -> Result<Option<IVec>> {
        match self.inner.overlay.get(key) {
            overlay::Lookup::Pending(value) => Ok(value),
            overlay::Lookup::Absent => Ok(self.inner.db.get(key)?),
        }
    }

    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        Ok(self.get(table, key)?.is_some())
    }

    /// All entries whose key starts with `prefix`, in key order (keys without the table byte).
    pub fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(IVec, IVec)>> + use<> {
        let prefix = table.key(prefix);
        let pending = self.inner.overlay.with_prefix(&prefix);
        overlay::Merged::new(self.inner.db.scan_prefix(prefix), pending).map(strip)
    }

    /// Entries with `from <= key < to`, in key order (reverse it for newest first).
    pub fn range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(IVec, IVec)>> + use<> {
        let (from, to) = (table.key(from), table.key(to));
        let pending = self.inner.overlay.range(&from, &to);
        overlay::Merged::new(self.inner.db.range(from..to), pending).map(strip)
    }

    /// The last entry of `table` whose key starts with `prefix`.
    pub fn last_with_prefix(&self, table: Table, prefix: &[u8]) -> Result<Option<(IVec, IVec)>> {
        self.scan_prefix(table, prefix).next_back().transpose()
    }

    /// Applies `batch`. Readers see it at once; it is durable after [`Store::durable`] returns
    /// for the ticket, and after a crash it is there whole or not at all.
    pub fn write(&self, batch: Batch) -> Result<WriteTicket> {
        let ops = batch
            .ops
            .into_iter()
            .map(|(table, key, value)| (table.key(&key), value.map(IVec::from)))
            .collect();
        Ok(self.apply(ops))
    }

    /// Queues `ops` for the log and shows them to readers, under the log lock so that the log's
    /// order is the order readers saw the writes in.
    fn apply(&self, ops: Vec<(Vec<u8>, Option<IVec>)>) -> WriteTicket {
        let mut record = Vec::new();
        wal::encode(
            &mut record,
            ops.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        );
        let mut log = self.inner.log.lock().expect("log lock");
        self.apply_locked(&mut log, &record, ops)
    }

    fn apply_locked(
        &self,
        log: &mut PendingLog,
        record: &[u8],
        ops: Vec<(Vec<u8>, Option<IVec>)>,
    ) -> WriteTicket {
        log.records.extend_from_slice(record);
        log.applied += 1;
        self.inner.overlay.insert(
            log.applied,
            ops.iter().map(|(k, v)| (k.as_slice(), v.as_ref())),
        );
        log.ops.extend(ops);
        if log.records.len() >= WAKE_FLUSHER_AT {
            // Nobody may be waiting (writes that need no durability yet): keep the overlay,
            // which readers search, small anyway.
            self.inner.flusher.unpark();
        }
        WriteTicket(log.applied)
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
            .map_err(|_| StorageError::Log(std::io::Error::other("the flusher stopped")))
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
        let key = table.key(key);
        let mut record = Vec::new();
        wal::encode(&mut record, [(key.as_slice(), Some(value))]);
        // Every write takes the log lock, so nothing changes the key between look and write.
        let mut log = self.inner.log.lock().expect("log lock");
        if self.get_full(&key)?.is_some() {
            return Ok(None);
        }
        let ops = vec![(key, Some(IVec::from(value)))];
        Ok(Some(self.apply_locked(&mut log, &record, ops)))
    }

    /// Atomically adds `by` to a big-endian counter and returns the new value. Durable with the
    /// next write that is waited for.
    pub fn increment(&self, table: Table, key: &[u8], by: u64) -> Result<u64> {
        let key = table.key(key);
        let mut log = self.inner.log.lock().expect("log lock");
        let new = self.get_full(&key)?.map_or(0, |v| keys::decode_u64(&v)) + by;
        let value = new.to_be_bytes();
        let mut record = Vec::new();
        wal::encode(&mut record, [(key.as_slice(), Some(&value[..]))]);
        let _ = self.apply_locked(&mut log, &record, vec![(key, Some(IVec::from(&value[..])))]);
        Ok(new)
    }

    /// Bytes on disk, for operators and benchmarks.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.db.size_on_disk()? + wal::Wal::size_on_disk(&self.inner.wal_dir)?)
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

/// Pending log bytes that wake the flusher even when no writer waits.
const WAKE_FLUSHER_AT: usize = 1 << 20;

impl Drop for Inner {
    fn drop(&mut self) {
        // A clean close: what the flusher has not taken yet goes to the log, after everything
        // it took, and is replayed at the next open. (Applying it to sled instead could put it
        // under older writes the flusher synced but had not yet applied, which replay would
        // then write over it.)
        let log = std::mem::take(self.log.get_mut().expect("log lock"));
        let wal = self.wal.get_mut().expect("wal lock");
        if !log.records.is_empty()
            && let Err(e) = wal.append_durable(&log.records)
        {
            tracing::error!(error = %e, "closing the store lost unsynced writes");
        }
        // Wake the flusher so it sees the store is gone and exits.
        self.flusher.unpark();
    }
}

#[cfg(test)]
mod tests;
