//! The log's format, its writer and the replay rule of the module documentation: every shape a
//! crash leaves is dropped, every other damage stops replay before anything is applied.

use std::os::unix::fs::FileExt;

use super::replay::{Replayed, TornTail};
use super::*;
use crate::StorageError;

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
    assert_eq!(replayed.torn, None);

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
    assert_eq!(
        replayed.torn,
        Some(TornTail {
            segment: segment_path(dir.path(), 1),
            offset: whole as u64,
            bytes: (buf.len() - 1 - whole) as u64,
        })
    );

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
    assert_eq!(replayed.torn, None);

    // A record the crash cut short, followed by zero-filled space, is dropped.
    let mut torn = Vec::new();
    encode(&mut torn, [(&b"torn"[..], Some(&b"value"[..]))]);
    wal.append_durable(&torn[..torn.len() - 2]).unwrap();
    let (records, replayed) = replay_all(dir.path());
    assert_eq!(records, expected);
    assert_eq!(replayed.torn.unwrap().bytes, (torn.len() - 2) as u64);
}

/// One record putting `value` under `key`.
fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode(&mut buf, [(key, Some(value))]);
    buf
}

/// Writes segment `n` of `dir`: `data`, then `zeros` bytes of zero-filled space.
fn write_segment(dir: &Path, n: u64, data: &[u8], zeros: usize) {
    let mut bytes = data.to_vec();
    bytes.resize(data.len() + zeros, 0);
    std::fs::write(segment_path(dir, n), bytes).unwrap();
}

/// The error replay stops with, and how many records it had applied by then.
fn refused(dir: &Path) -> (StorageError, usize) {
    let mut applied = 0;
    let err = replay(dir, |_| {
        applied += 1;
        Ok(())
    })
    .unwrap_err();
    (err, applied)
}

/// Where replay of `dir` stops, which must be in segment `n`, and why; it must have applied
/// nothing, not even the segments before it.
fn damage_in(dir: &Path, n: u64) -> (u64, LogDamage) {
    match refused(dir) {
        (
            StorageError::DamagedLog {
                segment,
                offset,
                damage,
            },
            0,
        ) => {
            assert_eq!(segment, segment_path(dir, n));
            (offset, damage)
        }
        (err, applied) => panic!("expected a damaged log, nothing applied: {applied}, {err}"),
    }
}

/// The records the tests build segments from.
fn records() -> [Vec<u8>; 4] {
    [
        record(b"1", b"one"),
        record(b"2", b"two"),
        record(b"3", &[b'3'; 300]),
        record(b"4", b"four"),
    ]
}

fn with_checksum_broken(record: &[u8]) -> Vec<u8> {
    let mut bad = record.to_vec();
    bad[HEADER + 2] ^= 0x10;
    bad
}

#[test]
fn every_shape_of_a_torn_tail_in_the_last_segment_is_dropped() {
    let [r1, r2, r3, _] = records();
    let kept = [r1, r2].concat();
    let shapes = [
        ("part of a header", r3[..2].to_vec()),
        ("a header alone", r3[..HEADER].to_vec()),
        (
            "a header and part of the payload",
            r3[..HEADER + 100].to_vec(),
        ),
        (
            "a whole record failing its checksum",
            with_checksum_broken(&r3),
        ),
    ];
    for (shape, tail) in shapes {
        let nonzero = tail.iter().rposition(|&b| b != 0).unwrap() + 1;
        // The write grew the file and stopped, or it landed in zero-filled space; a crash while
        // the store opened may have left the next, empty segment behind it.
        for (zeros, empty_next) in [(0, false), (4096, false), (0, true), (4096, true)] {
            let dir = tempfile::tempdir().unwrap();
            write_segment(dir.path(), 1, &[&kept[..], &tail].concat(), zeros);
            if empty_next {
                write_segment(dir.path(), 2, &[], zeros);
            }
            let (records, replayed) = replay_all(dir.path());
            let case = format!("{shape}, {zeros} zeros, empty next segment: {empty_next}");
            assert_eq!(
                records,
                vec![
                    vec![(b"1".to_vec(), Some(b"one".to_vec()))],
                    vec![(b"2".to_vec(), Some(b"two".to_vec()))],
                ],
                "{case}"
            );
            assert_eq!(
                replayed.torn,
                Some(TornTail {
                    segment: segment_path(dir.path(), 1),
                    offset: kept.len() as u64,
                    bytes: nonzero as u64,
                }),
                "{case}"
            );
        }
    }
}

