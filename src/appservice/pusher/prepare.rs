//! The preparer: a stream consumer turning the events an appservice is interested in (and the
//! ephemeral events it asked for) into durable transactions of at most [`MAX_EVENTS`] events.
//!
//! Its position is where the last prepared transaction ends ([`Prepared`]); the acknowledged
//! cursor is the sender's to move. A batch ends when the transaction is full or the stream is
//! read up to the head, and is then prepared and waited for before the sender may send it.

use std::{mem, sync::Arc, time::Duration, time::Instant};

use ruma::{RoomId, UserId, events::TimelineEventType};
use serde_json::{Value, value::RawValue as RawJsonValue};
use tokio::sync::broadcast;

use super::{Pushers, QUEUE_DEPTH, state::Shared};
use crate::{
    appservice::AppService,
    error::Result,
    events::ClientFormat,
    rooms::{EventView, Loaded, RoomService},
    storage::{Store, WriteTicket},
    stream::Edu,
    stream::{Commit, Consumer, Cursor, Handler},
};

/// Events per transaction, as the spec suggests.
const MAX_EVENTS: usize = 100;
/// How often the position moves over uninteresting events on disk.
const SKIP_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the interest in a room is remembered (see [`RoomInterest`]).
const INTEREST_LIFETIME: Duration = Duration::from_secs(1);

/// Prepares transactions until the server stops.
pub(super) async fn run(p: &Pushers<'_>, asv: &AppService, shared: &Shared) {
    let name = format!("appservice pusher {}", asv.id());
    let cursor = Prepared {
        store: p.store,
        asv,
        shared,
    };
    // A transaction ends when full or caught up, not after a number of events read.
    let consumer = Consumer::new(&name, p.stream, p.notifier, &cursor)
        .batch_size(usize::MAX)
        .save_interval(SKIP_SAVE_INTERVAL);
    let from = match consumer.start().await {
        Ok(from) => from,
        Err(e) => {
            tracing::error!(appservice = asv.id(), error = %e, "appservice pusher stopped");
            return;
        }
    };
    let preparer = Preparer {
        rooms: p.rooms,
        store: p.store,
        asv,
        shared,
        events: Vec::new(),
        interest: RoomInterest::new(),
        edus: asv.receive_ephemeral.then(|| p.notifier.subscribe_edus()),
        received: Vec::new(),
        unconfirmed: None,
    };
    consumer.run(from, p.rooms, preparer).await;
}

/// The preparer's position: where its last prepared transaction ends, or with none queued the
/// acknowledged cursor.
struct Prepared<'a> {
    store: &'a Store,
    asv: &'a AppService,
    shared: &'a Shared,
}

impl Cursor for Prepared<'_> {
    fn load(&self) -> Result<Option<u64>> {
        let state = self.shared.state.lock();
        Ok(self
            .shared
            .stored
            .then(|| state.pending.last().map_or(state.cursor, |t| t.upto)))
    }

    /// Moves the cursor over events of no interest. With transactions queued it stays: their
    /// acknowledgement moves it, and the events after them, replayed after a crash, send
    /// nothing.
    async fn save(&self, pos: u64, durable: bool) -> Result<()> {
        let ((), ticket) = self.shared.update(self.store, self.asv, |state, _| {
            if state.pending.is_empty() {
                state.cursor = state.cursor.max(pos);
            }
        })?;
        if durable {
            self.store.durable(ticket).await?;
        }
        Ok(())
    }
}

struct Preparer<'a> {
    rooms: &'a RoomService,
    store: &'a Store,
    asv: &'a AppService,
    shared: &'a Shared,
    /// The next transaction's events, in the client format.
    events: Vec<Box<RawJsonValue>>,
    interest: RoomInterest,
    /// Ephemeral events ride along with the next transaction; they are not durable. `None`
    /// when the appservice does not want them.
    edus: Option<broadcast::Receiver<Arc<Edu>>>,
    /// Ephemeral events received while waiting.
    received: Vec<Arc<Edu>>,
    /// A transaction written but not yet known to be on disk (its wait failed): the next
    /// commit waits for it again instead of preparing its events twice.
    unconfirmed: Option<(u64, WriteTicket)>,
}

impl Handler for Preparer<'_> {
    type Event = Arc<Loaded>;

    /// Never read (and parse) more than the transaction can still take, and nothing while
    /// the queue is full: an appservice that is down leaves its backlog in the stream.
    fn room(&self) -> usize {
        if self.shared.queued() >= QUEUE_DEPTH {
            0
        } else {
            MAX_EVENTS - self.events.len()
        }
    }

    async fn event(&mut self, _pos: u64, event: Arc<Loaded>) -> Result<()> {
        if event.pdu.kind == TimelineEventType::RoomMember {
            // Membership changed: the room's interest may have too.
            self.interest.by_room.remove(&event.stored.room);
        }
        if interested(self.rooms, self.asv, &event, &mut self.interest)? {
            let view = EventView {
                user: &self.asv.sender,
                device: None,
                format: ClientFormat::WithRoomId,
            };
            self.events.push(self.rooms.format_event(&event, view)?);
        }
        Ok(())
    }

    async fn commit(&mut self, upto: u64) -> Result<Commit> {
        self.interest.expire();
        Ok(if self.prepare(upto).await? {
            Commit::Saved
        } else {
            Commit::Lazy
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            () = self.shared.acked.notified() => {}
            edu = next_edu(&mut self.edus) => self.received.extend(edu),
        }
    }

    /// Ephemeral events with no stream event to ride along with go on their own.
    async fn idle(&mut self, committed: u64) {
        if self.room() == 0 {
            return;
        }
        if let Err(e) = self.prepare(committed).await {
            tracing::error!(appservice = self.asv.id(), error = %e, "ephemeral events not prepared");
        }
    }
}

