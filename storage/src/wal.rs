//! Charla's own write-ahead log: what makes a batch durable.
//!
//! sled 0.34 makes writes durable by sealing its in-memory log buffer and handing the write to
//! its IO thread pool, which wakes all of its idle threads for every job. Under group commit
//! that was one wake-up storm per flush, and it cost two thirds of the server's CPU on the send
//! path (measured: see `docs/performance.md`). So the store keeps sled as the index readers use
//! and makes writes durable here instead: each batch is also encoded into this log, and the
//! flusher thread appends the pending records and calls `fdatasync` itself, with no thread hop.
//! sled is flushed only at a checkpoint, when a segment is full; the segments before the
//! checkpoint are then deleted.
//!
//! After a crash, [`replay`] re-applies every record of the remaining segments, in order, over
//! what sled recovered. sled recovers a prefix of the batches in the order they were applied,
//! every batch is applied to sled and appended here under one lock, and a record only holds
//! absolute puts and deletes, so re-applying a suffix that sled already has ends in the same
//! state. A record cut short by the crash was never acknowledged (acknowledgement waits for
//! `fdatasync`) and is dropped.
//!
//! A segment's file is zero-filled ahead of its data (see [`ZEROED_AHEAD`]), so replay ends a
//! segment where only zeros are left.
//!
//! Record: payload length (u32 LE), CRC-32 of the payload (u32 LE), payload. Payload: a sequence
//! of operations, each a tag (1 put, 0 delete), key length (u32 LE) and key, and for a put the
//! value length (u32 LE) and value.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// A segment is checkpointed (sled flushed, the segment deleted) once it holds this much.
#[cfg(not(test))]
pub(super) const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
/// Small in tests, so that they cross checkpoints.
#[cfg(test)]
pub(super) const SEGMENT_BYTES: u64 = 64 * 1024;

/// The applier keeps the open segment's file zero-filled at least this far past its data, one
/// [`ZERO_CHUNK`] at a time. Appends then overwrite blocks the file already has, and
/// `fdatasync` writes just them; growing the file made every sync also commit the file's new
/// size to the filesystem's journal. Measured on this machine's ext4 (`docs/performance.md`):
/// ~0.3 ms and ~145 µs of kernel CPU per sync growing the file, ~0.12 ms and ~55 µs in place.
#[cfg(not(test))]
const ZEROED_AHEAD: u64 = 2 * ZERO_CHUNK;
#[cfg(not(test))]
const ZERO_CHUNK: u64 = 1024 * 1024;
/// Small in tests, so that records land both in zero-filled space and past it.
#[cfg(test)]
const ZEROED_AHEAD: u64 = 2 * ZERO_CHUNK;
#[cfg(test)]
const ZERO_CHUNK: u64 = 8 * 1024;

static ZEROS: [u8; ZERO_CHUNK as usize] = [0; ZERO_CHUNK as usize];

const PUT: u8 = 1;
const DELETE: u8 = 0;
const HEADER: usize = 8;

/// Appends one record holding `ops` (full sled keys) to `buf`.
pub(super) fn encode<'a>(
    buf: &mut Vec<u8>,
    ops: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    for (key, value) in ops {
        buf.push(if value.is_some() { PUT } else { DELETE });
        push_bytes(buf, key);
        if let Some(value) = value {
            push_bytes(buf, value);
        }
    }
    let payload = &buf[start + HEADER..];
    let len = u32::try_from(payload.len()).expect("a batch is smaller than 4 GiB");
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

fn push_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a key or value is smaller than 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// One decoded operation: a key and, for a put, its value.
pub(super) type Op<'a> = (&'a [u8], Option<&'a [u8]>);

/// Decodes a record's payload; `None` if it is malformed.
fn decode(mut payload: &[u8]) -> Option<Vec<Op<'_>>> {
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = payload.split_first() {
        let (key, rest) = take_bytes(rest)?;
        let (value, rest) = match tag {
            PUT => {
                let (value, rest) = take_bytes(rest)?;
                (Some(value), rest)
            }
            DELETE => (None, rest),
            _ => return None,
        };
        ops.push((key, value));
        payload = rest;
    }
    Some(ops)
}

