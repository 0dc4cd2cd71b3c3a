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
//! state.
//!
//! # What replay accepts
//!
//! A crash can damage one thing only: the append that was running, which nobody was told about
//! (acknowledgement waits for `fdatasync`). It is at the end of the last segment that holds
//! data: a failed append is retried in place ([`Wal::append_durable`]), a segment closed while
//! a retry is pending is first cut back to its last whole record ([`Wal::rotate`]), and the
//! segment a store creates as it opens stays empty until the segments it replayed are deleted
//! (a crash in between leaves it behind; empty segments do not count). A segment's file is
//! zero-filled ahead of its data (see [`ZEROED_AHEAD`]), and a file the append grew ends where
//! the write stopped, so that append, cut short, leaves a *torn tail*: whole records, then one
//! record whose length or checksum does not check out, then only zeros or the end of the file.
//! Its header may be partial, its payload may stop short of the length it claims, or its
//! checksum may fail with nothing after it. Replay drops such a tail and reports it.
//!
//! Anything else is damage no crash explains (a bad disk block, a stray write, a file copied
//! half-way), and replaying past it would lose acknowledged writes and apply later ones over
//! the hole. Replay then refuses with [`crate::StorageError::DamagedLog`], naming the segment
//! file and the byte offset of the bad record:
//! - a bad record followed by more data than it claims to hold, or by a whole record anywhere
//!   after it (a damaged length may claim to run past the end of the file: the whole record
//!   found after it shows it does not);
//! - a bad record in a segment that a later segment with data follows, even where it would look
//!   torn in the last one (that includes garbage after a record boundary);
//! - a record that passes its checksum but does not decode;
//! - a segment missing between two others ([`crate::StorageError::MissingLogSegment`]):
//!   segments are numbered in order and only ever deleted oldest first.
//!
//! Every segment is checked before the first record reaches sled, so a refused start changed
//! nothing and the next start refuses the same way; once the operator has repaired or restored
//! the folder, it replays everything.
//!
//! Two limits. A bad checksum on the very last record with only zeros after it is taken for a
//! torn write, though bit rot there would look the same: nothing can tell them apart. And a
//! disk that loses power (not just the process) may keep a later page of the interrupted
//! append and lose an earlier one; its tail then looks like a bad record followed by data, and
//! the start is refused although only that unacknowledged append is damaged. The error gives
//! the offset and where the data ends, so an operator can see that the damage is no bigger than
//! one append before cutting the file there.
//!
//! Record: payload length (u32 LE), CRC-32 of the payload (u32 LE), payload. Payload: a sequence
//! of operations, each a tag (1 put, 0 delete), key length (u32 LE) and key, and for a put the
//! value length (u32 LE) and value. An empty batch's record is eight zero bytes.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

mod replay;

pub(super) use replay::replay;
pub use replay::{LogDamage, RecordFault};

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

pub(super) fn push_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
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

pub(super) fn take_bytes(buf: &[u8]) -> Option<(&[u8], &[u8])> {
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
    /// A failed append may have left bytes past `size` that no retry has overwritten yet.
    failed_append: bool,
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
            failed_append: false,
        })
    }

    /// Appends `records` and waits until they are on disk.
    ///
    /// After a failure, whatever part of `records` reached the file lies past the data; the
    /// caller retries with at least the same bytes (the records it still holds, and any new
    /// ones after them), which land at the same offset and overwrite it. Retrying in a fresh
    /// segment instead would leave that part behind as a torn record in a segment that is no
    /// longer the last, which replay refuses (see the module documentation).
    pub(super) fn append_durable(&mut self, records: &[u8]) -> std::io::Result<()> {
        let written = self
            .file
            .write_all_at(records, self.size)
            .and_then(|()| self.file.sync_data());
        // Zero-filling starts past what this append may have written, also when it failed: zeros
        // written into the middle of a failed append's bytes would leave, after a crash, a bad
        // record with more of them after it, which replay cannot take for a torn tail.
        self.len = self.len.max(self.size + records.len() as u64);
        self.failed_append = written.is_err();
        written?;
        self.size += records.len() as u64;
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

    /// The open segment's number and where its synced data ends: every record before that
    /// offset is on disk, and appends only ever go after it.
    pub(super) fn end(&self) -> (u64, u64) {
        (self.segment, self.size)
    }

    pub(super) fn is_full(&self) -> bool {
        self.size >= SEGMENT_BYTES
    }

    /// Moves on to a new segment; returns the closed one for [`Wal::remove_through`] once the
    /// checkpoint that covers it is durable.
    ///
    /// A checkpoint may rotate while the flusher waits to retry a failed append, which it then
    /// retries in the new segment: what the failure left in the closed one is cut off first,
    /// durably, so that segment does not end in a torn record with a later segment after it.
    pub(super) fn rotate(&mut self) -> std::io::Result<u64> {
        if self.failed_append {
            self.file.set_len(self.size)?;
            self.file.sync_all()?;
        }
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
    dir.join(segment_name(segment))
}

/// A segment's file name.
pub(super) fn segment_name(segment: u64) -> String {
    format!("{segment:020}.log")
}

/// The number of the segment whose file is `name`, if it is a segment's name.
pub(super) fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first.
pub(super) fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
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
            .and_then(segment_number);
        if let Some(n) = number {
            found.push((n, path));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests;