impl Preparer<'_> {
    /// Prepares a transaction of the gathered events and the wanted ephemeral ones, covering
    /// the stream up to `upto`, and waits until it is on disk; `false` if there was nothing
    /// to send.
    async fn prepare(&mut self, upto: u64) -> Result<bool> {
        self.confirm().await?;
        let edus = self.wanted_edus()?;
        if self.events.is_empty() && edus.is_empty() {
            return Ok(false);
        }
        let body = transaction_body(&mem::take(&mut self.events), &edus);
        self.unconfirmed = Some(self.shared.prepare(self.store, self.asv, upto, body)?);
        self.confirm().await?;
        Ok(true)
    }

    /// Waits until the last transaction prepared is on disk, then lets the sender send it.
    /// After a failed wait it is waited for again, not prepared twice: it records its own
    /// upper position, so what it holds is not read again.
    async fn confirm(&mut self) -> Result<()> {
        if let Some((txn_id, ticket)) = self.unconfirmed {
            self.store.durable(ticket).await?;
            self.unconfirmed = None;
            self.shared.made_durable(txn_id);
        }
        Ok(())
    }

    /// The ephemeral events received so far that the appservice wants.
    fn wanted_edus(&mut self) -> Result<Vec<Value>> {
        if let Some(rx) = &mut self.edus {
            while let Ok(edu) = rx.try_recv() {
                self.received.push(edu);
            }
        }
        let mut wanted = Vec::new();
        for edu in mem::take(&mut self.received) {
            if edu_wanted(self.rooms, self.asv, &edu)? {
                wanted.push(edu.event.clone());
            }
        }
        Ok(wanted)
    }
}

/// `{"events": [...]}`, with the ephemeral events under the stable and the MSC2409 name.
fn transaction_body(events: &[Box<RawJsonValue>], edus: &[Value]) -> String {
    let events = events.iter().map(|e| e.get()).collect::<Vec<_>>().join(",");
    if edus.is_empty() {
        return format!("{{\"events\":[{events}]}}");
    }
    let edus = serde_json::to_string(edus).expect("edus serialize");
    format!(
        "{{\"events\":[{events}],\"ephemeral\":{edus},\"de.sorunome.msc2409.ephemeral\":{edus}}}"
    )
}

/// The next ephemeral event, or never when the appservice does not want them.
async fn next_edu(edus: &mut Option<broadcast::Receiver<Arc<Edu>>>) -> Option<Arc<Edu>> {
    match edus {
        // Lagged: some were missed, which ephemeral data allows. (The sender lives as long as
        // the server, so the channel never closes under us.)
        Some(rx) => rx.recv().await.ok(),
        None => std::future::pending().await,
    }
}

/// Typing and receipts of rooms the appservice is interested in; presence of its users.
fn edu_wanted(rooms: &RoomService, asv: &AppService, edu: &Edu) -> Result<bool> {
    match &edu.room_id {
        Some(room_id) => room_wanted(rooms, asv, room_id),
        None => Ok(edu.event["sender"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
            .is_some_and(|u| asv.owns_user(&u))),
    }
}

/// Per the spec: the sender or the member event's target is in the user namespace, or the room
/// is in the room namespace, has an alias in the alias namespace, or has a member in the user
/// namespace.
fn interested(
    rooms: &RoomService,
    asv: &AppService,
    event: &Loaded,
    interest: &mut RoomInterest,
) -> Result<bool> {
    let pdu = &event.pdu;
    if asv.owns_user(&pdu.sender) {
        return Ok(true);
    }
    if pdu.kind == TimelineEventType::RoomMember
        && let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
        && asv.owns_user(&target)
    {
        return Ok(true);
    }
    if let Some(known) = interest.by_room.get(&event.stored.room) {
        return Ok(*known);
    }
    let wanted = room_wanted(rooms, asv, &pdu.room_id)?;
    interest.by_room.insert(event.stored.room, wanted);
    Ok(wanted)
}

/// Whether the appservice wants each room, by room short id. A member event forgets its room
/// at once; everything is forgotten every [`INTEREST_LIFETIME`], which covers aliases added
/// through the directory (they change no room event).
struct RoomInterest {
    by_room: std::collections::HashMap<u64, bool>,
    since: Instant,
}

impl RoomInterest {
    fn new() -> Self {
        RoomInterest {
            by_room: std::collections::HashMap::new(),
            since: Instant::now(),
        }
    }

    fn expire(&mut self) {
        if self.since.elapsed() >= INTEREST_LIFETIME {
            self.by_room.clear();
            self.since = Instant::now();
        }
    }
}

/// Whether the appservice wants everything of the room: by room id, alias or a member.
fn room_wanted(rooms: &RoomService, asv: &AppService, room_id: &RoomId) -> Result<bool> {
    let room = rooms.room(room_id)?;
    Ok(asv.owns_room(room_id.as_str())
        || rooms
            .room_aliases(room_id)?
            .iter()
            .any(|a| asv.owns_alias(a))
        || room.joined_members().iter().any(|u| asv.owns_user(u)))
}
