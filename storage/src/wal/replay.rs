//! Replay at open: every segment is checked against the rule of the [`super`] module's
//! documentation first, then applied. Checking first means a refused start changed nothing in
//! sled, so the next start refuses the same way.

use std::path::{Path, PathBuf};

use super::{DELETE, HEADER, Op, PUT, decode, segment_path, segments};
use crate::{Result, StorageError};

/// What [`replay`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// The highest segment number seen.
    pub last_segment: Option<u64>,
    pub records: u64,
    /// The end of the last segment that a crash cut short, dropped.
    pub torn: Option<TornTail>,
}

/// A write the crash cut short: from `offset` to the end of the segment's data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TornTail {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
}

/// Why the log cannot be replayed past a record: see [`crate::StorageError::DamagedLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogDamage {
    /// A bad record in its segment's middle: more data follows it than a cut-short write leaves
    /// (beyond the length it claims, or a whole record somewhere after it).
    #[error("{fault}, and more data follows it in this segment, up to byte {data_end}")]
    DataAfter { fault: RecordFault, data_end: u64 },
    /// A bad record at the end of a segment that a later segment with data follows.
    #[error("{fault}, and a later segment holds writes")]
    LaterSegments { fault: RecordFault },
    /// A record that passes its checksum, but whose operations do not decode.
    #[error("the record there passes its checksum but its operations do not decode")]
    Undecodable,
}

/// What is wrong with a record whose length or checksum does not check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordFault {
    #[error("the file ends inside the header of the record there")]
    HeaderPastEnd,
    #[error("the record there claims {len} bytes, more than the file holds after it")]
    PayloadPastEnd { len: u32 },
    #[error("the record there fails its checksum")]
    Checksum,
}

/// Checks every segment in `dir`, then feeds every whole record to `apply`, oldest first.
pub(crate) fn replay(
    dir: &Path,
    mut apply: impl FnMut(Vec<Op<'_>>) -> Result<()>,
) -> Result<Replayed> {
    let segments = segments(dir)?;
    if let Some(pair) = segments.windows(2).find(|p| p[1].0 != p[0].0 + 1) {
        return Err(StorageError::MissingLogSegment {
            segment: segment_path(dir, pair[0].0 + 1),
        });
    }
    let mut checked = Vec::with_capacity(segments.len());
    for (_, path) in &segments {
        checked.push(check(&std::fs::read(path)?));
    }
    let mut replayed = Replayed {
        last_segment: segments.last().map(|(n, _)| *n),
        ..Replayed::default()
    };
    // Segments after the last one with data hold no writes: a crash while the store opened
    // can leave the new, empty one behind its predecessor's torn tail.
    let last_with_data = checked.iter().rposition(|c| c.data_end > 0);
    for (i, ((_, path), c)) in segments.iter().zip(&checked).enumerate() {
        let Some(bad) = c.bad else { continue };
        let damage = match bad {
            Bad::Undecodable => LogDamage::Undecodable,
            Bad::DataAfter(fault) => LogDamage::DataAfter {
                fault,
                data_end: c.data_end as u64,
            },
            Bad::CutShort(_) if Some(i) == last_with_data => {
                replayed.torn = Some(TornTail {
                    segment: path.clone(),
                    offset: c.end as u64,
                    bytes: (c.data_end - c.end) as u64,
                });
                continue;
            }
            Bad::CutShort(fault) => LogDamage::LaterSegments { fault },
        };
        return Err(StorageError::DamagedLog {
            segment: path.clone(),
            offset: c.end as u64,
            damage,
        });
    }
    // Every segment checked: only now does anything reach sled. Read again rather than kept,
    // so replay holds one segment in memory at a time.
    for ((_, path), c) in segments.iter().zip(&checked) {
        let bytes = std::fs::read(path)?;
        let mut pos = 0;
        while pos < c.end {
            let Some(payload) = record_at(&bytes, pos).ok() else {
                return Err(changed(path));
            };
            let ops = decode(payload).ok_or_else(|| changed(path))?;
            apply(ops)?;
            replayed.records += 1;
            pos += HEADER + payload.len();
        }
        if pos != c.end {
            return Err(changed(path));
        }
    }
    Ok(replayed)
}

fn changed(path: &Path) -> StorageError {
    StorageError::Log(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{}: the segment changed while it was replayed",
            path.display()
        ),
    ))
}

