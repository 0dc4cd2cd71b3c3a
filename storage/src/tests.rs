//! The store as its users use it: batches, scans, counters, durability and recovery.

use super::*;

/// A user's table set, as the homeserver, the toolkit and the bridge declare theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Global,
    Users,
    Tokens,
    Timeline,
}

impl TableSet for Table {
    const STORE: &'static str = "test";
    const ALL: &'static [Self] = &[Table::Global, Table::Users, Table::Tokens, Table::Timeline];

    fn name(self) -> &'static str {
        match self {
            Table::Global => "global",
            Table::Users => "users",
            Table::Tokens => "tokens",
            Table::Timeline => "timeline",
        }
    }
}

type Store = super::Store<Table>;
type Batch = super::Batch<Table>;

#[tokio::test]
async fn batch_spans_tables_and_becomes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8).unwrap();
    let mut batch = Batch::new();
    batch.put(Table::Users, b"a".to_vec(), b"1".to_vec());
    batch.put(Table::Tokens, b"t".to_vec(), b"2".to_vec());
    store.write_durable(batch).await.unwrap();
    assert_eq!(
        store.get(Table::Users, b"a").unwrap().unwrap().as_ref(),
        b"1"
    );
    assert_eq!(
        store.get(Table::Tokens, b"t").unwrap().unwrap().as_ref(),
        b"2"
    );
    drop(store);
    // Reopen: what `durable` acknowledged is there.
    let store = Store::open(dir.path(), 8).unwrap();
    assert_eq!(
        store.get(Table::Tokens, b"t").unwrap().unwrap().as_ref(),
        b"2"
    );
}

/// [`copy_crash_image`] of a running store gives what `kill -9` leaves on disk: sled without
/// the writes still in the overlay, and the log.
#[tokio::test]
async fn a_crash_image_has_every_durable_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("live"), 8).unwrap();
    for n in 0u64..50 {
        let mut batch = Batch::new();
        batch.put(Table::Users, n.to_be_bytes().to_vec(), n.to_string());
        if n > 0 {
            batch.delete(Table::Users, (n - 1).to_be_bytes().to_vec());
        }
        store.write_durable(batch).await.unwrap();
    }
    assert_eq!(store.increment(Table::Global, b"n", 7).unwrap(), 7);
    let ticket = store
        .insert_if_absent(Table::Global, b"once", b"first")
        .unwrap()
        .expect("absent");
    store.durable(ticket).await.unwrap();
    assert_eq!(
        store
            .insert_if_absent(Table::Global, b"once", b"again")
            .unwrap(),
        None
    );

    copy_crash_image(&dir.path().join("live"), &dir.path().join("crash")).unwrap();
    let recovered = Store::open(&dir.path().join("crash"), 8).unwrap();
    let users: Vec<(Slice, Slice)> = recovered
        .scan_prefix(Table::Users, b"")
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(users.len(), 1, "every delete and put replayed in order");
    assert_eq!(users[0].0.as_ref(), 49u64.to_be_bytes());
    assert_eq!(users[0].1.as_ref(), b"49");
    assert_eq!(
        recovered
            .get(Table::Global, b"n")
            .unwrap()
            .unwrap()
            .as_ref(),
        7u64.to_be_bytes()
    );
    assert_eq!(
        recovered
            .get(Table::Global, b"once")
            .unwrap()
            .unwrap()
            .as_ref(),
        b"first"
    );
}

/// Checkpoints (sled flushed, old log segments deleted) run beside the writers; a crash image
/// taken after several of them still has every write, the newest value of each key winning.
#[tokio::test]
async fn checkpoints_keep_every_write_and_drop_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let store = Store::open(&live, 8).unwrap();
    let value = |round: u64, key: u64| format!("{round}:{key}:{}", "x".repeat(1000));
    // 16 log segments' worth: 1,000 writes of ~1 KiB over 100 keys.
    for round in 0u64..10 {
        for key in 0u64..100 {
            let mut batch = Batch::new();
            batch.put(Table::Users, key.to_be_bytes().to_vec(), value(round, key));
            store.write_durable(batch).await.unwrap();
        }
    }
    let log_bytes = || wal::Wal::size_on_disk(&live.join("wal")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log_bytes() > 2 * wal::SEGMENT_BYTES {
        assert!(
            std::time::Instant::now() < deadline,
            "the log still holds {} bytes",
            log_bytes()
        );
        tokio::time::sleep(flusher::SLED_APPLY_EVERY).await;
    }

    copy_crash_image(&live, &dir.path().join("crash")).unwrap();
    let recovered = Store::open(&dir.path().join("crash"), 8).unwrap();
    let users: Vec<(Slice, Slice)> = recovered
        .scan_prefix(Table::Users, b"")
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(users.len(), 100);
    for (key, (k, v)) in users.iter().enumerate() {
        assert_eq!(k.as_ref(), (key as u64).to_be_bytes());
        assert_eq!(v.as_ref(), value(9, key as u64).as_bytes());
    }
}

