//! Restoring an archive into a config's folders, with the server stopped.
//!
//! In order: read the archive's header (which stores it holds, for which server name); lock
//! every store folder it replaces (refused while a process has one open: sled holds a `flock`
//! on it, see `charla_storage::FolderLock`; held to the end, so no server starts meanwhile);
//! refuse a folder that is not empty unless `--force`; **verify the whole archive** (every byte,
//! [`super::read`]); only then write, into a new folder beside each destination, reading the
//! archive again with the same checks (a file that changed between the two reads stops it);
//! replay the stores' logs; sync; keep this host's own secrets (below); and put each new
//! folder in place of the old one in one atomic step ([`super::swap`]). Killed at any point,
//! the destination is the old folder or the new one, whole; a leftover `.<name>.restoring-…`
//! beside it is the unfinished (or the replaced) one and can be deleted.
//!
//! `admin.token` and the generated `registration_shared_secret` are credentials of the host,
//! not data, and no archive holds them: when the folder being replaced has them they are kept,
//! otherwise the restored server makes new ones at its first start.
//!
//! With the default layout the media folder and the WhatsApp bridge's state are inside the data
//! folder and everything is replaced in one step. A media folder or bridge state folder set
//! elsewhere in the config is replaced in a step of its own, after the data folder.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use charla_storage::{FolderLock, LockError, StoreRestore};

use super::{
    format::{BRIDGES_PREFIX, DATA, Header},
    read::{ArchiveError, Verified, Verify, Visitor, read_archive},
    swap,
};
use crate::config::Config;

/// sled's page cache while a store is restored, at least: sled takes inserts faster with room
/// for the pages it is filling (measured: 54 MB/s of 760-byte values with 32 MiB, 83 MB/s with
/// 128 MiB and up). The restore runs alone, and sled only fills what it needs.
const RESTORE_CACHE_MB: u64 = 256;

/// Where a config's data lives.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    pub server_name: String,
    pub data: PathBuf,
    pub media: PathBuf,
    /// The state folder of each bridge a backup may hold stores of, by its name.
    pub bridges: Vec<(&'static str, PathBuf)>,
    pub cache_mb: u64,
}

impl Targets {
    pub(crate) fn of(config: &Config) -> io::Result<Self> {
        let data = std::path::absolute(&config.storage.path)?;
        Ok(Targets {
            server_name: config.server_name.to_string(),
            media: std::path::absolute(config.media_path())?,
            bridges: vec![
                (
                    "whatsapp",
                    std::path::absolute(whatsapp::bridge::state_dir(
                        &config.bridges.whatsapp,
                        &data,
                    ))?,
                ),
                (
                    "email",
                    std::path::absolute(email::bridge::state_dir(&config.bridges.email, &data))?,
                ),
            ],
            data,
            cache_mb: config.storage.cache_capacity_mb,
        })
    }

    /// The state folder of the bridge `name`.
    fn bridge_dir(&self, name: &str) -> Option<&PathBuf> {
        self.bridges
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, dir)| dir)
    }

    /// Where a store at `location` goes.
    fn store_folder(&self, location: &str) -> Result<PathBuf, ArchiveError> {
        if location == DATA {
            return Ok(self.data.clone());
        }
        let bridge = location
            .strip_prefix(BRIDGES_PREFIX)
            .and_then(|rest| rest.split_once('/'));
        match bridge {
            Some((name, sub @ ("db" | "transactions"))) => match self.bridge_dir(name) {
                Some(dir) => Ok(dir.join(sub)),
                None => Err(ArchiveError::Unusable(format!(
                    "the archive holds a store of a bridge {name:?}, which this Charla does not know"
                ))),
            },
            _ => Err(ArchiveError::Unusable(format!(
                "the archive holds a store for {location:?}, which this Charla does not know"
            ))),
        }
    }
}

/// Reports a restore's progress: a phase, then bytes of the archive read in it.
pub(crate) trait Progress {
    fn phase(&self, name: &'static str, total: u64);
    fn read(&self, bytes: u64);
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    /// A process has a store of a destination open.
    #[error("{0}: stop the server (and any `charla bridge`) using it first")]
    InUse(String),
    #[error(
        "{0} is not empty: restore into an empty folder, or pass --force to replace its content"
    )]
    NotEmpty(String),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{0}")]
    Io(String),
}

fn io_error(what: impl std::fmt::Display, path: &Path) -> impl FnOnce(io::Error) -> RestoreError {
    let what = format!("{what} {}", path.display());
    move |e| RestoreError::Io(format!("{what}: {e}"))
}

/// What a restore did.
#[derive(Debug)]
pub(crate) struct Restored {
    pub verified: Verified,
    /// The folders written, and whether each replaced an existing one.
    pub folders: Vec<(PathBuf, bool)>,
}

