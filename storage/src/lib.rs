//! The narrow key-value layer Charla's homeserver, its appservice toolkit and its WhatsApp
//! bridge store through, each in a database folder of its own.
//!
//! A user of the crate declares its tables once, as a type implementing [`TableSet`] (usually a
//! fieldless enum), and sees named tables of byte keys and values, atomic multi-table [`Batch`]es
//! and a durability barrier ([`Store::durable`]); nothing above this crate names sled. Keys are
//! built with [`keys::Key`]: big-endian integers and `0xFF`-separated strings (UTF-8 never
//! contains `0xFF`), so byte order is the order users range-scan in.
//!
//! All tables live in one sled tree, each under a one-byte prefix: sled's multi-tree
//! transactions dominated the homeserver's send path when each table was a tree of its own
//! (measured: see `docs/performance.md`). Scans never cross a table because every key carries
//! its prefix. A batch is atomic without sled's help: readers see it whole in the [`overlay`]
//! until all of it is in sled, and a crash replays it whole from the log.
//!
//! Durability is a group commit: [`Store::write`] applies a batch in memory (atomically), encodes
//! it into the store's own write-ahead log ([`wal`]) and returns a ticket; [`Store::durable`]
//! waits until one `fdatasync` of the log has covered that ticket. Requests arriving while a sync
//! runs share the next one, so throughput does not pay one `fsync` per request. The batches a
//! sync covered then reach sled every 50 ms, one operation at a time (never as a sled batch:
//! see `apply_to_sled`); until then readers find them in the [`overlay`]. sled itself is only
//! flushed at log checkpoints: every sled flush hands a buffer write to sled's I/O pool, which
//! wakes all of its idle threads (measured on the homeserver, issue #2, and on the WhatsApp
//! bridge and the toolkit's transaction store, issue #5). Each store has two dedicated threads
//! named after [`TableSet::STORE`]: the flusher, which only syncs the log, and the applier,
//! which feeds sled and checkpoints (see [`flusher`]).
//!
//! A running store is backed up as what a crash would leave, read without stopping it: sled's
//! content and the log since its last checkpoint, cut at one instant across several stores; a
//! restore replays that log over the content as an open after a crash does ([`backup`]).

mod backup;
mod flusher;
pub mod keys;
mod overlay;
mod slice;
mod wal;

use std::{
    marker::PhantomData,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use sled::IVec;
use tokio::sync::oneshot;

pub use backup::{
    BackupSource, FolderLock, ImageChunks, LockError, LogPart, Snapshot, StoreRestore,
};
pub use keys::Key;
pub use slice::Slice;
pub use wal::{LogDamage, RecordFault};

/// The tables of one store, declared by its user: usually a fieldless enum.
///
/// A table's key prefix is its place in [`TableSet::ALL`], so data written earlier stays where
/// it is only while every existing table keeps its place: APPEND new tables at the end of the
/// type and of `ALL`, never reorder or remove one. A store only takes tables of its own set, so
/// a table of one store cannot be written into another by mistake.
pub trait TableSet: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// The store's name (`charla`, `whatsapp`, ...): its flusher thread and its log lines.
    const STORE: &'static str;

    /// Every table, in prefix order: at most 256, each once ([`Store::open`] checks).
    const ALL: &'static [Self];

    /// The table's name, for error messages and operators.
    fn name(self) -> &'static str;
}

/// The key prefix of `table`: its place in [`TableSet::ALL`].
fn prefix<T: TableSet>(table: T) -> u8 {
    T::ALL
        .iter()
        .position(|t| *t == table)
        .unwrap_or_else(|| panic!("{table:?} is missing from {}'s TableSet::ALL", T::STORE))
        as u8
}

fn full_key<T: TableSet>(table: T, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix(table));
    k.extend_from_slice(key);
    k
}