#[test]
fn a_bad_record_with_more_data_after_it_stops_replay_before_anything_is_applied() {
    let [r1, r2, r3, r4] = records();
    let follows = [
        ("a whole record", r4),
        ("bytes that are no record", vec![0xAB; 20]),
    ];
    for (what, after) in follows {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, &r1, 4096);
        let data = [&r2[..], &with_checksum_broken(&r3), &after].concat();
        write_segment(dir.path(), 2, &data, 4096);
        let damage = LogDamage::DataAfter {
            fault: RecordFault::Checksum,
            data_end: data.len() as u64,
        };
        assert_eq!(
            damage_in(dir.path(), 2),
            (r2.len() as u64, damage),
            "{what}"
        );
        // Nothing changed, so a second start refuses the same way.
        assert_eq!(
            damage_in(dir.path(), 2),
            (r2.len() as u64, damage),
            "{what}"
        );
    }
}

#[test]
fn a_damaged_length_claiming_more_than_the_segment_holds_stops_replay() {
    let [r1, r2, r3, _] = records();
    let past_the_file = u32::MAX;
    let into_zeroed_space = (r2.len() - HEADER + r3.len() + 100) as u32;
    for (claimed, fault) in [
        (past_the_file, RecordFault::PayloadPastEnd { len: u32::MAX }),
        (into_zeroed_space, RecordFault::Checksum),
    ] {
        let mut bad = r2.clone();
        bad[..4].copy_from_slice(&claimed.to_le_bytes());
        let data = [&r1[..], &bad, &r3].concat();
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, &data, 4096);
        // The whole record after it shows the length is wrong, not the write cut short.
        let data_end = data.len() as u64;
        assert_eq!(
            damage_in(dir.path(), 1),
            (r1.len() as u64, LogDamage::DataAfter { fault, data_end }),
            "claimed {claimed}"
        );
    }
}

#[test]
fn a_bad_record_in_a_segment_before_the_last_stops_replay() {
    let [r1, r2, r3, r4] = records();
    let tails = [
        (
            "bytes that are no record, after a record boundary",
            vec![0xAB; 20],
        ),
        (
            "what would be a torn tail in the last segment",
            r3[..HEADER + 5].to_vec(),
        ),
        (
            "a whole record failing its checksum",
            with_checksum_broken(&r3),
        ),
    ];
    for (what, tail) in tails {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 7, &[&r1[..], &r2, &tail].concat(), 4096);
        write_segment(dir.path(), 8, &r4, 4096);
        let (offset, damage) = damage_in(dir.path(), 7);
        assert_eq!(offset, (r1.len() + r2.len()) as u64, "{what}");
        assert!(
            matches!(damage, LogDamage::LaterSegments { .. }),
            "{what}: {damage:?}"
        );
    }
}

#[test]
fn a_record_that_passes_its_checksum_but_does_not_decode_stops_replay() {
    let [r1, ..] = records();
    // Tag 7 is neither a put nor a delete; nothing a crash writes passes the checksum.
    let payload = [7u8, 0, 0, 0, 0];
    let mut bad = (payload.len() as u32).to_le_bytes().to_vec();
    bad.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bad.extend_from_slice(&payload);
    let dir = tempfile::tempdir().unwrap();
    write_segment(dir.path(), 1, &[&r1[..], &bad].concat(), 4096);
    assert_eq!(
        damage_in(dir.path(), 1),
        (r1.len() as u64, LogDamage::Undecodable)
    );
}

#[test]
fn a_missing_segment_stops_replay() {
    let [r1, _, r3, _] = records();
    let dir = tempfile::tempdir().unwrap();
    write_segment(dir.path(), 1, &r1, 0);
    write_segment(dir.path(), 3, &r3, 0);
    let (err, applied) = refused(dir.path());
    assert_eq!(applied, 0);
    match err {
        StorageError::MissingLogSegment { segment } => {
            assert_eq!(segment, segment_path(dir.path(), 2))
        }
        other => panic!("expected a missing segment, got {other}"),
    }
}

