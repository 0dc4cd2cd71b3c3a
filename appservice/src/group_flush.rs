//! Waiting for the disk without `sled::Db::flush_async`.
//!
//! sled 0.34's `flush_async` runs the flush on sled's own I/O thread pool, and a flush waits
//! for buffer writes that sled queues on that same pool. A handful of concurrent
//! `flush_async` calls (a burst of webhooks, appservice transactions arriving together) fill
//! the pool's threads with flushes that wait for writes nobody is left to run; the flushes
//! also hold sled's process-wide concurrency lock, so the next `apply_batch` anywhere in the
//! process blocks its thread for ever (spacejam/sled#1308, fixed only on sled's unreleased
//! main branch). The `whatsapp` bench scenario hung on exactly that.
//!
//! [`GroupFlush`] instead runs the blocking `flush` on one dedicated thread and lets every
//! caller that waits meanwhile share the next flush (group commit): the same durability, one
//! fsync for a burst instead of one each, and nothing of sled's pool is ever blocked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

/// Flushes a sled database on demand on its own thread; cheap to clone.
#[derive(Clone)]
pub struct GroupFlush {
    shared: Arc<Shared>,
}

struct Shared {
    db: sled::Db,
    state: Mutex<State>,
    /// Set by a caller that waits; the flusher clears it when it starts a flush.
    wanted: AtomicBool,
    flusher: std::thread::Thread,
}

/// Requests are numbered; a flush that starts after request `n` was made covers it.
#[derive(Default)]
struct State {
    requested: u64,
    waiting: BTreeMap<u64, Vec<oneshot::Sender<Result<(), String>>>>,
}

impl GroupFlush {
    /// Starts the flusher thread for `db`. The thread holds the database only while it
    /// flushes, so dropping the last clone (and every other handle) closes it.
    pub fn new(db: sled::Db, name: &str) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Weak<Shared>>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                if let Ok(shared) = rx.recv() {
                    run(shared);
                }
            })?;
        let shared = Arc::new(Shared {
            db,
            state: Mutex::new(State::default()),
            wanted: AtomicBool::new(false),
            flusher: thread.thread().clone(),
        });
        let _ = tx.send(Arc::downgrade(&shared));
        Ok(Self { shared })
    }

    /// Returns once everything written to the database before the call is on disk.
    pub async fn flush(&self) -> sled::Result<()> {
        let done = {
            let mut state = self.shared.state.lock().expect("group flush state");
            state.requested += 1;
            let (tx, rx) = oneshot::channel();
            let ticket = state.requested;
            state.waiting.entry(ticket).or_default().push(tx);
            rx
        };
        self.shared.wanted.store(true, Ordering::SeqCst);
        self.shared.flusher.unpark();
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(sled::Error::Io(std::io::Error::other(error))),
            Err(_) => Err(sled::Error::ReportableBug(
                "the flusher thread stopped".into(),
            )),
        }
    }
}

/// Flushes whenever someone waits, answering every request made before the flush began.
fn run(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if !strong.wanted.swap(false, Ordering::SeqCst) {
            drop(strong);
            // A caller sets the flag before unparking, so no wake-up is lost; the timeout only
            // bounds how long this thread outlives a dropped database.
            std::thread::park_timeout(Duration::from_millis(200));
            continue;
        }
        // Read under the lock after the flag: every request numbered up to here was made
        // after its writes, and the flush below starts after the request.
        let target = strong.state.lock().expect("group flush state").requested;
        let outcome = strong.db.flush().map(|_| ()).map_err(|e| e.to_string());
        let covered = {
            let mut state = strong.state.lock().expect("group flush state");
            let later = state.waiting.split_off(&(target + 1));
            std::mem::replace(&mut state.waiting, later)
        };
        for tx in covered.into_values().flatten() {
            let _ = tx.send(outcome.clone());
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Let the flusher see at once that the database is gone.
        self.flusher.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern that deadlocked with `flush_async`: many writers at once, each waiting for
    /// the disk before answering. Every write is there after reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let flush = GroupFlush::new(db.clone(), "test-flusher").unwrap();
            let mut writers = tokio::task::JoinSet::new();
            for i in 0u32..200 {
                let (db, flush) = (db.clone(), flush.clone());
                writers.spawn(async move {
                    db.insert(i.to_be_bytes(), &b"x"[..]).unwrap();
                    flush.flush().await
                });
            }
            for result in writers.join_all().await {
                result.unwrap();
            }
        }
        let db = reopen(dir.path());
        assert_eq!(db.len(), 200);
        for i in 0u32..200 {
            assert_eq!(db.get(i.to_be_bytes()).unwrap().as_deref(), Some(&b"x"[..]));
        }
    }

    /// Waits for the dropped database's file lock, which the flusher thread may hold a moment.
    fn reopen(path: &std::path::Path) -> sled::Db {
        for _ in 0..300 {
            match sled::open(path) {
                Ok(db) => return db,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        panic!("the database stayed locked after every handle was dropped");
    }
}
