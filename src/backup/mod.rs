//! Backups of a running server (`GET /_charla/admin/v1/backup`, `charla admin backup`) and
//! restoring them with the server stopped (`charla admin restore`, [`restore`]).
//!
//! # What a backup holds
//!
//! - **The homeserver's store** and, when the WhatsApp bridge runs in the same process, **the
//!   bridge's two stores** (its own and its appservice transaction store), cut at one instant
//!   so that they agree with each other (`charla_storage::Snapshot`): everything acknowledged
//!   before the backup began is in it, every batch whole. The server keeps serving meanwhile.
//!   The store holds the server's signing key, accounts (argon2 password hashes), access tokens
//!   (as SHA-256 hashes: a backup holds no usable token), rooms, the desk, appservice state.
//! - **The media files**: every file of the media folder (`aa/bb/<sha256>`), read after the
//!   stores were cut. Files are content-addressed and never changed or deleted, and each one is
//!   on disk before the record that names it, so every file the stores name is in the archive
//!   (files uploaded during the backup may be too, unnamed by the stores: harmless).
//! - Not: `admin.token`, the generated `registration_shared_secret` and the in-process bridges'
//!   generated `registration.yaml`. They are the host's credentials (each opens the running
//!   server's API), not data: a restore keeps those of the folder it replaces, and a server
//!   without them generates new ones at start. Nor the config file, nor appservice registration
//!   files it names, nor a standalone bridge's state (`charla bridge whatsapp|email` backs up
//!   with its own folder).
//! - The search index (issue #22) will go here as one more part after the stores' cut, or be
//!   rebuilt from the stream after a restore: it is derived from the events.
//!
//! Treat an archive like the data folder: it holds every message and the server's signing key.
//!
//! # The archive
//!
//! A tar file (readable with `tar tvf`; a tar crate writes it, [`write`]), its entries in this
//! order, every one a regular file:
//!
//! 1. `BACKUP.json`: format `charla-backup`, version, creation time, server name, Charla
//!    version, and the stores with where each is restored (`data`: the data folder itself;
//!    `bridges/<bridge>/db`, `bridges/<bridge>/transactions` of the WhatsApp and email bridges
//!    running in the process: under each bridge's state folder).
//! 2. `stores/<store>/image/<n>`: each store's content in chunks of about 4 MiB (key/value
//!    records; `charla_storage::Snapshot`).
//! 3. `stores/<store>/log/<segment>.log`: each store's log since its last checkpoint, up to the
//!    cut, replayed over the image at restore.
//! 4. `media/<aa>/<bb>/<sha256>`: the media files, named by the SHA-256 of their bytes.
//! 5. `MANIFEST.json`: the size and SHA-256 of every entry above except media files (their
//!    name is their checksum), the media files' count and size, and the SHA-256 of all the
//!    archive's bytes before the manifest (tar headers and padding included).
//! 6. `MANIFEST.json.sha256`: the manifest's SHA-256, as `sha256sum` prints it.
//!
//! So every byte is covered by a checksum, and a truncated archive has no manifest: a restore
//! verifies the whole archive before it writes anything ([`read`]). The backup streams: it holds
//! one image chunk and the manifest's list of store parts in memory, whatever the store's size.

mod format;
mod read;
pub(crate) mod restore;
mod swap;
mod write;
mod write_behind;

