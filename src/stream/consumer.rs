//! A durable stream consumer: a background worker that follows the global stream in order from
//! a cursor of its own, surviving restarts, crashes, failing events and a failing store.
//!
//! The support bot, push delivery and the appservice pushers are consumers; the search indexer
//! and the federation sender will be. Each is a [`Handler`]; the loop is this module's:
//!
//! 1. **Start.** [`Consumer::start`] loads the cursor. A consumer that never ran starts at the
//!    stream's head, saved durably first, so that it does not replay history and a restart
//!    before its first save does not skip what came in between. Call it before the server
//!    serves, so that no event committed after the server started is missed.
//! 2. **Read** the events after the cursor by position, in batches of at most the batch size
//!    (and of what the handler has [`room`](Handler::room) for), handing each to
//!    [`Handler::event`], then ending the batch with [`Handler::commit`].
//! 3. **Save** the cursor. A batch whose effects need nothing on disk (a replay after a crash
//!    repeats nothing, or repeats only what is idempotent) is [`Commit::Lazy`]: the consumer
//!    saves the cursor at most once per save interval, without waiting for the disk, so a busy
//!    stream does not cost a store write per event. A batch that wrote something that must
//!    neither be lost nor written twice saves the cursor *with* those writes, in one batch
//!    waited for ([`NamedCursor::put`]), and says [`Commit::Saved`].
//! 4. **Wait** for the head to move, for the handler's own wake-ups ([`Handler::wait`]), for a
//!    due cursor save, or for shutdown ([`Notifier::stop`]).
//!
//! # Errors
//!
//! One event never stops a consumer:
//! - an event whose handling fails with anything but a store error, or panics, is logged and
//!   skipped: it would fail the same way again;
//! - a store error (reading, or in the handler) ends the batch before the event it hit: the
//!   events handed over so far are committed, and that event is handed over again after a
//!   backoff (doubling, capped), as often as it takes;
//! - a failing commit is retried, with the same `upto`, after the same backoff; the handler
//!   keeps whatever it has not written until one succeeds.
//!
//! # Writing one
//!
//! A handler gathers in `event` and writes in `commit`. A search indexer, say:
//!
//! ```ignore
//! struct Indexer<'a> {
//!     cursor: &'a NamedCursor<'a>,
//!     store: &'a Store,
//!     writes: Batch,
//! }
//!
//! impl Handler for Indexer<'_> {
//!     type Event = Arc<Loaded>;
//!
//!     async fn event(&mut self, pos: u64, event: Arc<Loaded>) -> Result<()> {
//!         index::add(&mut self.writes, pos, &event.pdu) // an Err skips this event only
//!     }
//!
//!     async fn commit(&mut self, upto: u64) -> Result<Commit> {
//!         if self.writes.is_empty() {
//!             return Ok(Commit::Lazy);
//!         }
//!         let mut batch = std::mem::take(&mut self.writes);
//!         self.cursor.put(&mut batch, upto);
//!         self.store.write_durable(batch).await?;
//!         Ok(Commit::Saved)
//!     }
//! }
//!
//! // At startup, before serving:
//! let cursor = NamedCursor::new(&store, Table::SearchState, b"cursor");
//! let from = Consumer::new("search indexer", &stream, &notifier, &cursor).start().await?;
//! // In the task that runs it (a view of the services it needs, built inside the task):
//! Consumer::new("search indexer", &stream, &notifier, &cursor)
//!     .run(from, &rooms, Indexer { cursor: &cursor, store: &store, writes: Batch::new() })
//!     .await;
//! ```
//!
//! Since writes reach the disk in the order they were made, a later cursor save never lands
//! without an earlier write: a commit whose durable wait failed and that is retried only has to
//! wait again (or save the cursor again) to know its earlier writes are on disk.
//!
//! A handler that works on events after handing them over (the bot's per-room lanes) says with
//! [`Handler::settled`] how far the cursor may go, and with [`Handler::room`] when it is full.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use futures_util::FutureExt;