fn take_bytes(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let bytes = buf.get(4..4 + len)?;
    Some((bytes, &buf[4 + len..]))
}

/// The open segment the flusher appends to.
pub(super) struct Wal {
    dir: PathBuf,
    /// Shared with the applier, which syncs zero-filled space outside the log's lock.
    file: Arc<File>,
    segment: u64,
    /// Where the data ends and the next record goes.
    size: u64,
    /// The file's length: `size` plus the zero-filled space after it.
    len: u64,
}

impl Wal {
    /// Starts a fresh segment after `last` (the highest segment number replayed, if any).
    pub(super) fn create(dir: &Path, last: Option<u64>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let segment = last.map_or(1, |n| n + 1);
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(segment_path(dir, segment))?;
        // The new file's name must survive a crash too.
        File::open(dir)?.sync_all()?;
        Ok(Wal {
            dir: dir.to_owned(),
            file: Arc::new(file),
            segment,
            size: 0,
            len: 0,
        })
    }

    /// Appends `records` and waits until they are on disk.
    pub(super) fn append_durable(&mut self, records: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(records, self.size)?;
        self.file.sync_data()?;
        self.size += records.len() as u64;
        self.len = self.len.max(self.size);
        Ok(())
    }

    /// Writes one [`ZERO_CHUNK`] of zeros after the data if less than [`ZEROED_AHEAD`] is
    /// left, into the page cache only. Called under the log's lock, so it never overlaps an
    /// append; returns the file when it grew, for the caller to sync outside that lock.
    pub(super) fn zero_ahead(&mut self) -> std::io::Result<Option<Arc<File>>> {
        if self.len >= self.size + ZEROED_AHEAD {
            return Ok(None);
        }
        self.file.write_all_at(&ZEROS, self.len)?;
        self.len += ZERO_CHUNK;
        Ok(Some(self.file.clone()))
    }

    pub(super) fn is_full(&self) -> bool {
        self.size >= SEGMENT_BYTES
    }

    /// Moves on to a new segment; returns the closed one for [`Wal::remove_through`] once the
    /// checkpoint that covers it is durable.
    pub(super) fn rotate(&mut self) -> std::io::Result<u64> {
        let closed = self.segment;
        *self = Wal::create(&self.dir, Some(closed))?;
        Ok(closed)
    }

    /// Deletes every segment up to and including `segment`.
    pub(super) fn remove_through(dir: &Path, segment: u64) -> std::io::Result<()> {
        for (n, path) in segments(dir)? {
            if n <= segment {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }

    /// Bytes the log holds on disk.
    pub(super) fn size_on_disk(dir: &Path) -> std::io::Result<u64> {
        let mut total = 0;
        for (_, path) in segments(dir)? {
            total += std::fs::metadata(path)?.len();
        }
        Ok(total)
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.log"))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = number {
            found.push((n, path));
        }
    }
    found.sort();
    Ok(found)
}

/// What [`replay`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Replayed {
    /// The highest segment number seen.
    pub last_segment: Option<u64>,
    pub records: u64,
    /// Bytes after the last whole record: a write the crash cut short.
    pub torn_bytes: u64,
}

/// Feeds every whole record of every segment in `dir` to `apply`, oldest first.
pub(super) fn replay(
    dir: &Path,
    mut apply: impl FnMut(Vec<Op<'_>>) -> std::io::Result<()>,
) -> std::io::Result<Replayed> {
    let mut replayed = Replayed::default();
    for (n, path) in segments(dir)? {
        replayed.last_segment = Some(n);
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let mut rest = &bytes[..];
        // Zero-filled space ahead of the data, not a record. (An empty record's header is
        // zeros too, but data follows it.)
        while !rest.iter().all(|&b| b == 0)
            && let Some(payload) = whole_record(rest)
        {
            let ops = decode(payload).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: a record passed its checksum but does not decode",
                        path.display()
                    ),
                )
            })?;
            apply(ops)?;
            replayed.records += 1;
            rest = &rest[HEADER + payload.len()..];
        }
        let written = rest
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        replayed.torn_bytes += written as u64;
    }
    Ok(replayed)
}

