//! Reading an archive with every byte checked, handing each part to a [`Visitor`] as it comes.
//! With a visitor that keeps nothing it is the verification a restore runs before it writes
//! anything (and that `charla admin backup` runs before it puts an archive in place).
//!
//! What is checked: tar's checksum of every header; every entry's path against the format
//! (nothing else, nothing that leaves its folder); the SHA-256 of every part (media files
//! against their names, the others against the manifest, in order); the SHA-256 of the whole
//! stream before the manifest (headers and padding included), the manifest's own checksum, and
//! that only zeros follow it. A truncated archive has no manifest; any changed byte fails one of
//! these.

use std::{
    cell::RefCell,
    collections::VecDeque,
    io::{self, Read},
    rc::Rc,
};

use sha2::{Digest, Sha256};

use super::format::{
    EntrySum, FORMAT, HEADER, Header, MANIFEST, Manifest, MediaSummary, Part, VERSION,
};

/// The largest entry read into memory (an image part, the header, the manifest): a damaged
/// size cannot make the reader allocate more.
const MAX_IN_MEMORY: u64 = 256 * 1024 * 1024;

/// What a reader does with the parts; each method may read its data or leave it.
pub(crate) trait Visitor {
    fn header(&mut self, _header: &Header) -> Result<(), ArchiveError> {
        Ok(())
    }
    fn image(&mut self, _store: &str, _chunk: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn log(&mut self, _store: &str, _segment: &str, _data: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
    fn media(&mut self, _rel: &str, _data: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
}

/// Reads only: verification.
pub(crate) struct Verify;

impl Visitor for Verify {}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    /// The archive is not a whole, unchanged Charla backup.
    #[error("{0}")]
    Corrupt(String),
    /// It is one, but this Charla cannot restore it here.
    #[error("{0}")]
    Unusable(String),
    /// Writing what it holds failed.
    #[error("{0}")]
    Write(io::Error),
}

fn corrupt(what: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Corrupt(format!("the archive is damaged or incomplete: {what}"))
}

/// What a whole, verified archive holds.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub header: Header,
    pub media: MediaSummary,
    /// Entries, manifest included.
    pub entries: u64,
    pub bytes: u64,
}

/// Reads the archive from `input`, checking everything (see the module documentation) and
/// handing the parts to `visitor`; `progress` gets the bytes read so far.
pub(crate) fn read_archive(
    input: impl Read,
    visitor: &mut dyn Visitor,
    progress: &dyn Fn(u64),
) -> Result<Verified, ArchiveError> {
    let raw = Rc::new(RefCell::new(RawState::default()));
    let mut archive = tar::Archive::new(Raw {
        inner: input,
        state: raw.clone(),
        progress,
    });
    let mut reading = Reading::default();
    for entry in archive.entries().map_err(corrupt)? {
        reading.entry(entry.map_err(corrupt)?, visitor, &raw)?;
        if reading.done {
            break;
        }
    }
    let Some((header, manifest)) = reading.header.take().zip(reading.manifest.take()) else {
        return Err(corrupt("it ends before its manifest (truncated?)"));
    };
    if !reading.done {
        return Err(corrupt("its manifest's checksum is missing"));
    }
    // The end: only zeros (tar's end-of-archive blocks) may follow.
    let mut rest = archive.into_inner();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = rest.read(&mut buf).map_err(corrupt)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(corrupt("data follows its manifest"));
        }
    }
    if reading.sums != manifest.entries {
        let differs = reading
            .sums
            .iter()
            .zip(&manifest.entries)
            .find(|(seen, listed)| seen != listed)
            .map_or("the number of parts".to_owned(), |(seen, _)| {
                seen.path.clone()
            });
        return Err(corrupt(format!("{differs} does not match the manifest")));
    }
    if reading.media != manifest.media {
        return Err(corrupt("its media files do not match the manifest"));
    }
    let bytes = raw.borrow().pos;
    Ok(Verified {
        header,
        media: manifest.media,
        entries: reading.entries,
        bytes,
    })
}

/// What the reader has seen so far.
#[derive(Default)]
struct Reading {
    header: Option<Header>,
    manifest: Option<Manifest>,
    manifest_sha256: String,
    /// The checksum entry was read: nothing may follow.
    done: bool,
    sums: Vec<EntrySum>,
    media: MediaSummary,
    entries: u64,
}