#[tokio::test]
async fn a_clean_close_keeps_the_newest_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8).unwrap();
    let mut batch = Batch::new();
    batch.put(Table::Users, b"k".to_vec(), b"old".to_vec());
    // Synced; the applier hands it to sled only up to `flusher::SLED_APPLY_EVERY` later.
    store.write_durable(batch).await.unwrap();
    let mut batch = Batch::new();
    batch.put(Table::Users, b"k".to_vec(), b"new".to_vec());
    let _not_awaited = store.write(batch).unwrap();
    drop(store);
    let store = Store::open(dir.path(), 8).unwrap();
    assert_eq!(
        store.get(Table::Users, b"k").unwrap().unwrap().as_ref(),
        b"new"
    );
}

#[tokio::test]
async fn reads_see_writes_before_and_after_they_reach_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8).unwrap();
    let mut batch = Batch::new();
    for n in [1u64, 3, 5] {
        batch.put(Table::Timeline, Key::new().u64(1).u64(n).into_vec(), vec![]);
    }
    store.write_durable(batch).await.unwrap();
    let positions = |store: &Store| -> Vec<u64> {
        store
            .range(
                Table::Timeline,
                &Key::new().u64(1).u64(0).into_vec(),
                &Key::new().u64(1).u64(u64::MAX).into_vec(),
            )
            .rev()
            .map(|r| keys::decode_u64(&r.unwrap().0[8..]))
            .collect()
    };
    // Once sled has them (the applier applies within `flusher::SLED_APPLY_EVERY` of a sync)...
    tokio::time::sleep(flusher::SLED_APPLY_EVERY * 4).await;
    let mut batch = Batch::new();
    batch.put(Table::Timeline, Key::new().u64(1).u64(4).into_vec(), vec![]);
    batch.delete(Table::Timeline, Key::new().u64(1).u64(3).into_vec());
    let _ticket = store.write(batch).unwrap();
    // ...a write still pending lies over them at once.
    assert_eq!(positions(&store), vec![5, 4, 1]);
    assert!(
        !store
            .contains(Table::Timeline, &Key::new().u64(1).u64(3).into_vec())
            .unwrap()
    );
    tokio::time::sleep(flusher::SLED_APPLY_EVERY * 8).await;
    assert_eq!(positions(&store), vec![5, 4, 1]);
}

#[tokio::test]
async fn counters_increment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8).unwrap();
    assert_eq!(store.increment(Table::Global, b"n", 1).unwrap(), 1);
    assert_eq!(store.increment(Table::Global, b"n", 5).unwrap(), 6);
}

#[tokio::test]
async fn prefix_scans_are_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8).unwrap();
    let mut batch = Batch::new();
    for n in [3u64, 1, 2] {
        batch.put(Table::Timeline, Key::new().u64(7).u64(n).into_vec(), vec![]);
    }
    batch.put(Table::Timeline, Key::new().u64(8).u64(0).into_vec(), vec![]);
    store.write_durable(batch).await.unwrap();
    let got: Vec<u64> = store
        .scan_prefix(Table::Timeline, &Key::new().u64(7).into_vec())
        .map(|r| keys::decode_u64(&r.unwrap().0[8..]))
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
}

#[tokio::test]
async fn take_removes_and_returns_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8).unwrap();
    let mut batch = Batch::new();
    batch.put(Table::Users, b"k".to_vec(), b"v".to_vec());
    store.write_durable(batch).await.unwrap();
    let (value, ticket) = store.take(Table::Users, b"k").unwrap().expect("present");
    assert_eq!(value.as_ref(), b"v");
    store.durable(ticket).await.unwrap();
    assert_eq!(store.take(Table::Users, b"k").unwrap(), None);
    drop(store);
    let store = Store::open(dir.path(), 8).unwrap();
    assert_eq!(store.get(Table::Users, b"k").unwrap(), None);
}

/// Waiting on the latest ticket covers writes whose own tickets were dropped, as a "flush
/// everything" does.
#[tokio::test]
async fn the_latest_ticket_covers_every_earlier_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("live"), 8).unwrap();
    assert_eq!(store.latest_ticket(), WriteTicket(0));
    for n in 0u64..10 {
        let mut batch = Batch::new();
        batch.put(Table::Users, n.to_be_bytes().to_vec(), b"x".to_vec());
        let _ = store.write(batch).unwrap();
    }
    assert_eq!(store.latest_ticket(), WriteTicket(10));
    store.durable(store.latest_ticket()).await.unwrap();
    // The log on disk has them all: a crash image taken now replays them.
    let crash = dir.path().join("crash");
    copy_crash_image(&dir.path().join("live"), &crash).unwrap();
    let recovered = Store::open(&crash, 8).unwrap();
    assert_eq!(recovered.scan_prefix(Table::Users, b"").count(), 10);
}