use std::{
    io::{self, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use charla_storage::BackupSource;
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;

pub(crate) use format::{BRIDGES_PREFIX, DATA, StoreEntry};
pub(crate) use read::{ArchiveError, Verify, read_archive};
use write::{Sources, write_archive};
pub(crate) use write_behind::ArchiveFile;

use crate::{error::Error, storage::Store};

/// A bridge's stores, each with its folder under the bridge's state folder.
type BridgeStores = Vec<(&'static str, BackupSource)>;

/// Backups of this server: its store, the stores of a bridge running in the process, its media.
pub(crate) struct BackupService {
    server_name: String,
    store: BackupSource,
    media: PathBuf,
    /// The in-process bridges' stores (by bridge, each with its folder), attached once each
    /// has started.
    bridges: Mutex<Vec<(&'static str, BridgeStores)>>,
    /// One backup at a time: each holds the stores' checkpoints and reads the whole data.
    running: Arc<AtomicBool>,
}

impl BackupService {
    pub(crate) fn new(store: &Store, media: PathBuf, server_name: &ruma::ServerName) -> Self {
        BackupService {
            server_name: server_name.to_string(),
            store: store.backup_source(),
            media,
            bridges: Mutex::new(Vec::new()),
            running: Arc::default(),
        }
    }

    /// Adds an in-process bridge's stores (each with its folder under the bridge's state
    /// folder) to every later backup. `bridge` is its name under `[bridges]`.
    pub(crate) fn attach_bridge(
        &self,
        bridge: &'static str,
        stores: &[(&'static str, BackupSource)],
    ) {
        let mut bridges = self.bridges.lock();
        bridges.retain(|(name, _)| *name != bridge);
        bridges.push((bridge, stores.to_vec()));
    }

    /// Takes the one backup slot, refused while another backup runs; the backup starts when
    /// [`Backup::stream`] is called.
    pub(crate) fn start(&self) -> Result<Backup, Error> {
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(Error::matrix(
                http::StatusCode::CONFLICT,
                "M_UNKNOWN",
                "A backup is already running",
            ));
        }
        let mut stores = vec![(
            StoreEntry {
                key: "charla".into(),
                location: DATA.into(),
            },
            self.store.clone(),
        )];
        for (bridge, sources) in self.bridges.lock().iter() {
            for (folder, source) in sources {
                stores.push((
                    StoreEntry {
                        key: format!("{bridge}-{folder}"),
                        location: format!("{BRIDGES_PREFIX}{bridge}/{folder}"),
                    },
                    source.clone(),
                ));
            }
        }
        Ok(Backup {
            sources: Sources {
                server_name: self.server_name.clone(),
                stores,
                media: self.media.clone(),
            },
            slot: Slot(self.running.clone()),
        })
    }
}

/// Frees the backup slot when dropped.
struct Slot(Arc<AtomicBool>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// A backup about to be written.
pub(crate) struct Backup {
    sources: Sources,
    slot: Slot,
}

/// Bytes of the archive per message of the response body.
const SEND_CHUNK: usize = 256 * 1024;
/// Messages between the writer and the connection: what the writer runs ahead by.
const SEND_AHEAD: usize = 16;

impl Backup {
    /// Writes the archive on a thread of its own (it reads files and sled: blocking work) and
    /// returns its bytes as the writer makes them. A failure ends the stream with an error, so
    /// the client sees the transfer break rather than a short archive; a client that goes away
    /// stops the writer (and with it the snapshot) at its next chunk.
    pub(crate) fn stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let (tx, rx) = mpsc::channel(SEND_AHEAD);
        let failed = tx.clone();
        let Backup { sources, slot } = self;
        let spawned = std::thread::Builder::new()
            .name("charla-backup".into())
            .spawn(move || {
                let _slot = slot;
                yield_to_requests();
                let started = std::time::Instant::now();
                let mut out = Sender {
                    tx,
                    buf: Vec::with_capacity(SEND_CHUNK),
                };
                match write_archive(&sources, &mut out).and_then(|w| out.flush().map(|()| w)) {
                    Ok(written) => tracing::info!(
                        bytes = written.bytes,
                        entries = written.entries,
                        media_files = written.media_files,
                        millis = started.elapsed().as_millis() as u64,
                        "backup written"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "backup failed");
                        let _ = out.tx.blocking_send(Err(e));
                    }
                }
            });
        if let Err(e) = spawned {
            let _ = failed.try_send(Err(e));
        }
        drop(failed);
        futures_util::stream::unfold(rx, |mut rx| async move {
            let next = rx.recv().await?;
            Some((next, rx))
        })
    }
}

/// Puts this thread (the backup's writer) in Linux's `SCHED_IDLE` class: it runs on the CPU
/// time request handlers leave, so an idle server gives the backup all it takes and a busy one
/// keeps serving first. Where that is refused, a nice of 19; elsewhere the backup runs at the
/// normal priority. Measured in `docs/performance.md` ("Issue #20: backup and restore").
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: syscalls on this thread's own id (0: the caller) with a parameter that
        // outlives them.
        let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if idle == 0 {
            return;
        }
        // SAFETY: as above.
        let lowered =
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
        if lowered != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "backup: cannot lower priority");
        }
    }
}

/// The writer's end of the response body: fills a chunk, then hands it over, waiting while the
/// connection is [`SEND_AHEAD`] chunks behind.
struct Sender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for Sender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(SEND_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SEND_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(SEND_CHUNK));
        self.tx
            .blocking_send(Ok(chunk.into()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}