/// Refuses a table set whose prefixes would collide.
fn check_table_set<T: TableSet>() {
    assert!(
        T::ALL.len() <= 256,
        "{} declares {} tables; one-byte prefixes allow 256",
        T::STORE,
        T::ALL.len()
    );
    for (i, table) in T::ALL.iter().enumerate() {
        assert!(
            !T::ALL[..i].contains(table),
            "{table:?} is twice in {}'s TableSet::ALL",
            T::STORE
        );
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
    /// The write-ahead log is damaged where no crash damages it (the rule is in the `wal`
    /// module's documentation): [`Store::open`] refuses rather than lose acknowledged writes or
    /// apply later ones over the hole, and has replayed nothing, so a second start refuses the
    /// same way. The message is for the operator who reads it in the log.
    #[error(
        "storage: the write-ahead log is damaged at byte {offset} of {path}: {damage}. A crash \
         only cuts short the last write of the last segment, so this is not what a crash leaves; \
         replaying past it would lose the writes after it and apply later ones over the hole, so \
         the store was not opened and nothing was replayed. Restore the data folder from a \
         backup, or contact support with this message. To start anyway, knowing that every \
         write in this segment from that byte on is lost (and later segments are applied over \
         the gap): `truncate -s {offset} {path}` (a repair command will come with \
         `charla admin`)",
        path = .segment.display()
    )]
    DamagedLog {
        segment: PathBuf,
        offset: u64,
        damage: LogDamage,
    },
    /// A log segment is missing between two others: segments are numbered in order and deleted
    /// oldest first, so its writes were acknowledged and are gone.
    #[error(
        "storage: write-ahead log segment {path} is missing: the log deletes segments oldest \
         first, so the writes it held are lost, and replaying the later segments would apply \
         them over the hole; the store was not opened and nothing was replayed. Restore the \
         file from a backup, or contact support with this message. To start anyway, knowing \
         that its writes are lost: `touch {path}` (a repair command will come with \
         `charla admin`)",
        path = .segment.display()
    )]
    MissingLogSegment { segment: PathBuf },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A set of writes to tables of `T`, applied atomically: all of them or none.
#[derive(Debug)]
pub struct Batch<T> {
    ops: Vec<(T, Vec<u8>, Option<Vec<u8>>)>,
}

impl<T: TableSet> Default for Batch<T> {
    fn default() -> Self {
        Batch { ops: Vec::new() }
    }
}

