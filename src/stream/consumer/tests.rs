//! The consumer's error policy and durability, against a real store and stream.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use parking_lot::Mutex;

use super::*;
use crate::storage::StorageError;

const CURSOR: &[u8] = b"test_consumer";
const QUICK: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));

fn store_failure() -> Error {
    Error::Storage(StorageError::Log(std::io::Error::other("disk on fire")))
}

/// Every position is an event whose value is its position. The first `failures` reads fail.
struct Numbers {
    failures: AtomicUsize,
}

impl Numbers {
    fn failing(failures: usize) -> Self {
        Numbers {
            failures: AtomicUsize::new(failures),
        }
    }
}

impl Source for Numbers {
    type Event = u64;

    fn read(&self, after: u64, upto: u64, limit: usize) -> Result<Vec<(u64, u64)>> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(store_failure());
        }
        Ok((after + 1..=upto).take(limit).map(|p| (p, p)).collect())
    }
}

/// What the handler did, for the test to read.
#[derive(Default)]
struct Log {
    handled: Vec<u64>,
    commits: Vec<u64>,
}

/// Records what it handles; fails, panics or saves durably where it is told to.
struct Recorder<'a> {
    log: Arc<Mutex<Log>>,
    cursor: &'a NamedCursor<'a>,
    store: &'a Store,
    fail_at: Option<u64>,
    panic_at: Option<u64>,
    /// Positions whose first handling (commit ending there) hits a store error.
    store_fails_at: Vec<u64>,
    commit_fails_at: Vec<u64>,
    /// A commit ending here saves the cursor durably.
    save_at: Option<u64>,
}

impl<'a> Recorder<'a> {
    fn new(log: &Arc<Mutex<Log>>, cursor: &'a NamedCursor<'a>, store: &'a Store) -> Self {
        Recorder {
            log: log.clone(),
            cursor,
            store,
            fail_at: None,
            panic_at: None,
            store_fails_at: Vec::new(),
            commit_fails_at: Vec::new(),
            save_at: None,
        }
    }
}

impl Handler for Recorder<'_> {
    type Event = u64;

    async fn event(&mut self, pos: u64, event: u64) -> Result<()> {
        assert_eq!(pos, event);
        if let Some(i) = self.store_fails_at.iter().position(|p| *p == pos) {
            self.store_fails_at.remove(i);
            return Err(store_failure());
        }
        if self.fail_at == Some(pos) {
            return Err(Error::internal("this event is bad"));
        }
        if self.panic_at == Some(pos) {
            panic!("this event is worse");
        }
        self.log.lock().handled.push(pos);
        Ok(())
    }

    async fn commit(&mut self, upto: u64) -> Result<Commit> {
        if let Some(i) = self.commit_fails_at.iter().position(|p| *p == upto) {
            self.commit_fails_at.remove(i);
            return Err(store_failure());
        }
        self.log.lock().commits.push(upto);
        if self.save_at != Some(upto) {
            return Ok(Commit::Lazy);
        }
        let mut batch = Batch::new();
        self.cursor.put(&mut batch, upto);
        self.store.write_durable(batch).await?;
        Ok(Commit::Saved)
    }
}

struct World {
    dir: tempfile::TempDir,
    store: Store,
    stream: Stream,
}

impl World {
    fn new() -> Self {
        Self::open(tempfile::tempdir().unwrap())
    }

    fn open(dir: tempfile::TempDir) -> Self {
        let store = Store::open(dir.path(), 8).unwrap();
        World {
            stream: Stream::open(store.clone()).unwrap(),
            store,
            dir,
        }
    }

    /// The process ends and starts again on the same data.
    fn restart(self) -> Self {
        let World { dir, store, stream } = self;
        drop((stream, store));
        Self::open(dir)
    }

    async fn append(&self, events: u64) {
        for _ in 0..events {
            self.stream.commit(|_| Batch::new()).await.unwrap();
        }
    }

    fn cursor(&self) -> NamedCursor<'_> {
        NamedCursor::new(&self.store, Table::Global, CURSOR)
    }

    fn consumer<'a>(
        &'a self,
        notifier: &'a Notifier,
        cursor: &'a NamedCursor<'a>,
    ) -> Consumer<'a, &'a NamedCursor<'a>> {
        Consumer::new("test", &self.stream, notifier, cursor).retry(QUICK)
    }
}