impl Reading {
    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        visitor: &mut dyn Visitor,
        raw: &Rc<RefCell<RawState>>,
    ) -> Result<(), ArchiveError> {
        self.entries += 1;
        let path = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(corrupt(format!("{path} is not a file")));
        }
        let size = entry.size();
        let part = Part::parse(&path).ok_or_else(|| corrupt(format!("unknown part {path}")))?;
        if self.header.is_none() && part != Part::Header {
            return Err(ArchiveError::Corrupt(format!(
                "not a Charla backup: it does not start with {HEADER}"
            )));
        }
        if self.manifest.is_some() && part != Part::ManifestSum {
            return Err(corrupt(format!("{path} follows the manifest")));
        }
        match part {
            Part::Header => {
                if self.header.is_some() {
                    return Err(corrupt("a second header"));
                }
                let bytes = read_small(&mut entry, size, &path)?;
                self.listed(&path, &bytes);
                let header = parse_header(&bytes)?;
                visitor.header(&header)?;
                self.header = Some(header);
            }
            Part::Image { store } => {
                self.known_store(&store, &path)?;
                let bytes = read_small(&mut entry, size, &path)?;
                self.listed(&path, &bytes);
                visitor.image(&store, &bytes).map_err(ArchiveError::Write)?;
            }
            Part::Log { store, segment } => {
                self.known_store(&store, &path)?;
                let sha256 = stream(&mut entry, |data| visitor.log(&store, &segment, data))?;
                self.sums.push(EntrySum { path, size, sha256 });
            }
            Part::Media { rel, sha256 } => {
                let found = stream(&mut entry, |data| visitor.media(&rel, data))?;
                if found != sha256 {
                    self.media.mismatched.push(sha256);
                }
                self.media.files += 1;
                self.media.bytes += size;
            }
            Part::Manifest => {
                let at = entry.raw_header_position();
                let preceding = raw.borrow().digest_before(at);
                let bytes = read_small(&mut entry, size, &path)?;
                let manifest: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(format!("its manifest does not parse: {e}")))?;
                if preceding.as_deref() != Some(manifest.preceding_sha256.as_str())
                    || at != manifest.preceding_bytes
                {
                    return Err(corrupt(
                        "the bytes before its manifest are not the ones written",
                    ));
                }
                self.manifest_sha256 = hex::encode(Sha256::digest(&bytes));
                self.manifest = Some(manifest);
            }
            Part::ManifestSum => {
                let bytes = read_small(&mut entry, 1024.min(size), &path)?;
                let want = format!("{}  {MANIFEST}\n", self.manifest_sha256);
                if self.manifest.is_none() || bytes != want.as_bytes() {
                    return Err(corrupt("its manifest is not the one written"));
                }
                self.done = true;
            }
        }
        Ok(())
    }

    /// Records the checksum of an entry the manifest lists.
    fn listed(&mut self, path: &str, bytes: &[u8]) {
        self.sums.push(EntrySum {
            path: path.to_owned(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        });
    }

    fn known_store(&self, store: &str, path: &str) -> Result<(), ArchiveError> {
        let known = self
            .header
            .as_ref()
            .is_some_and(|h| h.stores.iter().any(|s| s.key == store));
        if known {
            Ok(())
        } else {
            Err(corrupt(format!("{path} belongs to no store of the header")))
        }
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header, ArchiveError> {
    let header: Header = serde_json::from_slice(bytes).map_err(|e| {
        ArchiveError::Corrupt(format!("not a Charla backup: {HEADER} does not parse: {e}"))
    })?;
    if header.format != FORMAT {
        return Err(ArchiveError::Corrupt(format!(
            "not a Charla backup: format {:?}",
            header.format
        )));
    }
    if header.version > VERSION {
        return Err(ArchiveError::Unusable(format!(
            "the archive has format version {}, written by Charla {}; this Charla reads up to \
             version {VERSION}: restore it with a newer Charla",
            header.version, header.charla_version
        )));
    }
    if let Some(bad) = header
        .stores
        .iter()
        .find(|s| !super::format::is_key(&s.key))
    {
        return Err(corrupt(format!("a store named {:?}", bad.key)));
    }
    Ok(header)
}

/// An entry's bytes, when they are few enough to hold.
fn read_small(entry: &mut impl Read, size: u64, path: &str) -> Result<Vec<u8>, ArchiveError> {
    if size > MAX_IN_MEMORY {
        return Err(corrupt(format!("{path} claims {size} bytes")));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry.take(size).read_to_end(&mut bytes).map_err(corrupt)?;
    if bytes.len() as u64 != size {
        return Err(corrupt(format!("{path} is cut short")));
    }
    Ok(bytes)
}

/// Streams an entry through `visit`, then reads what it left; returns the SHA-256 of all of it.
/// An error reading the archive is damage; an error of the visitor's own is [`ArchiveError::Write`].
fn stream(
    entry: &mut impl Read,
    visit: impl FnOnce(&mut dyn Read) -> io::Result<()>,
) -> Result<String, ArchiveError> {
    let mut hashed = Hashed {
        inner: entry,
        sha256: Sha256::new(),
        failed: None,
    };
    let visited = visit(&mut hashed);
    if let Some(e) = hashed.failed.take() {
        return Err(corrupt(e));
    }
    visited.map_err(ArchiveError::Write)?;
    io::copy(&mut hashed, &mut io::sink()).map_err(corrupt)?;
    Ok(hex::encode(hashed.sha256.finalize()))
}

/// Hashes what is read through it, and remembers a read error (the archive's, not the
/// visitor's).
struct Hashed<'a, R> {
    inner: &'a mut R,
    sha256: Sha256,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Hashed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.sha256.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                let again = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                Err(again)
            }
        }
    }
}

/// The archive's bytes as tar reads them: counted and hashed, with the hash's state kept at the
/// start of the last few reads, so that the digest of everything before an entry's header can
/// be had once tar has read that header (it reads each header with a read that starts there).
struct Raw<'p, R> {
    inner: R,
    state: Rc<RefCell<RawState>>,
    progress: &'p dyn Fn(u64),
}

#[derive(Default)]
struct RawState {
    pos: u64,
    sha256: Sha256,
    marks: VecDeque<(u64, Sha256)>,
}

impl RawState {
    fn digest_before(&self, pos: u64) -> Option<String> {
        let (_, sha256) = self.marks.iter().find(|(at, _)| *at == pos)?;
        Some(hex::encode(sha256.clone().finalize()))
    }
}

impl<R: Read> Read for Raw<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let pos = {
            let mut state = self.state.borrow_mut();
            let mark = (state.pos, state.sha256.clone());
            if state.marks.len() == 8 {
                state.marks.pop_front();
            }
            state.marks.push_back(mark);
            state.sha256.update(&buf[..n]);
            state.pos += n as u64;
            state.pos
        };
        (self.progress)(pos);
        Ok(n)
    }
}