use super::Stream;
use crate::{
    error::{Error, Result},
    storage::{Batch, Store, Table, keys},
    stream::Notifier,
};

/// Events per batch unless the consumer says otherwise.
const DEFAULT_BATCH: usize = 256;
/// Events read from the source at once, whatever the batch size.
const MOST_PER_READ: usize = 1024;
/// How often a lazily saved cursor is written unless the consumer says otherwise.
const DEFAULT_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// The backoff after a store failure unless the consumer says otherwise.
const DEFAULT_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// Where a consumer reads its events (the rooms' events, for every consumer so far).
pub(crate) trait Source: Sync {
    type Event: Send;

    /// The events in `(after, upto]`, oldest first, at most `limit`; fewer only when the range
    /// holds no more.
    fn read(&self, after: u64, upto: u64, limit: usize) -> Result<Vec<(u64, Self::Event)>>;
}

/// Where a consumer keeps its position.
pub trait Cursor: Sync {
    /// The saved position; `None` for a consumer that never saved one.
    fn load(&self) -> Result<Option<u64>>;

    /// Saves `pos`. With `durable`, returns once it is on disk; without, once it is written (a
    /// crash may lose it, which only replays events).
    fn save(&self, pos: u64, durable: bool) -> impl Future<Output = Result<()>> + Send;
}

impl<C: Cursor> Cursor for &C {
    fn load(&self) -> Result<Option<u64>> {
        (**self).load()
    }

    fn save(&self, pos: u64, durable: bool) -> impl Future<Output = Result<()>> + Send {
        (**self).save(pos, durable)
    }
}

/// The usual cursor: a big-endian `u64` under one key of one table.
pub struct NamedCursor<'a> {
    store: &'a Store,
    table: Table,
    key: Vec<u8>,
}

impl<'a> NamedCursor<'a> {
    pub fn new(store: &'a Store, table: Table, key: impl Into<Vec<u8>>) -> Self {
        NamedCursor {
            store,
            table,
            key: key.into(),
        }
    }

    /// Adds the cursor at `pos` to `batch`: how a handler saves it with its own writes.
    pub fn put(&self, batch: &mut Batch, pos: u64) {
        batch.put(self.table, self.key.clone(), pos.to_be_bytes().to_vec());
    }
}

impl Cursor for NamedCursor<'_> {
    fn load(&self) -> Result<Option<u64>> {
        Ok(self
            .store
            .get(self.table, &self.key)?
            .map(|v| keys::decode_u64(&v)))
    }

    async fn save(&self, pos: u64, durable: bool) -> Result<()> {
        let mut batch = Batch::new();
        self.put(&mut batch, pos);
        let ticket = self.store.write(batch)?;
        if durable {
            self.store.durable(ticket).await?;
        }
        Ok(())
    }
}

/// How a batch ended, as far as the cursor is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Nothing of the batch must be on disk with the cursor: the consumer saves it lazily.
    Lazy,
    /// The handler saved the cursor at `upto` durably, with its writes.
    Saved,
}

/// What a consumer does with the events: see the module documentation.
///
/// Only `event` and `commit` are required. The others have defaults for a handler that does
/// all its work in those two.
pub(crate) trait Handler: Send {
    type Event: Send;

    /// Handles the event at `pos`. Events come in stream order. An `Err` that is not a store
    /// error, or a panic, skips this event (logged); a store error ends the batch before it,
    /// and it is handed over again after a backoff.
    fn event(&mut self, pos: u64, event: Self::Event) -> impl Future<Output = Result<()>> + Send;

    /// Ends a batch: every event up to `upto` has been handed over (the range may also hold
    /// positions without an event, or none at all). An `Err` is retried with the same `upto`.
    fn commit(&mut self, upto: u64) -> impl Future<Output = Result<Commit>> + Send;

    /// Whether any event could matter now. When not, the consumer moves past the events without
    /// reading them (push delivery with no pusher to push to).
    fn wants_events(&mut self) -> Result<bool> {
        Ok(true)
    }