/// One folder to replace: the destination and the new folder built beside it.
struct Root {
    dest: PathBuf,
    temp: PathBuf,
}

/// Restores `archive` into the folders of `targets` (see the module documentation).
pub(crate) fn restore(
    targets: &Targets,
    archive: &Path,
    force: bool,
    progress: &dyn Progress,
) -> Result<Restored, RestoreError> {
    let size = std::fs::metadata(archive)
        .map_err(io_error("cannot read", archive))?
        .len();
    let header = peek_header(archive)?;
    if header.server_name != targets.server_name {
        return Err(ArchiveError::Unusable(format!(
            "the archive is of server {:?}, the config's server_name is {:?}: a store only works \
             under the server name it was written with",
            header.server_name, targets.server_name
        ))
        .into());
    }
    let mut dests = vec![targets.data.clone()];
    let mut store_folders = Vec::new();
    for store in &header.stores {
        store_folders.push(targets.store_folder(&store.location)?);
    }
    for folder in store_folders.iter().chain([&targets.media]) {
        if !dests.iter().any(|d| folder.starts_with(d)) {
            dests.push(outermost(folder, targets));
        }
    }
    // Locks first: a running server's folder is refused before anything else is looked at.
    let _locks = store_folders
        .iter()
        .map(|folder| FolderLock::try_lock(folder))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            LockError::InUse(path) => {
                RestoreError::InUse(format!("{} is in use by a running server", path.display()))
            }
            other => RestoreError::Io(other.to_string()),
        })?;
    let mut replaced = Vec::new();
    for dest in &dests {
        let full = std::fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_some());
        if full && !force {
            return Err(RestoreError::NotEmpty(dest.display().to_string()));
        }
        replaced.push(full);
    }

    progress.phase("verifying", size);
    read_archive(open(archive)?, &mut Verify, &|n| progress.read(n))?;

    progress.phase("restoring", size);
    let roots: Vec<Root> = dests
        .iter()
        .map(|dest| Root {
            dest: dest.clone(),
            temp: swap::sibling(dest, "restoring"),
        })
        .collect();
    let written = write_roots(targets, archive, &roots, progress);
    let verified = match written {
        Ok(verified) => verified,
        Err(e) => {
            for root in &roots {
                let _ = std::fs::remove_dir_all(&root.temp);
            }
            return Err(e);
        }
    };
    for root in &roots {
        swap::put_in_place(&root.temp, &root.dest).map_err(io_error(
            "cannot put the restored folder in place at",
            &root.dest,
        ))?;
    }
    Ok(Restored {
        verified,
        folders: dests.into_iter().zip(replaced).collect(),
    })
}

/// The folder to replace for `folder`, which lies outside the data folder: the bridge's state
/// folder for its stores, else the folder itself.
fn outermost(folder: &Path, targets: &Targets) -> PathBuf {
    targets
        .bridges
        .iter()
        .find(|(_, dir)| folder.starts_with(dir))
        .map_or_else(|| folder.to_owned(), |(_, dir)| dir.clone())
}

fn open(archive: &Path) -> Result<impl Read + use<>, RestoreError> {
    let file = File::open(archive).map_err(io_error("cannot read", archive))?;
    Ok(BufReader::with_capacity(1 << 20, file))
}

/// The archive's header, unverified: to know what to lock and check before the verification.
fn peek_header(archive: &Path) -> Result<Header, RestoreError> {
    struct Peek(Option<Header>);
    impl Visitor for Peek {
        fn header(&mut self, header: &Header) -> Result<(), ArchiveError> {
            self.0 = Some(header.clone());
            // Stop reading here.
            Err(ArchiveError::Write(io::Error::other("peeked")))
        }
    }
    let mut peek = Peek(None);
    match read_archive(open(archive)?, &mut peek, &|_| {}) {
        _ if peek.0.is_some() => Ok(peek.0.take().expect("checked")),
        Err(e) => Err(e.into()),
        Ok(_) => Err(ArchiveError::Corrupt("the archive has no header".into()).into()),
    }
}

/// Writes the archive into the roots' new folders, checking it again as it goes.
fn write_roots(
    targets: &Targets,
    archive: &Path,
    roots: &[Root],
    progress: &dyn Progress,
) -> Result<Verified, RestoreError> {
    for root in roots {
        std::fs::create_dir_all(&root.temp).map_err(io_error("cannot create", &root.temp))?;
    }
    let mut writer = Writer {
        targets,
        roots,
        stores: HashMap::new(),
    };
    let verified = read_archive(open(archive)?, &mut writer, &|n| progress.read(n))?;
    for (_, store) in writer.stores.drain() {
        store
            .finish()
            .map_err(|e| RestoreError::Io(e.to_string()))?;
    }
    keep_host_secrets(targets, roots);
    for root in roots {
        swap::adopt_owner(&root.temp, &root.dest)
            .map_err(io_error("cannot set the owner of", &root.temp))?;
        swap::sync_tree(&root.temp).map_err(io_error("cannot sync", &root.temp))?;
    }
    Ok(verified)
}