/// Two table sets, each in a folder of its own, as the homeserver and the bridge run side by
/// side in one process.
#[tokio::test]
async fn stores_of_different_table_sets_are_independent() {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Other {
        Inbox,
    }
    impl TableSet for Other {
        const STORE: &'static str = "other";
        const ALL: &'static [Self] = &[Other::Inbox];
        fn name(self) -> &'static str {
            "inbox"
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a"), 8).unwrap();
    let other = super::Store::<Other>::open(&dir.path().join("b"), 8).unwrap();
    let mut batch = super::Batch::new();
    batch.put(Other::Inbox, b"1".to_vec(), b"body".to_vec());
    other.write_durable(batch).await.unwrap();
    // `Global` has the same prefix (0) in the other store, which holds it apart.
    assert_eq!(store.get(Table::Global, b"1").unwrap(), None);
    assert_eq!(
        other.get(Other::Inbox, b"1").unwrap().unwrap().as_ref(),
        b"body"
    );
}

#[test]
#[should_panic(expected = "is twice in twice's TableSet::ALL")]
fn a_table_set_listing_a_table_twice_is_refused() {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Twice {
        A,
        B,
    }
    impl TableSet for Twice {
        const STORE: &'static str = "twice";
        const ALL: &'static [Self] = &[Twice::A, Twice::B, Twice::A];
        fn name(self) -> &'static str {
            "t"
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let _ = super::Store::<Twice>::open(dir.path(), 8);
}

/// Only the last operation on a key reaches sled, and sled ends as if all had run in order.
#[test]
fn sled_gets_the_last_operation_of_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    db.insert(b"kept", b"old").unwrap();
    db.insert(b"deleted", b"old").unwrap();
    let ops: Vec<(&[u8], Option<&[u8]>)> = vec![
        (b"kept", Some(b"1")),
        (b"queued", Some(b"job")),
        (b"deleted", None),
        (b"kept", Some(b"2")),
        (b"queued", None),
        (b"back", None),
        (b"back", Some(b"again")),
    ];
    apply_to_sled(&db, ops.into_iter()).unwrap();
    let all: Vec<(Vec<u8>, Vec<u8>)> = db
        .iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect();
    assert_eq!(
        all,
        vec![
            (b"back".to_vec(), b"again".to_vec()),
            (b"kept".to_vec(), b"2".to_vec()),
        ]
    );
}

/// A value of about 1 KiB that ends in a non-zero byte, so a segment's data ends where its last
/// non-zero byte does.
fn kilobyte(n: u64) -> Vec<u8> {
    format!("{n}:{}", "x".repeat(1000)).into_bytes()
}

/// Writes one batch per key, each waited for: acknowledged, as a client would be told.
async fn write_acknowledged(store: &Store, keys: std::ops::Range<u64>) {
    for n in keys {
        let mut batch = Batch::new();
        batch.put(Table::Users, n.to_be_bytes().to_vec(), kilobyte(n));
        store.write_durable(batch).await.unwrap();
    }
}

/// The keys of `Users`, checking each one's value.
fn acknowledged_keys(store: &Store) -> Vec<u64> {
    store
        .scan_prefix(Table::Users, b"")
        .map(|entry| {
            let (k, v) = entry.unwrap();
            let n = keys::decode_u64(&k);
            assert_eq!(v.as_ref(), kilobyte(n), "value of {n}");
            n
        })
        .collect()
}

/// The log segments in a store's folder, oldest first.
fn log_segments(store_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(store_dir.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    found.sort();
    found
}

/// Just past the last non-zero byte of a segment file: the end of its data.
fn data_end(segment: &Path) -> usize {
    let bytes = std::fs::read(segment).unwrap();
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1)
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0xFF;
    std::fs::write(path, bytes).unwrap();
}

/// Several segments are left on disk when a crash comes between a checkpoint's sled flush and
/// its deleting the segments it covers (or when deleting fails). The test builds that state from
/// three lives of the store, each ended by a crash: every open replays the log and checkpoints
/// it away, and the test puts back each segment the way the crash left it. Damage in the middle
/// one stops the open, twice the same way (nothing was applied), until the segment is repaired;
/// then every acknowledged batch is there.
#[tokio::test]
async fn damage_in_a_middle_segment_stops_open_until_it_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let life = |n: u64| dir.path().join(format!("life{n}"));
    let mut left_by_crashes = Vec::new();
    for n in 0..3u64 {
        if n > 0 {
            let [segment] = &log_segments(&life(n))[..] else {
                panic!("a crash image with one segment");
            };
            left_by_crashes.push((segment.clone(), std::fs::read(segment).unwrap()));
        }
        let store = Store::open(&life(n), 8).unwrap();
        // Less than a segment (64 KiB in tests) per life: no checkpoint runs while it lives.
        write_acknowledged(&store, n * 20..(n + 1) * 20).await;
        copy_crash_image(&life(n), &life(n + 1)).unwrap();
    }
    let last_life = life(3);
    for (segment, bytes) in &left_by_crashes {
        let name = segment.file_name().unwrap();
        std::fs::write(last_life.join("wal").join(name), bytes).unwrap();
    }
    let segments = log_segments(&last_life);
    assert_eq!(segments.len(), 3, "{segments:?}");

    let middle = &segments[1];
    let at = data_end(middle) / 2;
    flip_byte(middle, at);
    let refusal = match Store::open(&last_life, 8) {
        Err(e @ StorageError::DamagedLog { .. }) => e,
        Err(other) => panic!("expected a damaged log, got {other}"),
        Ok(_) => panic!("a log damaged in its middle segment was replayed"),
    };
    let StorageError::DamagedLog {
        segment,
        offset,
        damage,
    } = &refusal
    else {
        unreachable!()
    };
    assert_eq!(segment, middle);
    assert!(
        *offset as usize <= at && at - (*offset as usize) < 1100,
        "the record holding byte {at} starts at {offset}"
    );
    assert!(matches!(damage, LogDamage::DataAfter { .. }), "{damage:?}");
    let again = Store::open(&last_life, 8).err().expect("refused again");
    assert_eq!(again.to_string(), refusal.to_string());
    assert_eq!(
        log_segments(&last_life),
        segments,
        "nothing was checkpointed"
    );

    flip_byte(middle, at);
    let store = Store::open(&last_life, 8).unwrap();
    assert_eq!(acknowledged_keys(&store), (0..60).collect::<Vec<_>>());
    assert_eq!(
        log_segments(&last_life).len(),
        1,
        "replayed and checkpointed"
    );
}