    /// How many more events the handler takes before its next commit; `0` pauses reading until
    /// [`Handler::wait`] returns (a full queue, too much in flight).
    fn room(&self) -> usize {
        usize::MAX
    }

    /// How far the cursor may be saved once everything up to `committed` was committed: below
    /// any event the handler still works on.
    fn settled(&self, committed: u64) -> u64 {
        committed
    }

    /// Waits for something besides the stream (a finished task, an ephemeral event, a timer).
    /// Dropped when the stream moves first, so it must lose nothing when cancelled.
    fn wait(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// The handler's work besides events, run after each round of reading and before waiting;
    /// `committed` is where the stream was read and committed up to. It logs its own failures.
    fn idle(&mut self, committed: u64) -> impl Future<Output = ()> + Send {
        let _ = committed;
        async {}
    }
}

/// Waits that double after each failure, from `first` up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Called after a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// What became of one event under the error policy.
#[derive(Debug)]
pub enum Handled<T> {
    Done(T),
    /// It failed or panicked (logged): it would fail the same way again.
    Skipped,
    /// The store failed: try the event again later.
    StoreFailed(Error),
}

/// Runs one event's `handling` under the error policy: for handlers that handle events in
/// tasks of their own (the bot's lanes), so that they treat failures as the consumer does.
pub async fn guarded<T>(
    consumer: &str,
    pos: u64,
    handling: impl Future<Output = Result<T>>,
) -> Handled<T> {
    match AssertUnwindSafe(handling).catch_unwind().await {
        Ok(Ok(done)) => Handled::Done(done),
        Ok(Err(e @ Error::Storage(_))) => Handled::StoreFailed(e),
        Ok(Err(e)) => {
            tracing::warn!(consumer, pos, error = %e, "event skipped");
            Handled::Skipped
        }
        Err(_) => {
            tracing::error!(consumer, pos, "handling the event panicked; skipped");
            Handled::Skipped
        }
    }
}

/// One durable stream consumer: see the module documentation.
pub struct Consumer<'a, C> {
    name: &'a str,
    stream: &'a Stream,
    notifier: &'a Notifier,
    cursor: C,
    batch_size: usize,
    save_interval: Duration,
    retry: Backoff,
}

/// How far a running consumer got.
struct Progress {
    /// Every event up to here was handed over (or skipped).
    read: u64,
    /// Commits returned for everything up to here. Below `read` only after a failed commit.
    committed: u64,
    /// The cursor was saved here (lazily or durably).
    saved: u64,
    last_save: Instant,
}

impl<'a, C: Cursor> Consumer<'a, C> {
    /// A consumer named `name` (in its logs) keeping its position in `cursor`, with batches of
    /// 256 events, a lazy save every second and a backoff from one second to thirty.
    pub fn new(name: &'a str, stream: &'a Stream, notifier: &'a Notifier, cursor: C) -> Self {
        Consumer {
            name,
            stream,
            notifier,
            cursor,
            batch_size: DEFAULT_BATCH,
            save_interval: DEFAULT_SAVE_INTERVAL,
            retry: DEFAULT_RETRY,
        }
    }

    /// At most `events` per batch (at least one).
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// How often a lazily saved cursor is written at most.
    pub fn save_interval(mut self, every: Duration) -> Self {
        self.save_interval = every;
        self
    }

    /// The backoff after a store failure (the default suits every consumer so far).
    #[cfg(test)]
    pub fn retry(mut self, backoff: Backoff) -> Self {
        self.retry = backoff;
        self
    }

    /// The position to run from: the saved cursor, or for a consumer that never ran the
    /// stream's head, saved durably first.
    pub async fn start(&self) -> Result<u64> {
        if let Some(pos) = self.cursor.load()? {
            return Ok(pos);
        }
        let head = self.stream.head();
        self.cursor.save(head, true).await?;
        Ok(head)
    }

