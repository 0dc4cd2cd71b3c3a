//! Per-room lanes: the bot handles each room's events in stream order, and rooms at once.
//!
//! Handling one event can take several durable writes (joining, opening the conversation,
//! inviting the agent, greeting). One event at a time, a burst of new conversations queued
//! behind each other's disk syncs, and the last one waited long for its assignment. Within a
//! room order still matters (the greeting before an FAQ answer, a reopen before its
//! assignment), so each room with work gets a lane: a task fed by a channel that ends when the
//! room has nothing left in flight. Decisions that span rooms (assignment, capacity) are taken
//! under the support service's change lock, not by the order of the lanes.
//!
//! The stream cursor may only move past events that are done: [`Lanes::cursor`] stops below
//! the oldest position still in flight.

use std::{
    collections::{BTreeSet, HashMap, hash_map::Entry},
    sync::Arc,
    time::Duration,
};

use ruma::{OwnedRoomId, RoomId};
use tokio::sync::{Semaphore, mpsc};

use super::{BotServices, handle};
use crate::{
    rooms::Loaded,
    stream::{Backoff, Handled, guarded},
};

/// Events handled at once across all rooms: bounds tasks and store pressure in a burst.
const CONCURRENCY: usize = 64;
/// The backoff after a store failure while handling an event.
const STORE_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// A finished event, reported by its lane.
pub struct Done {
    room: OwnedRoomId,
    pos: u64,
    /// The event asked for the queue to be looked at (unassigned work, freed capacity).
    pub wants_drain: bool,
}

pub struct Lanes {
    s: Arc<dyn BotServices>,
    lanes: HashMap<OwnedRoomId, Lane>,
    in_flight: BTreeSet<u64>,
    done: mpsc::UnboundedSender<Done>,
    permits: Arc<Semaphore>,
}

struct Lane {
    events: mpsc::UnboundedSender<(u64, Arc<Loaded>)>,
    queued: usize,
}

impl Lanes {
    /// The lanes, and the receiver their finished events arrive on (give each to
    /// [`Lanes::finish`]).
    pub fn new(s: Arc<dyn BotServices>) -> (Self, mpsc::UnboundedReceiver<Done>) {
        let (done, done_rx) = mpsc::unbounded_channel();
        let lanes = Lanes {
            s,
            lanes: HashMap::new(),
            in_flight: BTreeSet::new(),
            done,
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
        };
        (lanes, done_rx)
    }

    /// Whether the room has events in flight (so its state may be about to change).
    pub fn is_busy(&self, room: &RoomId) -> bool {
        self.lanes.contains_key(room)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Queues the event at `pos` on its room's lane, starting the lane if the room had none.
    pub fn dispatch(&mut self, pos: u64, ev: Arc<Loaded>) {
        self.in_flight.insert(pos);
        let lane = match self.lanes.entry(ev.pdu.room_id.clone()) {
            Entry::Occupied(lane) => lane.into_mut(),
            Entry::Vacant(vacant) => {
                let (events, rx) = mpsc::unbounded_channel();
                let (s, done, permits) = (self.s.clone(), self.done.clone(), self.permits.clone());
                tokio::spawn(run_lane(s, rx, done, permits));
                vacant.insert(Lane { events, queued: 0 })
            }
        };
        lane.queued += 1;
        // The lane runs until its sender is dropped, which only `finish` does once the lane
        // has nothing queued: the send cannot fail.
        let _ = lane.events.send((pos, ev));
    }

    /// Records a finished event; a lane with nothing left ends.
    pub fn finish(&mut self, done: &Done) {
        self.in_flight.remove(&done.pos);
        if let Entry::Occupied(mut lane) = self.lanes.entry(done.room.clone()) {
            lane.get_mut().queued -= 1;
            if lane.get().queued == 0 {
                lane.remove();
            }
        }
    }

    /// Where the cursor may stand given everything up to `dispatched` was read: below the
    /// oldest event still in flight.
    pub fn cursor(&self, dispatched: u64) -> u64 {
        self.in_flight
            .first()
            .map_or(dispatched, |oldest| oldest - 1)
    }
}

/// Handles one room's events in order, under the stream consumer's error policy: a storage
/// error retries the same event (the store is failing; skipping would lose the event); any
/// other error, or a panic, is logged and the event dropped, as it would fail the same way
/// again.
async fn run_lane(
    s: Arc<dyn BotServices>,
    mut events: mpsc::UnboundedReceiver<(u64, Arc<Loaded>)>,
    done: mpsc::UnboundedSender<Done>,
    permits: Arc<Semaphore>,
) {
    while let Some((pos, ev)) = events.recv().await {
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        let mut retry = STORE_RETRY;
        let wants_drain = loop {
            match guarded("support bot", pos, handle::event(&s.desk(), pos, &ev.pdu)).await {
                Handled::Done(wants_drain) => break wants_drain,
                Handled::Skipped => break false,
                Handled::StoreFailed(e) => {
                    let wait = retry.next_wait();
                    tracing::error!(pos, error = %e, retry_in = ?wait, "support bot: storage error, retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let room = ev.pdu.room_id.clone();
        if done
            .send(Done {
                room,
                pos,
                wants_drain,
            })
            .is_err()
        {
            return;
        }
    }
}