impl<T: TableSet> Batch<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, table: T, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((table, key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, table: T, key: impl Into<Vec<u8>>) {
        self.ops.push((table, key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether the batch writes to `table`.
    pub fn touches(&self, table: T) -> bool {
        self.ops.iter().any(|(t, _, _)| *t == table)
    }
}

/// Proof that a batch was applied; pass it to [`Store::durable`] to wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a write is not durable until `Store::durable` has been awaited"]
pub struct WriteTicket(u64);

/// The store: the tables of `T` in one sled tree, its write-ahead log and the group-commit
/// flusher. Cheap to clone.
pub struct Store<T> {
    inner: Arc<Inner>,
    tables: PhantomData<fn() -> T>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Store {
            inner: self.inner.clone(),
            tables: PhantomData,
        }
    }
}

struct Inner {
    db: sled::Db,
    /// Log records not yet handed to the flusher. Every write to the overlay and its record
    /// happen under this one lock, so the log's order is the order readers saw them in.
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
    /// Writes the flusher synced, waiting for the applier to put them into sled.
    synced: Mutex<flusher::Synced>,
    /// The applier thread, unparked when much is waiting for sled.
    applier: std::thread::Thread,
    /// The open log segment: the flusher appends to it, the applier rotates it at checkpoints,
    /// and the last [`Store`]'s drop appends what is still pending.
    wal: Mutex<wal::Wal>,
    wal_dir: PathBuf,
    /// Backups under way, which keep the log from being checkpointed ([`backup`]).
    holds: backup::Holds,
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

impl<T: TableSet> Store<T> {
    /// Opens (or creates) the store in `path`, with sled's page cache bounded to `cache_mb` MiB.
    ///
    /// Replays the write-ahead log over what sled recovered, then starts the flusher and the
    /// applier. A torn tail of the log (the write a crash cut short) is dropped; any other
    /// damage to it is [`StorageError::DamagedLog`] or [`StorageError::MissingLogSegment`],
    /// returned before anything was replayed.
    ///
    /// Panics if `T` is not a valid table set (a table twice in `ALL`, more than 256).
    pub fn open(path: &Path, cache_mb: u64) -> Result<Self> {
        check_table_set::<T>();
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb * 1024 * 1024)
            // Durability comes from our log; sled is flushed at checkpoints only.
            .flush_every_ms(None);
        let db = open_when_free(&config)?;
        let wal_dir = path.join("wal");
        // In log order, one operation at a time (see `apply_to_sled`); a crash during replay
        // only means replaying again.
        let replayed = wal::replay(&wal_dir, |ops| Ok(apply_to_sled(&db, ops.into_iter())?))?;
        if replayed.records > 0 {
            tracing::info!(
                store = T::STORE,
                records = replayed.records,
                "replayed the write-ahead log"
            );
        }
        if let Some(torn) = &replayed.torn {
            tracing::warn!(
                store = T::STORE,
                segment = %torn.segment.display(),
                offset = torn.offset,
                bytes = torn.bytes,
                "dropped the torn tail of the write-ahead log: the write a crash cut short, \
                 which was never acknowledged"
            );
        }
        let wal = wal::Wal::create(&wal_dir, replayed.last_segment)?;
        if let Some(last) = replayed.last_segment {
            db.flush()?;
            wal::Wal::remove_through(&wal_dir, last)?;
        }
        // Plain threads: a sync is a blocking `fdatasync` and a sled batch is blocking CPU work,
        // and a dedicated thread avoids handing every one to a pool.
        let spawn = |role: &str, run: fn(std::sync::Weak<Inner>)| {
            let (tx, rx) = std::sync::mpsc::channel::<std::sync::Weak<Inner>>();
            let thread = std::thread::Builder::new()
                .name(format!("{}-{role}", T::STORE))
                .spawn(move || {
                    if let Ok(inner) = rx.recv() {
                        run(inner);
                    }
                })?;
            Ok::<_, std::io::Error>((thread.thread().clone(), tx))
        };
        let (flusher, to_flusher) = spawn("flusher", flusher::flusher)?;
        let (applier, to_applier) = spawn("applier", flusher::applier)?;
        let store = Store {
            tables: PhantomData,
            inner: Arc::new(Inner {
                db,
                log: Mutex::new(PendingLog::default()),
                durable: Mutex::new(Durable::default()),
                overlay: overlay::Overlay::default(),
                flush_wanted: AtomicBool::new(false),
                flusher,
                synced: Mutex::default(),
                applier,
                wal: Mutex::new(wal),
                wal_dir,
                holds: backup::Holds::default(),
            }),
        };
        let _ = to_flusher.send(Arc::downgrade(&store.inner));
        let _ = to_applier.send(Arc::downgrade(&store.inner));
        Ok(store)
    }

    pub fn get(&self, table: T, key: &[u8]) -> Result<Option<Slice>> {
        Ok(self.get_full(&full_key(table, key))?.map(Slice::from))
    }

    fn get_full(&self, key: &[u8]) -> Result<Option<IVec>> {
        match self.inner.overlay.get(key) {
            overlay::Lookup::Pending(value) => Ok(value),
            overlay::Lookup::Absent => Ok(self.inner.db.get(key)?),
        }
    }

    pub fn contains(&self, table: T, key: &[u8]) -> Result<bool> {
        Ok(self.get(table, key)?.is_some())
    }

    /// All entries whose key starts with `prefix`, in key order (keys without the table byte).
    pub fn scan_prefix(
        &self,
        table: T,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Slice, Slice)>> + use<T> {
        let prefix = full_key(table, prefix);
        let pending = self.inner.overlay.with_prefix(&prefix);
        overlay::Merged::new(self.inner.db.scan_prefix(prefix), pending).map(strip)
    }

    /// Entries with `from <= key < to`, in key order (reverse it for newest first).
    pub fn range(
        &self,
        table: T,
        from: &[u8],
        to: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Slice, Slice)>> + use<T> {
        let (from, to) = (full_key(table, from), full_key(table, to));
        let pending = self.inner.overlay.range(&from, &to);
        overlay::Merged::new(self.inner.db.range(from..to), pending).map(strip)
    }

    /// The last entry of `table` whose key starts with `prefix`.
    pub fn last_with_prefix(&self, table: T, prefix: &[u8]) -> Result<Option<(Slice, Slice)>> {
        self.scan_prefix(table, prefix).next_back().transpose()
    }

    /// Applies `batch`. Readers see it at once; it is durable after [`Store::durable`] returns
    /// for the ticket, and after a crash it is there whole or not at all.
    pub fn write(&self, batch: Batch<T>) -> Result<WriteTicket> {
        let ops = batch
            .ops
            .into_iter()
            .map(|(table, key, value)| (full_key(table, &key), value.map(IVec::from)))
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
    pub async fn write_durable(&self, batch: Batch<T>) -> Result<()> {
        let ticket = self.write(batch)?;
        self.durable(ticket).await
    }

    /// Inserts `value` only if `key` is absent; the ticket is `None` when the key existed.
    pub fn insert_if_absent(
        &self,
        table: T,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<WriteTicket>> {
        let key = full_key(table, key);
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
    pub fn increment(&self, table: T, key: &[u8], by: u64) -> Result<u64> {
        let key = full_key(table, key);
        let mut log = self.inner.log.lock().expect("log lock");
        let new = self.get_full(&key)?.map_or(0, |v| keys::decode_u64(&v)) + by;
        let value = new.to_be_bytes();
        let mut record = Vec::new();
        wal::encode(&mut record, [(key.as_slice(), Some(&value[..]))]);
        let _ = self.apply_locked(&mut log, &record, vec![(key, Some(IVec::from(&value[..])))]);
        Ok(new)
    }

    /// Deletes `key` and returns the value it had, in one step: no write can come between the
    /// read and the delete. `None` (and no write) when the key was absent.
    pub fn take(&self, table: T, key: &[u8]) -> Result<Option<(Slice, WriteTicket)>> {
        let key = full_key(table, key);
        let mut record = Vec::new();
        wal::encode(&mut record, [(key.as_slice(), None)]);
        let mut log = self.inner.log.lock().expect("log lock");
        let Some(value) = self.get_full(&key)? else {
            return Ok(None);
        };
        let ticket = self.apply_locked(&mut log, &record, vec![(key, None)]);
        Ok(Some((value.into(), ticket)))
    }

    /// The ticket of the newest write applied so far: [`Store::durable`] on it waits for every
    /// write made before the call, whoever made it.
    pub fn latest_ticket(&self) -> WriteTicket {
        WriteTicket(self.inner.log.lock().expect("log lock").applied)
    }

    /// Bytes on disk, for operators and benchmarks.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.inner.db.size_on_disk()? + self.log_size_on_disk()?)
    }

    /// Bytes of the write-ahead log's segments on disk: what the next checkpoint may free, and
    /// what a restart replays (for `/metrics`).
    pub fn log_size_on_disk(&self) -> Result<u64> {
        Ok(wal::Wal::size_on_disk(&self.inner.wal_dir)?)
    }
}

/// Copies the folder of a store, open or not, to `to`: with the store open, what `kill -9`
/// would leave on disk (sled without the writes still in the overlay, and the log). For tests
/// of what a user of the crate promises to keep across a crash.
pub fn copy_crash_image(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_crash_image(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Writes operations to sled one by one, in order, never as a `sled::Batch`.
///
/// sled's `apply_batch` holds a process-wide write lock for the whole batch, and after the
/// first one every sled read in the process takes the read side of that lock: each 50 ms batch
/// of the applier stopped every reader, request threads included, for as long as it ran (the
/// ~10 ms p99 of read-only requests such as `/keys/query`). A batch needs no atomicity in sled:
/// readers see a write in the overlay until all of it is in sled, and after a crash the log
/// replays every operation since the last checkpoint, in order. Each is an absolute put or
/// delete, so whatever part of them sled recovered, replaying them all ends in the same state.
///
/// For the same reason only the last operation on each key is given to sled: a queue entry
/// written and removed within one round (the bridge's inbox and outbox, transactions) then
/// costs sled one lookup, as deleting a key it does not hold is a no-op, instead of two tree
/// changes.
fn apply_to_sled<'a, V: Into<IVec>>(
    db: &sled::Db,
    ops: impl Iterator<Item = (&'a [u8], Option<V>)>,
) -> sled::Result<()> {
    let ops: Vec<_> = ops.collect();
    let mut last = std::collections::HashMap::with_capacity(ops.len());
    for (i, (key, _)) in ops.iter().enumerate() {
        last.insert(*key, i);
    }
    for (i, (key, value)) in ops.into_iter().enumerate() {
        if last[key] != i {
            continue;
        }
        match value {
            Some(v) => db.insert(key, v)?,
            None => db.remove(key)?,
        };
    }
    Ok(())
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
fn strip(entry: sled::Result<(IVec, IVec)>) -> Result<(Slice, Slice)> {
    let (k, v) = entry?;
    let len = k.len();
    Ok((Slice::from(k).subslice(1, len - 1), v.into()))
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
        // Wake both threads so they see the store is gone and exit.
        self.flusher.unpark();
        self.applier.unpark();
    }
}

#[cfg(test)]
mod tests;