    /// Hands the events after `from` to `handler`, in order, until the server stops.
    pub async fn run<S, H>(self, from: u64, source: &S, mut handler: H)
    where
        S: Source<Event = H::Event>,
        H: Handler,
    {
        let mut head_rx = self.stream.watch();
        // Its lag, for operators (`stream::Progress`).
        let tracked = self.stream.progress().track(self.name, from);
        let mut at = Progress {
            read: from,
            committed: from,
            saved: from,
            last_save: Instant::now(),
        };
        let mut retry = self.retry;
        loop {
            let head = *head_rx.borrow_and_update();
            if let Err(e) = self.catch_up(source, &mut handler, &mut at, head).await {
                let wait = retry.next_wait();
                tracing::error!(consumer = self.name, error = %e, retry_in = ?wait, "store failure, retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = self.notifier.stopped() => return,
                }
            }
            retry.reset();
            handler.idle(at.committed).await;
            self.save_if_due(&handler, &mut at).await;
            tracked.set(handler.settled(at.committed));
            let unsaved = handler.settled(at.committed) > at.saved;
            let save_at = tokio::time::Instant::from_std(at.last_save + self.save_interval);
            tokio::select! {
                changed = head_rx.changed() => if changed.is_err() { return },
                () = handler.wait() => {}
                () = tokio::time::sleep_until(save_at), if unsaved => {}
                () = self.notifier.stopped() => return,
            }
        }
    }

    /// Reads up to `head` in batches, committing each, until caught up, the handler is full or
    /// the server stops.
    async fn catch_up<S, H>(
        &self,
        source: &S,
        handler: &mut H,
        at: &mut Progress,
        head: u64,
    ) -> Result<()>
    where
        S: Source<Event = H::Event>,
        H: Handler,
    {
        if at.committed < at.read {
            // A commit failed: the handler kept what it had not written.
            self.commit(handler, at).await?;
        }
        while at.read < head && !self.stopping() {
            let filled = if handler.wants_events()? {
                if handler.room() == 0 {
                    break;
                }
                self.fill(source, handler, &mut at.read, head).await
            } else {
                at.read = head;
                Ok(())
            };
            // What was handed over is committed, also when the batch ended on a failure.
            if at.read > at.committed {
                self.commit(handler, at).await?;
            }
            filled?;
        }
        Ok(())
    }

    /// One batch: hands over the events after `read`, up to `head`, until the batch is full,
    /// the handler has no room or the range is done. `read` follows each event handed over.
    async fn fill<S, H>(&self, source: &S, handler: &mut H, read: &mut u64, head: u64) -> Result<()>
    where
        S: Source<Event = H::Event>,
        H: Handler,
    {
        let mut given = 0;
        loop {
            let limit = handler
                .room()
                .min(self.batch_size - given)
                .min(MOST_PER_READ);
            if limit == 0 {
                return Ok(());
            }
            let events = source.read(*read, head, limit)?;
            let range_done = events.len() < limit;
            for (pos, event) in events {
                if let Handled::StoreFailed(e) =
                    guarded(self.name, pos, handler.event(pos, event)).await
                {
                    return Err(e);
                }
                *read = pos;
                given += 1;
            }
            if range_done {
                *read = head;
                return Ok(());
            }
        }
    }

    async fn commit<H: Handler>(&self, handler: &mut H, at: &mut Progress) -> Result<()> {
        if handler.commit(at.read).await? == Commit::Saved {
            at.saved = at.read;
            at.last_save = Instant::now();
        }
        at.committed = at.read;
        Ok(())
    }

    /// Saves the settled position without waiting for the disk, at most once per interval.
    async fn save_if_due<H: Handler>(&self, handler: &H, at: &mut Progress) {
        let settled = handler.settled(at.committed);
        if settled <= at.saved || at.last_save.elapsed() < self.save_interval {
            return;
        }
        at.last_save = Instant::now();
        match self.cursor.save(settled, false).await {
            Ok(()) => at.saved = settled,
            Err(e) => tracing::error!(consumer = self.name, error = %e, "cannot save the cursor"),
        }
    }

    fn stopping(&self) -> bool {
        self.notifier.stopped().now_or_never().is_some()
    }
}

#[cfg(test)]
mod tests;
