//! Writing an archive from running stores and the media folder, as a stream: the only things
//! held in memory are one image chunk and the manifest's list of store parts.

use std::{
    fs::File,
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use charla_storage::{BackupSource, Snapshot};
use sha2::{Digest, Sha256};

use super::format::{
    EntrySum, FORMAT, HEADER, Header, MANIFEST, MANIFEST_SUM, Manifest, MediaSummary, Part,
    StoreEntry, VERSION, is_sha256,
};

/// Bytes of sled content per image part: large enough that parts are few, small enough to hold.
const IMAGE_CHUNK: usize = 4 * 1024 * 1024;

/// What a backup takes.
pub(crate) struct Sources {
    pub server_name: String,
    /// The stores, cut at one instant; the homeserver's first.
    pub stores: Vec<(StoreEntry, BackupSource)>,
    pub media: PathBuf,
}

/// What was written.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Written {
    pub bytes: u64,
    pub entries: u64,
    pub media_files: u64,
}

/// Writes the archive of `sources` to `out` (the format is in [`super`]'s documentation).
pub(crate) fn write_archive(sources: &Sources, out: impl Write) -> io::Result<Written> {
    let created_ts = now_ms();
    let mut tar = tar::Builder::new(Digesting::new(out));
    let mut w = Entries {
        created_secs: created_ts / 1000,
        sums: Vec::new(),
        count: 0,
    };
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        created_ts,
        server_name: sources.server_name.clone(),
        charla_version: env!("CARGO_PKG_VERSION").into(),
        stores: sources
            .stores
            .iter()
            .map(|(entry, _)| entry.clone())
            .collect(),
    };
    w.append_bytes(&mut tar, HEADER, &json(&header)?)?;

    let handles: Vec<BackupSource> = sources.stores.iter().map(|(_, s)| s.clone()).collect();
    let snapshot = Snapshot::begin(&handles).map_err(io::Error::other)?;
    for (i, (entry, _)) in sources.stores.iter().enumerate() {
        for (n, chunk) in snapshot.image(i, IMAGE_CHUNK).enumerate() {
            let chunk = chunk.map_err(io::Error::other)?;
            w.append_bytes(&mut tar, &Part::image_path(&entry.key, n as u64), &chunk)?;
        }
    }
    let cut = snapshot.cut().map_err(io::Error::other)?;
    for ((entry, _), segments) in sources.stores.iter().zip(&cut) {
        for segment in segments {
            let path = Part::log_path(&entry.key, &segment.name);
            let sha256 = w.append_reader(&mut tar, &path, segment.open()?, segment.len)?;
            w.sums.push(EntrySum {
                path,
                size: segment.len,
                sha256,
            });
        }
    }
    // The logs are copied: checkpoints may resume. Media files are never changed or deleted
    // (content-addressed), and each is written before the record that names it, so every file
    // the stores name is there now.
    drop(snapshot);
    let media = w.append_media(&mut tar, &sources.media)?;
    let media_files = media.files;

    let digesting = tar.get_ref();
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        entries: std::mem::take(&mut w.sums),
        preceding_bytes: digesting.bytes,
        preceding_sha256: hex::encode(digesting.sha256.clone().finalize()),
        media,
    };
    let manifest = json(&manifest)?;
    let sum = format!("{}  {MANIFEST}\n", hex::encode(Sha256::digest(&manifest)));
    w.append_bytes(&mut tar, MANIFEST, &manifest)?;
    w.append_bytes(&mut tar, MANIFEST_SUM, sum.as_bytes())?;
    let mut out = tar.into_inner()?;
    out.flush()?;
    Ok(Written {
        bytes: out.bytes,
        entries: w.count,
        media_files,
    })
}

/// The entries written so far, and the checksums of those the manifest lists.
struct Entries {
    created_secs: u64,
    sums: Vec<EntrySum>,
    count: u64,
}

impl Entries {
    fn header(&self, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(self.created_secs);
        header.set_entry_type(tar::EntryType::Regular);
        header
    }

    /// An entry from memory, listed in the manifest (unless it is one of the manifest's own).
    fn append_bytes<W: Write>(
        &mut self,
        tar: &mut tar::Builder<W>,
        path: &str,
        bytes: &[u8],
    ) -> io::Result<()> {
        let mut header = self.header(bytes.len() as u64);
        tar.append_data(&mut header, path, bytes)?;
        self.count += 1;
        if path != MANIFEST && path != MANIFEST_SUM {
            self.sums.push(EntrySum {
                path: path.to_owned(),
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(bytes)),
            });
        }
        Ok(())
    }

    /// An entry of exactly `size` bytes read from `reader` (an error if it has fewer); returns
    /// their SHA-256.
    fn append_reader<W: Write>(
        &mut self,
        tar: &mut tar::Builder<W>,
        path: &str,
        reader: impl Read,
        size: u64,
    ) -> io::Result<String> {
        let mut header = self.header(size);
        let mut exact = Exact {
            inner: reader.take(size),
            left: size,
            sha256: Sha256::new(),
        };
        tar.append_data(&mut header, path, &mut exact)?;
        self.count += 1;
        Ok(hex::encode(exact.sha256.finalize()))
    }

    /// Every file of the media folder (`aa/bb/<sha256>`; not `tmp/`), in name order.
    fn append_media<W: Write>(
        &mut self,
        tar: &mut tar::Builder<W>,
        root: &Path,
    ) -> io::Result<MediaSummary> {
        let mut summary = MediaSummary::default();
        for aa in sorted_names(root, is_hex_pair)? {
            for bb in sorted_names(&root.join(&aa), is_hex_pair)? {
                let folder = root.join(&aa).join(&bb);
                let prefix = format!("{aa}{bb}");
                for name in sorted_names(&folder, |n| is_sha256(n) && n.starts_with(&prefix))? {
                    let file = match File::open(folder.join(&name)) {
                        Ok(file) => file,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    let size = file.metadata()?.len();
                    let sha256 = self.append_reader(tar, &Part::media_path(&name), file, size)?;
                    if sha256 != name {
                        tracing::warn!(
                            file = %folder.join(&name).display(),
                            "a media file's bytes do not match its name (damaged on disk); \
                             archived as it is"
                        );
                        summary.mismatched.push(name);
                    }
                    summary.files += 1;
                    summary.bytes += size;
                }
            }
        }
        Ok(summary)
    }
}

/// The names in `dir` that `keep` accepts, sorted; none if `dir` does not exist.
fn sorted_names(dir: &Path, keep: impl Fn(&str) -> bool) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Some(name) = entry?.file_name().to_str()
            && keep(name)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn is_hex_pair(name: &str) -> bool {
    name.len() == 2 && is_sha256(&name.repeat(32))
}

/// Reads exactly `left` bytes, hashing them: a file shorter than its header says is an error,
/// never a short entry (which would shift every later entry).
struct Exact<R> {
    inner: R,
    left: u64,
    sha256: Sha256,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "a file ended {} bytes early while it was archived",
                    self.left
                ),
            ));
        }
        self.left -= n as u64;
        self.sha256.update(&buf[..n]);
        Ok(n)
    }
}

/// Passes writes through, counting and hashing them: the manifest's digest of the stream.
struct Digesting<W> {
    inner: W,
    bytes: u64,
    sha256: Sha256,
}

impl<W> Digesting<W> {
    fn new(inner: W) -> Self {
        Digesting {
            inner,
            bytes: 0,
            sha256: Sha256::new(),
        }
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.sha256.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn json(value: &impl serde::Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(io::Error::other)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
