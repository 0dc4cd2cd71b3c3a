//! The global stream: every durable change (room event, account data) gets a position.
//!
//! Positions are allocated and applied under one short lock, so position order is commit order;
//! a change becomes *visible* (sync tokens, `/messages`) only once its flush is on disk. A reader
//! that sees head `h` therefore sees every change `<= h`, and none of them can vanish in a crash.
//! Sync tokens are positions.
//!
//! Background workers follow the stream through a [`Consumer`] (`consumer.rs`): a durable
//! cursor of their own, batches, and one error policy.

mod consumer;
mod notifier;
mod progress;

pub(crate) use consumer::{
    Backoff, Commit, Consumer, Cursor, Handled, Handler, NamedCursor, Source, guarded,
};
pub use notifier::{Edu, Notifier};
pub use progress::Progress;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::storage::{Batch, Result, Store, Table, WriteTicket, keys::decode_u64};

const HEAD_KEY: &[u8] = b"stream_pos";

pub struct Stream {
    store: Store,
    /// Last allocated position. Held only while a batch is applied.
    last: Mutex<u64>,
    /// Highest position known durable: what readers may see.
    visible: watch::Sender<u64>,
    /// The ephemeral stream (typing, presence): in memory only, numbered from the boot time in
    /// milliseconds so that a token from before a restart is never ahead of it.
    ephemeral: AtomicU64,
    /// Events made durable since the process started (for `/metrics`).
    events_stored: AtomicU64,
    /// Where each running consumer is (for `/metrics`).
    progress: Progress,
}

/// A change applied in memory at `pos`, not yet durable.
#[must_use = "call Stream::finish to wait for durability and publish the change"]
pub struct Pending {
    pub pos: u64,
    ticket: WriteTicket,
    /// Whether the change stores an event (counted once durable).
    event: bool,
}

impl Stream {
    /// Recovers the head: the highest position recorded either as an event's key or, for
    /// changes without an event (account data), under the head key.
    pub fn open(store: Store) -> Result<Self> {
        let recorded = store
            .get(Table::Global, HEAD_KEY)?
            .map(|v| decode_u64(&v))
            .unwrap_or(0);
        let last_event = store
            .last_with_prefix(Table::Events, b"")?
            .map(|(k, _)| decode_u64(&k))
            .unwrap_or(0);
        let last = recorded.max(last_event);
        let (visible, _) = watch::channel(last);
        let boot_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Stream {
            store,
            last: Mutex::new(last),
            visible,
            ephemeral: AtomicU64::new(boot_ms),
            events_stored: AtomicU64::new(0),
            progress: Progress::default(),
        })
    }

    /// Allocates the next position and applies the batch `build` makes for it, atomically with
    /// the new head. `build` runs under the stream lock: keep it to assembling writes.
    pub fn apply(&self, build: impl FnOnce(u64) -> Batch) -> Result<Pending> {
        self.apply_and(build, |_| ())
    }

    /// `apply`, then `applied(pos)` once the batch is applied, still under the stream lock: for
    /// in-memory views of the stream, so that no reader finds a later position there before
    /// this one.
    pub fn apply_and(
        &self,
        build: impl FnOnce(u64) -> Batch,
        applied: impl FnOnce(u64),
    ) -> Result<Pending> {
        let mut last = self.last.lock();
        let pos = *last + 1;
        let mut batch = build(pos);
        // An event's own key records its position; saving the head too would cost every event
        // one more write.
        let event = batch.touches(Table::Events);
        if !event {
            batch.put(Table::Global, HEAD_KEY, pos.to_be_bytes().to_vec());
        }
        let ticket = self.store.write(batch)?;
        *last = pos;
        applied(pos);
        Ok(Pending { pos, ticket, event })
    }

    /// Waits until the change is on disk, then makes it visible to readers.
    pub async fn finish(&self, pending: Pending) -> Result<u64> {
        self.store.durable(pending.ticket).await?;
        if pending.event {
            self.events_stored.fetch_add(1, Ordering::Relaxed);
        }
        self.visible.send_if_modified(|v| {
            let advanced = pending.pos > *v;
            *v = (*v).max(pending.pos);
            advanced
        });
        Ok(pending.pos)
    }

    /// `apply` then `finish`.
    pub async fn commit(&self, build: impl FnOnce(u64) -> Batch) -> Result<u64> {
        let pending = self.apply(build)?;
        self.finish(pending).await
    }

    /// Waits until `pos` is visible, hence durable: for an answer that reports a change another
    /// request applied (a retried transaction), which must not come before that change is on
    /// disk. `false` if it did not become visible within `limit` (the store is failing).
    pub async fn wait_visible(&self, pos: u64, limit: std::time::Duration) -> bool {
        let mut rx = self.visible.subscribe();
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|v| *v >= pos)).await,
            Ok(Ok(_))
        )
    }

    /// The highest visible position.
    pub fn head(&self) -> u64 {
        *self.visible.borrow()
    }

    /// A receiver that changes whenever the visible head moves: how stream consumers wait.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }

    /// Numbers an ephemeral change (typing, presence). Nothing is written.
    pub fn next_ephemeral(&self) -> u64 {
        self.ephemeral.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Events made durable by this process since it started.
    pub fn events_stored(&self) -> u64 {
        self.events_stored.load(Ordering::Relaxed)
    }

    /// Where the running consumers are.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The newest ephemeral number handed out.
    pub fn ephemeral_head(&self) -> u64 {
        self.ephemeral.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn head_survives_reopen_whether_or_not_an_event_recorded_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let stream = Stream::open(Store::open(dir.path(), 8).unwrap()).unwrap();
            // Account data style: no event, so the head key records the position.
            stream.commit(|_| Batch::new()).await.unwrap();
            // Events: their own key records the position.
            for _ in 0..3 {
                stream
                    .commit(|pos| {
                        let mut b = Batch::new();
                        b.put(Table::Events, pos.to_be_bytes().to_vec(), b"{}".to_vec());
                        b
                    })
                    .await
                    .unwrap();
            }
            assert_eq!(stream.head(), 4);
        }
        let stream = Stream::open(Store::open(dir.path(), 8).unwrap()).unwrap();
        assert_eq!(stream.head(), 4);
        assert_eq!(stream.commit(|_| Batch::new()).await.unwrap(), 5);
    }
}
