//! Backups of stores that keep being written, restored and compared with what was acknowledged.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use super::*;
use crate::{Batch, copy_crash_image, keys};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Left,
    Right,
    Count,
}

impl TableSet for Table {
    const STORE: &'static str = "backup-test";
    const ALL: &'static [Self] = &[Table::Left, Table::Right, Table::Count];

    fn name(self) -> &'static str {
        match self {
            Table::Left => "left",
            Table::Right => "right",
            Table::Count => "count",
        }
    }
}

type TestStore = Store<Table>;

/// Batch `i`: a key in each table and the counter, so a half-applied batch shows.
fn batch(i: u64) -> Batch<Table> {
    let mut b = Batch::new();
    let value = vec![(i % 251) as u8; 300];
    b.put(Table::Left, i.to_be_bytes(), value.clone());
    b.put(Table::Right, i.to_be_bytes(), value);
    b.put(Table::Count, b"n".to_vec(), (i + 1).to_be_bytes());
    // Something written and removed again, as queues do.
    if i > 0 {
        b.delete(Table::Left, (i - 1).to_be_bytes());
    }
    b
}

/// One store's part of a backup: its image chunks and its log segments (name, bytes).
type TakenStore = (Vec<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// Takes a backup as slowly as a large store's: after each small chunk of the image it waits
/// until the writer has acknowledged a few more batches, so that writes land in the log (beyond
/// a 64 KiB segment, in tests) and reach sled while the image is read, however fast the disk.
fn take(sources: &[BackupSource], acked: &AtomicU64) -> Vec<TakenStore> {
    let snapshot = Snapshot::begin(sources).unwrap();
    let images: Vec<Vec<Vec<u8>>> = (0..sources.len())
        .map(|i| {
            snapshot
                .image(i, 4096)
                .map(|c| {
                    wait_for(acked, acked.load(Ordering::SeqCst) + 5);
                    c.unwrap()
                })
                .collect()
        })
        .collect();
    let cut = snapshot.cut().unwrap();
    images
        .into_iter()
        .zip(cut)
        .map(|(image, parts)| {
            let logs = parts
                .iter()
                .map(|p| {
                    let mut bytes = Vec::new();
                    p.open().unwrap().read_to_end(&mut bytes).unwrap();
                    assert_eq!(bytes.len() as u64, p.len);
                    (p.name.clone(), bytes)
                })
                .collect();
            (image, logs)
        })
        .collect()
}

fn restore(taken: &TakenStore, path: &Path) -> TestStore {
    let mut restore = StoreRestore::create(path, 8).unwrap();
    for chunk in &taken.0 {
        restore.image(chunk.clone()).unwrap();
    }
    for (name, bytes) in &taken.1 {
        restore.log_segment(name, &mut bytes.as_slice()).unwrap();
    }
    restore.finish().unwrap();
    assert!(
        wal::segments(&path.join("wal")).unwrap().is_empty(),
        "the restored log was replayed and checkpointed"
    );
    TestStore::open(path, 8).unwrap()
}

/// Batches 0, 1, … of [`batch`] while `stop` is unset, each written to every store in turn
/// and waited for before the next store's; `acked` counts the batches done.
fn writer(
    stores: Vec<TestStore>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            for store in &stores {
                runtime.block_on(store.write_durable(batch(i))).unwrap();
            }
            i += 1;
            acked.store(i, Ordering::SeqCst);
        }
    })
}