/// Writes the parts into the new folders.
struct Writer<'a> {
    targets: &'a Targets,
    roots: &'a [Root],
    stores: HashMap<String, StoreRestore>,
}

impl Writer<'_> {
    /// Where `dest` is written: the same place inside the new folder of its root.
    fn temp_path(&self, dest: &Path) -> io::Result<PathBuf> {
        self.roots
            .iter()
            .filter_map(|root| Some(root.temp.join(dest.strip_prefix(&root.dest).ok()?)))
            .next()
            .ok_or_else(|| io::Error::other(format!("{} is in no folder", dest.display())))
    }

    fn store(&mut self, key: &str) -> io::Result<&mut StoreRestore> {
        self.stores
            .get_mut(key)
            .ok_or_else(|| io::Error::other(format!("no store {key}")))
    }
}

impl Visitor for Writer<'_> {
    fn header(&mut self, header: &Header) -> Result<(), ArchiveError> {
        for store in &header.stores {
            let folder = self.targets.store_folder(&store.location)?;
            let path = self.temp_path(&folder).map_err(ArchiveError::Write)?;
            let created = std::fs::create_dir_all(&path)
                .map_err(charla_storage::StorageError::from)
                .and_then(|()| {
                    StoreRestore::create(&path, self.targets.cache_mb.max(RESTORE_CACHE_MB))
                })
                .map_err(|e| ArchiveError::Write(io::Error::other(e)))?;
            self.stores.insert(store.key.clone(), created);
        }
        Ok(())
    }

    fn image(&mut self, store: &str, chunk: &[u8]) -> io::Result<()> {
        self.store(store)?
            .image(chunk.to_vec())
            .map_err(io::Error::other)
    }

    fn log(&mut self, store: &str, segment: &str, data: &mut dyn Read) -> io::Result<()> {
        self.store(store)?
            .log_segment(segment, &mut &mut *data)
            .map_err(io::Error::other)
    }

    fn media(&mut self, rel: &str, data: &mut dyn Read) -> io::Result<()> {
        let path = self.temp_path(&self.targets.media.join(rel))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = File::create(path)?;
        io::copy(data, &mut file)?;
        Ok(())
    }
}

/// Copies this host's `admin.token` and generated `registration_shared_secret` (and the
/// in-process bridge's generated registration) from the folders being replaced into the new
/// ones, so that the operator's tools keep working; a restore onto a new host has none, and the
/// server generates them at its first start.
fn keep_host_secrets(targets: &Targets, roots: &[Root]) {
    let files = [
        targets
            .data
            .join(crate::users::admin_token::ADMIN_TOKEN_FILE),
        targets.data.join(crate::users::shared_secret::SECRET_FILE),
    ];
    let registrations = targets
        .bridges
        .iter()
        .map(|(_, dir)| dir.join("registration.yaml"));
    for file in files.into_iter().chain(registrations) {
        let Some(root) = roots.iter().find(|r| file.starts_with(&r.dest)) else {
            continue;
        };
        let Ok(rel) = file.strip_prefix(&root.dest) else {
            continue;
        };
        let to = root.temp.join(rel);
        if !file.exists() {
            continue;
        }
        let copied = to
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::copy(&file, &to));
        if let Err(e) = copied {
            tracing::warn!(file = %file.display(), error = %e, "cannot keep this file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bridge_store_goes_under_its_own_state_folder() {
        let targets = Targets {
            server_name: "example.org".into(),
            data: "/srv/data".into(),
            media: "/srv/data/media".into(),
            bridges: vec![
                ("whatsapp", "/srv/data/bridges/whatsapp".into()),
                ("email", "/srv/mail-bridge".into()),
            ],
            cache_mb: 16,
        };
        let folder = |location: &str| targets.store_folder(location).ok();
        assert_eq!(folder("data"), Some("/srv/data".into()));
        assert_eq!(
            folder("bridges/whatsapp/db"),
            Some("/srv/data/bridges/whatsapp/db".into())
        );
        assert_eq!(
            folder("bridges/email/transactions"),
            Some("/srv/mail-bridge/transactions".into())
        );
        assert_eq!(folder("bridges/email/other"), None);
        assert_eq!(folder("bridges/telegram/db"), None);
        assert_eq!(folder("bridges/../db"), None);
        assert_eq!(
            outermost(Path::new("/srv/mail-bridge/db"), &targets),
            PathBuf::from("/srv/mail-bridge")
        );
    }
}