/// One segment, checked.
struct Checked {
    /// Just past its last non-zero byte: what follows is zero-filled space.
    data_end: usize,
    /// Where its whole records end: the offset of the bad record, if there is one.
    end: usize,
    bad: Option<Bad>,
}

/// What a segment's first bad record is.
#[derive(Clone, Copy)]
enum Bad {
    /// What an interrupted append leaves: a torn tail if the segment is the last with data.
    CutShort(RecordFault),
    /// Followed by more data than an interrupted append leaves.
    DataAfter(RecordFault),
    Undecodable,
}

fn check(bytes: &[u8]) -> Checked {
    let data_end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    let mut pos = 0;
    // Up to the zero-filled space. (An empty record's header is zeros too, but data follows it,
    // and the last record's payload may end in zeros that belong to it.)
    while pos < data_end {
        let bad = match record_at(bytes, pos) {
            Ok(payload) if decode(payload).is_some() => {
                pos += HEADER + payload.len();
                continue;
            }
            Ok(_) => Bad::Undecodable,
            Err(fault) if cut_short(bytes, pos, data_end) => Bad::CutShort(fault),
            Err(fault) => Bad::DataAfter(fault),
        };
        return Checked {
            data_end,
            end: pos,
            bad: Some(bad),
        };
    }
    Checked {
        data_end,
        end: pos,
        bad: None,
    }
}

/// The payload of the record at `pos`, if it is whole and its checksum matches.
fn record_at(bytes: &[u8], pos: usize) -> Result<&[u8], RecordFault> {
    let header = bytes
        .get(pos..pos + HEADER)
        .ok_or(RecordFault::HeaderPastEnd)?;
    let (len, crc) = split_header(header);
    let payload = bytes
        .get(pos + HEADER..pos + HEADER + len as usize)
        .ok_or(RecordFault::PayloadPastEnd { len })?;
    if crc32fast::hash(payload) != crc {
        return Err(RecordFault::Checksum);
    }
    Ok(payload)
}

fn split_header(header: &[u8]) -> (u32, u32) {
    let word = |at: usize| {
        let mut le = [0; 4];
        le.copy_from_slice(&header[at..at + 4]);
        u32::from_le_bytes(le)
    };
    (word(0), word(4))
}

/// Whether the bad record at `pos` can be an append the crash cut short: every non-zero byte
/// after it lies within the length it claims (a header the file ends in reads as zero-padded),
/// and no whole record starts among them. The second test catches a damaged length that claims
/// to run past the rest of the segment's records.
fn cut_short(bytes: &[u8], pos: usize, data_end: usize) -> bool {
    let mut header = [0; HEADER];
    let present = &bytes[pos..bytes.len().min(pos + HEADER)];
    header[..present.len()].copy_from_slice(present);
    let (len, _) = split_header(&header);
    data_end <= pos + HEADER + len as usize && !(pos + 1..data_end).any(|at| is_record(bytes, at))
}

/// Whether a whole, non-empty record that decodes starts at `at`. Cheap for most offsets: the
/// length must fit the file and the payload must start with an operation's tag before the
/// checksum is computed.
fn is_record(bytes: &[u8], at: usize) -> bool {
    let Some(header) = bytes.get(at..at + HEADER) else {
        return false;
    };
    let (len, crc) = split_header(header);
    // The smallest operation: a tag and a key length.
    if len < 5 {
        return false;
    }
    let Some(payload) = bytes.get(at + HEADER..at + HEADER + len as usize) else {
        return false;
    };
    matches!(payload[0], PUT | DELETE)
        && crc32fast::hash(payload) == crc
        && decode(payload).is_some()
}