/// The operator reads where the damage is and how to start anyway; cutting the segment there,
/// as the message says, replays every record before it.
#[test]
fn the_error_names_the_segment_and_offset_and_cutting_there_replays_what_precedes() {
    let [r1, r2, r3, _] = records();
    let dir = tempfile::tempdir().unwrap();
    write_segment(
        dir.path(),
        1,
        &[&r1[..], &with_checksum_broken(&r2), &r3].concat(),
        4096,
    );
    let path = segment_path(dir.path(), 1);
    let message = refused(dir.path()).0.to_string();
    let offset = r1.len();
    for part in [
        format!("damaged at byte {offset} of {}", path.display()),
        "fails its checksum".to_owned(),
        "Restore the data folder from a backup, or contact support".to_owned(),
        format!("`truncate -s {offset} {}`", path.display()),
    ] {
        assert!(message.contains(&part), "{part:?} missing from: {message}");
    }

    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(offset as u64).unwrap();
    let (records, replayed) = replay_all(dir.path());
    assert_eq!(records, vec![vec![(b"1".to_vec(), Some(b"one".to_vec()))]]);
    assert_eq!(replayed.torn, None);
}

/// A segment holding one synced record, `first`, and an append of `pending` that failed after
/// its first `reached` bytes got into the file (a read-only handle stands in for ENOSPC or EIO).
fn failed_append(dir: &Path, pending: &[u8], reached: usize) -> (Wal, Vec<u8>) {
    let mut wal = Wal::create(dir, None).unwrap();
    let first = record(b"first", b"synced");
    wal.append_durable(&first).unwrap();
    let writable = wal.file.clone();
    wal.file = Arc::new(File::open(segment_path(dir, 1)).unwrap());
    assert!(wal.append_durable(pending).is_err());
    assert_eq!(wal.size, first.len() as u64);
    writable
        .write_all_at(&pending[..reached], wal.size)
        .unwrap();
    wal.file = writable;
    (wal, first)
}

/// A failed append is retried at the same offset, and zero-filling never writes into what it
/// may have left: a crash before the retry leaves a torn tail, not damage.
#[test]
fn a_failed_append_is_retried_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut pending = Vec::new();
    for n in 0..20u8 {
        encode(&mut pending, [(&[n][..], Some(&[n; 1000][..]))]);
    }
    // Past where zero-filling had got to.
    let reached = ZERO_CHUNK as usize + 4096;
    assert!(pending.len() > reached);
    let (mut wal, first) = failed_append(dir.path(), &pending, reached);
    while wal.zero_ahead().unwrap().is_some() {}
    let (records, replayed) = replay_all(dir.path());
    let torn = replayed.torn.expect("the failed append is a torn tail");
    assert_eq!(torn.offset + torn.bytes, (first.len() + reached) as u64);
    assert!(records.len() > 1, "the whole records it wrote replay");

    // The retry, with what arrived meanwhile, writes over it.
    let mut retry = pending.clone();
    encode(&mut retry, [(&b"later"[..], Some(&b"write"[..]))]);
    wal.append_durable(&retry).unwrap();
    let (records, replayed) = replay_all(dir.path());
    assert_eq!(records.len(), 22);
    assert_eq!(replayed.torn, None);
}

/// A checkpoint that rotates while the flusher waits to retry a failed append leaves a closed
/// segment that ends at its last whole record, and the retry goes to the new one.
#[test]
fn a_segment_rotated_after_a_failed_append_ends_at_its_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let pending = record(b"second", b"retried");
    let (mut wal, _) = failed_append(dir.path(), &pending, HEADER + 2);
    wal.rotate().unwrap();
    wal.append_durable(&pending).unwrap();
    let (records, replayed) = replay_all(dir.path());
    assert_eq!(
        records,
        vec![
            vec![(b"first".to_vec(), Some(b"synced".to_vec()))],
            vec![(b"second".to_vec(), Some(b"retried".to_vec()))],
        ]
    );
    assert_eq!(replayed.torn, None);
}