/// The payload of the record at the start of `buf`, if it is whole and its checksum matches.
fn whole_record(buf: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..HEADER)?.try_into().ok()?);
    let payload = buf.get(HEADER..HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    type OwnedRecord = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    fn replay_all(dir: &Path) -> (Vec<OwnedRecord>, Replayed) {
        let mut records = Vec::new();
        let replayed = replay(dir, |ops| {
            records.push(
                ops.into_iter()
                    .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                    .collect(),
            );
            Ok(())
        })
        .unwrap();
        (records, replayed)
    }

    #[test]
    fn records_replay_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), None).unwrap();
        let mut buf = Vec::new();
        encode(&mut buf, [(&b"a"[..], Some(&b"1"[..])), (b"b", None)]);
        wal.append_durable(&buf).unwrap();
        let first = wal.rotate().unwrap();
        buf.clear();
        encode(&mut buf, [(&b"a"[..], Some(&b""[..]))]);
        wal.append_durable(&buf).unwrap();

        let (records, replayed) = replay_all(dir.path());
        assert_eq!(
            records,
            vec![
                vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)],
                vec![(b"a".to_vec(), Some(Vec::new()))],
            ]
        );
        assert_eq!(replayed.last_segment, Some(first + 1));
        assert_eq!(replayed.torn_bytes, 0);

        Wal::remove_through(dir.path(), first).unwrap();
        assert_eq!(
            replay_all(dir.path()).0.len(),
            1,
            "the checkpointed segment is gone"
        );
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), None).unwrap();
        let mut buf = Vec::new();
        encode(&mut buf, [(&b"key"[..], Some(&b"kept"[..]))]);
        let whole = buf.len();
        encode(&mut buf, [(&b"key"[..], Some(&b"torn"[..]))]);
        // The crash wrote all but the last byte of the second record.
        wal.append_durable(&buf[..buf.len() - 1]).unwrap();
        let (records, replayed) = replay_all(dir.path());
        assert_eq!(
            records,
            vec![vec![(b"key".to_vec(), Some(b"kept".to_vec()))]]
        );
        assert_eq!(replayed.torn_bytes, (buf.len() - 1 - whole) as u64);

        // A flipped bit in a whole-length record fails its checksum.
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), None).unwrap();
        let mut corrupt = buf[..whole].to_vec();
        *corrupt.last_mut().unwrap() ^= 1;
        wal.append_durable(&corrupt).unwrap();
        assert_eq!(replay_all(dir.path()).0.len(), 0);
    }

    #[test]
    fn zero_filled_space_ends_a_segment_but_an_empty_record_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(dir.path(), None).unwrap();
        let mut expected = Vec::new();
        // Records inside zero-filled space, then past its end (the file grows again).
        for n in 0..40u32 {
            let value = vec![b'v'; 1000 + n as usize];
            let mut buf = Vec::new();
            if n == 3 {
                // An empty batch's record is a zero header: data after it still replays.
                encode(&mut buf, []);
                expected.push(Vec::new());
            }
            encode(&mut buf, [(&n.to_be_bytes()[..], Some(&value[..]))]);
            expected.push(vec![(n.to_be_bytes().to_vec(), Some(value))]);
            wal.append_durable(&buf).unwrap();
            if n < 10 {
                while wal.zero_ahead().unwrap().is_some() {}
            }
        }
        while wal.zero_ahead().unwrap().is_some() {}
        assert!(wal.len > wal.size, "the segment ends in zero-filled space");

        let (records, replayed) = replay_all(dir.path());
        assert_eq!(records, expected);
        assert_eq!(replayed.torn_bytes, 0);

        // A record the crash cut short, followed by zero-filled space, is dropped.
        let mut torn = Vec::new();
        encode(&mut torn, [(&b"torn"[..], Some(&b"value"[..]))]);
        wal.append_durable(&torn[..torn.len() - 2]).unwrap();
        let (records, replayed) = replay_all(dir.path());
        assert_eq!(records, expected);
        assert_eq!(replayed.torn_bytes, (torn.len() - 2) as u64);
    }
}