/// Runs `consumer` until `done` holds (or a generous deadline passes, so that a failing
/// test fails instead of hanging), then stops it through `notifier`.
async fn run_until<H: Handler<Event = u64>>(
    consumer: Consumer<'_, &NamedCursor<'_>>,
    notifier: &Notifier,
    from: u64,
    source: &Numbers,
    handler: H,
    done: impl Fn() -> bool,
) {
    let watch = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        notifier.stop();
    };
    let ran = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::join(consumer.run(from, source, handler), watch),
    )
    .await;
    assert!(ran.is_ok(), "the consumer did not get there");
}

#[tokio::test]
async fn a_failing_or_panicking_event_is_skipped_and_the_cursor_passes_it() {
    let world = World::new();
    let cursor = world.cursor();
    let notifier = Notifier::default();
    let consumer = world
        .consumer(&notifier, &cursor)
        .save_interval(Duration::ZERO);
    let from = consumer.start().await.unwrap();
    assert_eq!(from, 0);
    world.append(10).await;
    let log = Arc::default();
    let mut handler = Recorder::new(&log, &cursor, &world.store);
    handler.fail_at = Some(4);
    handler.panic_at = Some(7);
    let source = Numbers::failing(0);
    run_until(consumer, &notifier, from, &source, handler, || {
        cursor.load().unwrap() == Some(10)
    })
    .await;
    assert_eq!(log.lock().handled, [1, 2, 3, 5, 6, 8, 9, 10]);
}

#[tokio::test]
async fn a_crash_between_saves_replays_from_the_saved_cursor() {
    let world = World::new();
    world.append(2).await;
    {
        let cursor = world.cursor();
        let notifier = Notifier::default();
        // A new consumer starts at the head, durably.
        let from = world.consumer(&notifier, &cursor).start().await.unwrap();
        assert_eq!((from, cursor.load().unwrap()), (2, Some(2)));
        world.append(6).await;
        let log: Arc<Mutex<Log>> = Arc::default();
        let mut handler = Recorder::new(&log, &cursor, &world.store);
        // Batches 3..=5 and 6..=8: the first saves the cursor with its writes, the second
        // leaves it to a lazy save that is not due for an hour.
        handler.save_at = Some(5);
        let consumer = world
            .consumer(&notifier, &cursor)
            .batch_size(3)
            .save_interval(Duration::from_secs(3600));
        let source = Numbers::failing(0);
        run_until(consumer, &notifier, from, &source, handler, || {
            log.lock().commits.len() == 2
        })
        .await;
        assert_eq!(log.lock().handled, [3, 4, 5, 6, 7, 8]);
        assert_eq!(log.lock().commits, [5, 8]);
    }
    // The process dies here: the next run starts from the saved cursor and sees 6..=8 again.
    let world = world.restart();
    let cursor = world.cursor();
    let notifier = Notifier::default();
    let consumer = world.consumer(&notifier, &cursor);
    let from = consumer.start().await.unwrap();
    assert_eq!(from, 5);
    let log: Arc<Mutex<Log>> = Arc::default();
    let handler = Recorder::new(&log, &cursor, &world.store);
    let source = Numbers::failing(0);
    run_until(consumer, &notifier, from, &source, handler, || {
        log.lock().commits.contains(&8)
    })
    .await;
    assert_eq!(log.lock().handled, [6, 7, 8]);
}

#[tokio::test]
async fn store_failures_are_retried_and_nothing_is_lost_or_handled_twice() {
    let world = World::new();
    let cursor = world.cursor();
    let notifier = Notifier::default();
    let consumer = world.consumer(&notifier, &cursor).batch_size(3);
    let from = consumer.start().await.unwrap();
    world.append(8).await;
    let log: Arc<Mutex<Log>> = Arc::default();
    let mut handler = Recorder::new(&log, &cursor, &world.store);
    // Event 5 meets a failing store once, the commit ending at 7 too, and the first two
    // reads fail as well.
    handler.store_fails_at = vec![5];
    handler.commit_fails_at = vec![7];
    let source = Numbers::failing(2);
    run_until(consumer, &notifier, from, &source, handler, || {
        log.lock().commits.contains(&8)
    })
    .await;
    let log = log.lock();
    assert_eq!(log.handled, [1, 2, 3, 4, 5, 6, 7, 8]);
    // 4 was committed before 5 was tried again; the commit at 7 went through once.
    assert_eq!(log.commits, [3, 4, 7, 8]);
}
