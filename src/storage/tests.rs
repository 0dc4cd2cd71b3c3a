//! The store as services use it: batches, scans, counters, durability and recovery.

use super::*;

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

/// Copying the folder of a running store gives what `kill -9` leaves on disk: sled without
/// the writes still in the overlay, and the log.
#[tokio::test]
async fn a_crash_image_has_every_durable_write() {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }
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

    copy_dir(&dir.path().join("live"), &dir.path().join("crash"));
    let recovered = Store::open(&dir.path().join("crash"), 8).unwrap();
    let users: Vec<(IVec, IVec)> = recovered
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

#[tokio::test]
async fn a_clean_close_keeps_the_newest_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8).unwrap();
    let mut batch = Batch::new();
    batch.put(Table::Users, b"k".to_vec(), b"old".to_vec());
    // Synced; the flusher hands it to sled only up to `flusher::SLED_APPLY_EVERY` later.
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
    // Once sled has them (the flusher applies within `flusher::SLED_APPLY_EVERY` of a sync)...
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
