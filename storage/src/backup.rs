//! Hot backups of running stores, and restoring one into a fresh folder.
//!
//! # What a backup of a store is
//!
//! The same two things a crash leaves behind, read while the store runs: an **image** of sled
//! (every key and value, in key order) and the **log segments** that sled's last checkpoint does
//! not cover. Restoring writes the image into a fresh sled and replays the segments over it,
//! exactly as [`crate::Store::open`] replays a log after a crash. No write stops for it, and
//! sled keeps receiving writes during it, so readers' overlay does not grow.
//!
//! The image is *fuzzy*: sled keeps changing while it is read (the applier goes on, one
//! operation at a time, so the image may even hold half a batch). That is sound because of what
//! the replayed log holds. A [`Snapshot`] first stops checkpoints, so from then on no log
//! segment is deleted; the segments kept then hold every write sled's files may lack, and every
//! write the applier gives sled while the image is read (the applier only applies what the log
//! has synced). After the images it cuts the logs at their synced ends ([`Snapshot::cut`]).
//! Replaying segments from the oldest kept one up to the cut then ends in the same state as the
//! store at the cut, whatever the image caught of each key: a key no replayed write touches did
//! not change while it was read, and a key one touches ends with the last such write. Records are
//! absolute puts and deletes, in the order readers saw them (the crate documentation), so the
//! result is the store as of one instant, with every batch whole, and it contains every write
//! acknowledged before the cut (an acknowledgement waits for the sync that the cut includes).
//!
//! Several stores (the homeserver's, and the stores of a bridge running in the same process) are
//! cut **at one instant**: [`Snapshot::cut`] takes every store's log lock before it reads any
//! end. So if a write in one store was acknowledged before another store's write began (a
//! bridge records a webhook durably, then asks the homeserver to send the message), the backup
//! never holds the later write without the earlier one.
//!
//! What it costs the running store: the log grows past its 32 MiB segment until the snapshot
//! ends (it is checkpointed at once then), and a sled iteration. Memory stays bounded: the image
//! is read in chunks, and the segments are read from their files.
//!
//! # Image chunks
//!
//! A chunk is a sequence of entries, each `key length (u32 LE), key, value length (u32 LE),
//! value`, keys being full sled keys (the table prefix included). Chunks need no checksum of
//! their own: the archive that carries them has one per part.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::{Inner, Result, StorageError, Store, TableSet, wal};

/// What lets a running store be backed up: kept by the code that backs it up, which need not
/// know the store's tables. Weak: it never keeps a closed store open.
#[derive(Clone)]
pub struct BackupSource {
    name: &'static str,
    inner: Weak<Inner>,
}

impl<T: TableSet> Store<T> {
    /// A handle a [`Snapshot`] can take this store's backup through.
    pub fn backup_source(&self) -> BackupSource {
        BackupSource {
            name: T::STORE,
            inner: Arc::downgrade(&self.inner),
        }
    }
}

impl BackupSource {
    /// The store's name ([`TableSet::STORE`]).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Backups under way, and the lock checkpoints run under: a checkpoint deletes log segments,
/// which a backup must keep until it ends.
#[derive(Default)]
pub(crate) struct Holds {
    checkpoint: Mutex<()>,
    backups: AtomicUsize,
}

impl Holds {
    /// Runs `checkpoint` unless a backup holds the log. Under the lock, so a backup that starts
    /// meanwhile waits for the checkpoint to finish and then finds its segments deleted.
    pub(crate) fn checkpoint_unless_held(
        &self,
        checkpoint: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let _running = self.checkpoint.lock().expect("checkpoint lock");
        if self.held() {
            return Ok(());
        }
        checkpoint()
    }

    /// Whether a backup keeps the log from being checkpointed (so a full segment is no reason to
    /// wake the applier).
    pub(crate) fn held(&self) -> bool {
        self.backups.load(Ordering::SeqCst) > 0
    }

    fn hold(&self) {
        let _no_checkpoint_runs = self.checkpoint.lock().expect("checkpoint lock");
        self.backups.fetch_add(1, Ordering::SeqCst);
    }