/// A crash in the middle of an append leaves part of a record after the last acknowledged one:
/// the store opens with every acknowledged batch, whatever part of the record reached the disk
/// and whether the file ends there or zero-filled space follows. Damage in the middle of the
/// same segment, with records after it, is refused instead.
#[tokio::test]
async fn a_torn_tail_of_the_last_segment_keeps_every_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let store = Store::open(&live, 8).unwrap();
    write_acknowledged(&store, 0..20).await;
    let crash = dir.path().join("crash");
    copy_crash_image(&live, &crash).unwrap();
    drop(store);
    let [segment] = &log_segments(&crash)[..] else {
        panic!("one segment");
    };
    let end = data_end(segment);
    // The batch whose append the crash cut short: nobody was told it was stored.
    let mut torn = Vec::new();
    wal::encode(
        &mut torn,
        [(
            &full_key(Table::Users, &99u64.to_be_bytes())[..],
            Some(&kilobyte(99)[..]),
        )],
    );

    for (case, cut) in [3, 8, 500, torn.len() - 1].into_iter().enumerate() {
        for file_ends_there in [false, true] {
            let image = dir.path().join(format!("torn-{case}-{file_ends_there}"));
            copy_crash_image(&crash, &image).unwrap();
            let path = image.join("wal").join(segment.file_name().unwrap());
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, &torn[..cut], end as u64).unwrap();
            if file_ends_there {
                file.set_len((end + cut) as u64).unwrap();
            }
            let store = Store::open(&image, 8)
                .unwrap_or_else(|e| panic!("{cut} bytes of a record torn: {e}"));
            assert_eq!(
                acknowledged_keys(&store),
                (0..20).collect::<Vec<_>>(),
                "{cut} bytes torn, file ends there: {file_ends_there}"
            );
        }
    }

    let image = dir.path().join("damaged");
    copy_crash_image(&crash, &image).unwrap();
    let path = image.join("wal").join(segment.file_name().unwrap());
    flip_byte(&path, end / 2);
    match Store::open(&image, 8) {
        Err(StorageError::DamagedLog {
            segment,
            damage: LogDamage::DataAfter { .. },
            ..
        }) => assert_eq!(segment, path),
        Err(other) => panic!("expected damage with data after it, got {other}"),
        Ok(_) => panic!("a segment damaged in its middle was replayed"),
    }
}