/// Waits until the writer has acknowledged `n` batches.
fn wait_for(acked: &AtomicU64, n: u64) {
    while acked.load(Ordering::SeqCst) < n {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The state after batches 0..n: the counter, and each table's keys.
fn check_whole(store: &TestStore) -> u64 {
    let n = store
        .get(Table::Count, b"n")
        .unwrap()
        .map_or(0, |v| keys::decode_u64(&v));
    let right: Vec<u64> = store
        .scan_prefix(Table::Right, b"")
        .map(|e| keys::decode_u64(&e.unwrap().0))
        .collect();
    assert_eq!(
        right,
        (0..n).collect::<Vec<_>>(),
        "every batch whole, none after"
    );
    let left: Vec<u64> = store
        .scan_prefix(Table::Left, b"")
        .map(|e| keys::decode_u64(&e.unwrap().0))
        .collect();
    let want: Vec<u64> = n.checked_sub(1).into_iter().collect();
    assert_eq!(left, want, "deletes replayed too");
    n
}

/// A backup taken while a writer keeps going, across many log segments (64 KiB in tests) and
/// sled applier rounds, restores to one instant: every batch acknowledged before the backup
/// began, none half there.
#[test]
fn a_backup_under_writes_restores_whole_batches_and_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::open(&dir.path().join("live"), 8).unwrap();
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let writing = writer(vec![store.clone()], stop.clone(), acked.clone());
    wait_for(&acked, 300);
    let mut restored_counts = Vec::new();
    for round in 0..3 {
        let before = acked.load(Ordering::SeqCst);
        let taken = take(&[store.backup_source()], &acked);
        let after = acked.load(Ordering::SeqCst);
        let logged: usize = taken[0].1.iter().map(|(_, bytes)| bytes.len()).sum();
        assert!(
            logged as u64 > wal::SEGMENT_BYTES,
            "the backup outlived a log segment's worth of writes: {logged} bytes"
        );
        let restored = restore(&taken[0], &dir.path().join(format!("restored-{round}")));
        let n = check_whole(&restored);
        assert!(
            n >= before,
            "acknowledged {before} before the backup, restored {n}"
        );
        assert!(
            n <= after + 1,
            "restored {n}, only {after} written by the cut"
        );
        restored_counts.push(n);
    }
    stop.store(true, Ordering::SeqCst);
    writing.join().unwrap();
    assert!(restored_counts.windows(2).all(|w| w[0] <= w[1]));
    // Once the snapshot is gone, checkpoints resume: the log shrinks back to a segment or two.
    let written = acked.load(Ordering::SeqCst);
    for i in written..written + 400 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(store.write_durable(batch(i))).unwrap();
    }
    let segments = || wal::segments(&dir.path().join("live/wal")).unwrap().len();
    for _ in 0..3000 {
        if segments() <= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(segments() <= 2, "{} segments", segments());
}

/// Two stores written in causal order (the second only after the first's write is durable) are
/// cut at one instant: the backup never holds a second-store write without its first.
#[test]
fn stores_are_cut_at_one_instant() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestStore::open(&dir.path().join("first"), 8).unwrap();
    let second = TestStore::open(&dir.path().join("second"), 8).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writing = writer(
        vec![first.clone(), second.clone()],
        stop.clone(),
        acked.clone(),
    );
    wait_for(&acked, 50);
    for round in 0..3 {
        // The first store first: cut one after the other, the second's cut could then hold a
        // write whose first-store half came after the first's cut.
        let taken = take(&[first.backup_source(), second.backup_source()], &acked);
        let restored_first = restore(&taken[0], &dir.path().join(format!("f{round}")));
        let restored_second = restore(&taken[1], &dir.path().join(format!("s{round}")));
        let (s, f) = (check_whole(&restored_second), check_whole(&restored_first));
        assert!(s > 0);
        assert!(f >= s && f <= s + 1, "first store {f}, second {s}");
    }
    stop.store(true, Ordering::SeqCst);
    writing.join().unwrap();
}

#[test]
fn a_folder_with_an_open_store_is_locked_and_restores_refuse_a_store() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        FolderLock::try_lock(dir.path()).is_ok(),
        "no store, no lock needed"
    );
    let store = TestStore::open(dir.path(), 8).unwrap();
    assert!(matches!(
        FolderLock::try_lock(dir.path()),
        Err(LockError::InUse(_))
    ));
    assert!(StoreRestore::create(dir.path(), 8).is_err());
    drop(store);
    // The closing store's threads let go of sled shortly after.
    let mut lock = FolderLock::try_lock(dir.path());
    for _ in 0..50 {
        if lock.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        lock = FolderLock::try_lock(dir.path());
    }
    let _lock = lock.expect("free once the store is closed");
    match TestStore::open(dir.path(), 8) {
        Err(StorageError::Sled(_)) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("opened a store whose folder is locked"),
    }
}

#[test]
fn a_damaged_image_or_segment_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut restore = StoreRestore::create(dir.path(), 8).unwrap();
    assert!(restore.log_segment("../evil.log", &mut &b""[..]).is_err());
    assert!(restore.log_segment("1.log.tmp", &mut &b""[..]).is_err());
    let mut chunk = Vec::new();
    wal::push_bytes(&mut chunk, b"key");
    wal::push_bytes(&mut chunk, b"value");
    restore.image(chunk.clone()).unwrap();
    // Seen by the insert thread: the error comes with a later chunk or at the end.
    let cut = chunk[..chunk.len() - 1].to_vec();
    let refused = restore
        .image(cut)
        .and_then(|()| restore.image(chunk))
        .and_then(|()| restore.finish());
    assert!(
        matches!(refused, Err(StorageError::Corrupt { .. })),
        "{refused:?}"
    );
}

/// A process killed while a backup holds the log loses nothing acknowledged: the segments the
/// backup kept are replayed like any others.
#[test]
fn a_crash_during_a_backup_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let store = TestStore::open(&live, 8).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for i in 0..100 {
        runtime.block_on(store.write_durable(batch(i))).unwrap();
    }
    let snapshot = Snapshot::begin(&[store.backup_source()]).unwrap();
    let _image: Vec<_> = snapshot.image(0, 4096).collect();
    // Several segments' worth while checkpoints are held.
    for i in 100..1000 {
        runtime.block_on(store.write_durable(batch(i))).unwrap();
    }
    copy_crash_image(&live, &dir.path().join("crash")).unwrap();
    drop(snapshot);
    let recovered = TestStore::open(&dir.path().join("crash"), 8).unwrap();
    assert_eq!(check_whole(&recovered), 1000);
}