    fn release(&self) {
        self.backups.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A consistent backup of one or more running stores in progress: read each store's
/// [`Snapshot::image`], then [`Snapshot::cut`] the logs and read the segments it names. Until it
/// is dropped, no store checkpoints its log.
pub struct Snapshot {
    stores: Vec<Arc<Inner>>,
    names: Vec<&'static str>,
}

impl Snapshot {
    /// Starts a snapshot of `sources`: from now on their log segments stay.
    pub fn begin(sources: &[BackupSource]) -> Result<Snapshot> {
        let mut snapshot = Snapshot {
            stores: Vec::with_capacity(sources.len()),
            names: Vec::with_capacity(sources.len()),
        };
        for source in sources {
            let inner = source.inner.upgrade().ok_or_else(|| {
                StorageError::Log(std::io::Error::other(format!(
                    "the {} store is closed",
                    source.name
                )))
            })?;
            inner.holds.hold();
            // Pushed at once, so that dropping the snapshot releases every hold taken.
            snapshot.stores.push(inner);
            snapshot.names.push(source.name);
        }
        Ok(snapshot)
    }

    /// The stores' names, in the order given to [`Snapshot::begin`].
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Store `store`'s sled content, in key order, as chunks of about `chunk_bytes` (see the
    /// module documentation for their encoding and why the content may be fuzzy).
    pub fn image(&self, store: usize, chunk_bytes: usize) -> ImageChunks {
        ImageChunks {
            iter: self.stores[store].db.iter(),
            chunk_bytes,
        }
    }

    /// Cuts every store's log at one instant (see the module documentation): call it after the
    /// images. For each store, its segments, oldest first, each with the length to copy.
    pub fn cut(&self) -> Result<Vec<Vec<LogPart>>> {
        // Every log lock at once, always in the same order (only a snapshot takes more than one).
        let guards: Vec<_> = self
            .stores
            .iter()
            .map(|inner| inner.wal.lock().expect("wal lock"))
            .collect();
        let ends: Vec<(u64, u64)> = guards.iter().map(|wal| wal.end()).collect();
        drop(guards);
        let mut cut = Vec::with_capacity(self.stores.len());
        for (inner, (current, size)) in self.stores.iter().zip(ends) {
            let mut parts = Vec::new();
            // No segment is deleted or added while the snapshot holds the log: the list holds
            // every segment since the last checkpoint, the current one last.
            for (number, path) in wal::segments(&inner.wal_dir)? {
                if number > current {
                    continue;
                }
                let len = if number == current {
                    size
                } else {
                    std::fs::metadata(&path)?.len()
                };
                parts.push(LogPart {
                    name: wal::segment_name(number),
                    len,
                    path,
                });
            }
            cut.push(parts);
        }
        Ok(cut)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for inner in &self.stores {
            inner.holds.release();
            // A segment that filled up meanwhile is checkpointed now.
            inner.applier.unpark();
        }
    }
}

/// The chunks of one store's image; see [`Snapshot::image`].
pub struct ImageChunks {
    iter: sled::Iter,
    chunk_bytes: usize,
}

impl Iterator for ImageChunks {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut chunk = Vec::with_capacity(self.chunk_bytes + 1024);
        while chunk.len() < self.chunk_bytes {
            match self.iter.next() {
                Some(Ok((key, value))) => {
                    wal::push_bytes(&mut chunk, &key);
                    wal::push_bytes(&mut chunk, &value);
                }
                Some(Err(e)) => return Some(Err(e.into())),
                None => break,
            }
        }
        (!chunk.is_empty()).then_some(Ok(chunk))
    }
}

/// One log segment of a cut: its file name and how much of it belongs to the backup.
pub struct LogPart {
    pub name: String,
    pub len: u64,
    path: PathBuf,
}

impl LogPart {
    /// The segment's first [`LogPart::len`] bytes, from its file. They do not change: appends
    /// go past them, and no checkpoint deletes the file while the snapshot lives.
    pub fn open(&self) -> std::io::Result<impl Read + use<>> {
        Ok(File::open(&self.path)?.take(self.len))
    }
}

/// A store being restored into a folder of its own: give it the image chunks and the log
/// segments of one store's backup, then [`StoreRestore::finish`].
///
/// sled takes the image on threads of their own, so that reading and checking the archive (the
/// caller's work) runs beside sled's inserts, which are most of a restore's time.
pub struct StoreRestore {
    path: PathBuf,
    db: sled::Db,
    ingest: Option<Ingest>,
}

/// The threads that insert image chunks into sled, and the way to them.
struct Ingest {
    chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
    threads: Vec<std::thread::JoinHandle<Result<()>>>,
}

/// Threads inserting image chunks: the chunks hold distinct keys, so they may go in in any
/// order (the log replayed after them fixes the order that matters), and sled takes
/// concurrent inserts.
fn insert_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

impl Ingest {
    fn finish(self) -> Result<()> {
        drop(self.chunks);
        let mut result = Ok(());
        for thread in self.threads {
            let joined = thread.join().unwrap_or_else(|_| {
                Err(StorageError::Log(std::io::Error::other(
                    "a restore insert thread panicked",
                )))
            });
            if result.is_ok() {
                result = joined;
            }
        }
        result
    }
}

impl StoreRestore {
    /// Creates an empty store in `path`, which must not hold one.
    pub fn create(path: &Path, cache_mb: u64) -> Result<Self> {
        if path.join("db").exists() || path.join("wal").exists() {
            return Err(StorageError::Log(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already holds a store", path.display()),
            )));
        }
        // High throughput: sled's segment cleaning favours write speed over space while the
        // restore writes everything at once; the server reopens it in its usual mode.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb * 1024 * 1024)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        // A chunk in flight per thread: enough to keep sled busy, little to hold.
        let threads = insert_threads();
        let (chunks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(threads);
        let received = Arc::new(Mutex::new(received));
        let threads = (0..threads)
            .map(|n| {
                let (target, received) = (db.clone(), received.clone());
                std::thread::Builder::new()
                    .name(format!("restore-insert-{n}"))
                    .spawn(move || {
                        loop {
                            // The lock is held only to take the next chunk.
                            let next = received.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok(chunk) = next else { return Ok(()) };
                            insert_chunk(&target, &chunk)?;
                        }
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(StoreRestore {
            path: path.to_owned(),
            db,
            ingest: Some(Ingest { chunks, threads }),
        })
    }

    /// Adds one image chunk's entries.
    pub fn image(&mut self, chunk: Vec<u8>) -> Result<()> {
        let Some(ingest) = &self.ingest else {
            return Err(StorageError::Log(std::io::Error::other(
                "the restore stopped",
            )));
        };
        if ingest.chunks.send(chunk).is_err() {
            // The thread stopped at an error: that error.
            let stopped = self.ingest.take().map_or(Ok(()), Ingest::finish);
            return stopped.and(Err(StorageError::Log(std::io::Error::other(
                "the restore stopped",
            ))));
        }
        Ok(())
    }

    /// Adds one log segment (`name` as [`LogPart::name`] gave it), to be replayed by
    /// [`StoreRestore::finish`].
    pub fn log_segment(&mut self, name: &str, data: &mut impl Read) -> Result<()> {
        let number = wal::segment_number(name).ok_or_else(|| StorageError::Corrupt {
            table: "log",
            detail: format!("{name:?} is not a log segment's name"),
        })?;
        let dir = self.path.join("wal");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(wal::segment_name(number));
        let mut file = File::options().write(true).create_new(true).open(path)?;
        std::io::copy(data, &mut file)?;
        file.sync_all()?;
        Ok(())
    }

    /// Replays the segments over the image, as [`crate::Store::open`] does after a crash (the
    /// same checks: a damaged or missing segment is an error), flushes sled and deletes the
    /// segments: the folder then holds a store that opens without replaying anything.
    pub fn finish(mut self) -> Result<()> {
        if let Some(ingest) = self.ingest.take() {
            ingest.finish()?;
        }
        let wal_dir = self.path.join("wal");
        let db = self.db;
        let replayed = wal::replay(&wal_dir, |ops| {
            Ok(crate::apply_to_sled(&db, ops.into_iter())?)
        })?;
        if let Some(torn) = &replayed.torn {
            // The cut ends at a record's end, so this is not expected; the store is still what
            // the log holds up to there, as after a crash.
            tracing::warn!(
                segment = %torn.segment.display(),
                offset = torn.offset,
                "the restored log ends in an incomplete record; dropped"
            );
        }
        db.flush()?;
        if let Some(last) = replayed.last_segment {
            wal::Wal::remove_through(&wal_dir, last)?;
        }
        drop(db);
        sync_dir(&wal_dir)?;
        sync_dir(&self.path)?;
        Ok(())
    }
}

/// Inserts an image chunk's entries (see the module documentation for the encoding).
fn insert_chunk(db: &sled::Db, chunk: &[u8]) -> Result<()> {
    let mut rest = chunk;
    while !rest.is_empty() {
        let corrupt = || StorageError::Corrupt {
            table: "image",
            detail: format!(
                "an image chunk ends inside an entry, {} bytes before its end",
                rest.len()
            ),
        };
        let (key, after_key) = wal::take_bytes(rest).ok_or_else(corrupt)?;
        let (value, after_value) = wal::take_bytes(after_key).ok_or_else(corrupt)?;
        // One insert at a time: faster than a `sled::Batch` of the chunk (measured).
        db.insert(key, value)?;
        rest = after_value;
    }
    Ok(())
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match File::open(path) {
        Ok(dir) => dir.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A lock on a store's folder that no process can open the store under, and that cannot be
/// taken while one has it open: sled holds an exclusive `flock` on `<folder>/db` while a store
/// is open, and this takes the same lock. Released when dropped.
pub struct FolderLock {
    _file: Option<File>,
}

/// Why a [`FolderLock`] was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A process (a running server, a bridge) has the store open.
    #[error("{} is in use by a running process", .0.display())]
    InUse(PathBuf),
    #[error("{path}: {1}", path = .0.display())]
    Io(PathBuf, std::io::Error),
}

impl FolderLock {
    /// Locks the store in `folder`; a folder without a store needs no lock and gets an empty one.
    pub fn try_lock(folder: &Path) -> Result<FolderLock, LockError> {
        let path = folder.join("db");
        let file = match File::options().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(FolderLock { _file: None });
            }
            Err(e) => return Err(LockError::Io(path, e)),
        };
        match file.try_lock() {
            Ok(()) => Ok(FolderLock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::InUse(folder.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests;
