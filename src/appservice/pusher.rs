//! The transaction pusher: one per appservice, pushing the events it is interested in, in
//! stream order, at most 100 per transaction, one transaction in flight.
//!
//! Its state is durable: a cursor (the stream position the appservice acknowledged) and the
//! queue of prepared transactions (id, upper position, exact body). A transaction is on disk
//! before it is first sent, so a retry, after a failure or a restart, sends the same txnId with
//! the same content; the cursor moves only once the appservice acknowledged it. Nothing is lost,
//! nothing duplicated.
//!
//! Two halves run side by side: the *preparer* collects the next transaction and waits for it
//! to be durable while the *sender* has the previous one in flight, so the flush and the round
//! trip overlap instead of adding up. At most [`QUEUE_DEPTH`] transactions are prepared ahead:
//! an appservice that is down leaves its backlog in the stream, not in the queue.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::{RoomId, UserId, events::TimelineEventType};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue as RawJsonValue;
use tokio::sync::Notify;

use super::{AppService, outbound};
use crate::{
    error::{Error, Result},
    events::ClientFormat,
    rooms::{EventView, Loaded},
    services::Services,
    storage::{Batch, Key, Table, WriteTicket},
    sync::Edu,
};

/// Events per transaction, as the spec suggests.
const MAX_EVENTS: usize = 100;
/// Transactions prepared ahead: the one in flight and the next.
const QUEUE_DEPTH: usize = 2;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How often the cursor moves over uninteresting events on disk.
const SKIP_SAVE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Serialize, Deserialize)]
struct PusherState {
    /// Everything up to here was acknowledged (or of no interest).
    cursor: u64,
    next_txn: u64,
    /// Prepared transactions, oldest first; the first is the one to send.
    #[serde(default, deserialize_with = "one_or_many")]
    pending: Vec<PendingTxn>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingTxn {
    txn_id: u64,
    upto: u64,
    /// Stored once under its own key ([`body_key`]), not rewritten with every change of the
    /// state; read inline only from states written before that.
    #[serde(default, skip_serializing)]
    body: String,
}

/// What the two halves share. The lock is never held across an await.
struct Shared {
    state: Mutex<PusherState>,
    /// The newest transaction id known to be on disk: the sender sends nothing newer.
    durable_txn: AtomicU64,
    /// A transaction became durable (wakes the sender).
    prepared: Notify,
    /// A transaction was acknowledged (wakes a preparer waiting for room in the queue).
    acked: Notify,
}

impl Shared {
    /// Changes the state and writes it with whatever else `change` adds to the batch, in one
    /// step under the lock so that writes reach the store in the order the changes were made.
    fn update<T>(
        &self,
        s: &Services,
        asv: &AppService,
        change: impl FnOnce(&mut PusherState, &mut Batch) -> T,
    ) -> Result<(T, WriteTicket)> {
        let mut state = self.state.lock();
        let mut batch = Batch::new();
        let out = change(&mut state, &mut batch);
        batch.put(
            Table::AppserviceState,
            asv.id().as_bytes().to_vec(),
            serde_json::to_vec(&*state).expect("state serializes"),
        );
        Ok((out, s.store.write(batch)?))
    }

    fn queued(&self) -> usize {
        self.state.lock().pending.len()
    }
}

/// Starts one pusher per appservice that has a URL.
///
/// The pushers run on a thread and runtime of their own: under load the client API keeps the
/// main runtime's queues full, and a pusher waiting behind hundreds of request tasks at every
/// step (flush, send, answer) would add tens of milliseconds of lag to each transaction.
pub fn run_pushers(services: &Arc<Services>) {
    let pushers: Vec<_> = services
        .appservices
        .all()
        .iter()
        .filter(|asv| outbound::endpoint(asv, "transactions").is_some())
        .map(|asv| push_loop(services.clone(), asv.clone()))
        .collect();
    if pushers.is_empty() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let spawned = runtime.map_err(|e| e.to_string()).and_then(|rt| {
        std::thread::Builder::new()
            .name("charla-appservice".into())
            .spawn(move || rt.block_on(futures_util::future::join_all(pushers)))
            .map_err(|e| e.to_string())
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the appservice pushers");
    }
}

async fn push_loop(s: Arc<Services>, asv: Arc<AppService>) {
    if let Err(e) = push(&s, &asv).await {
        tracing::error!(appservice = asv.id(), error = %e, "appservice pusher stopped");
    }
}

async fn push(s: &Arc<Services>, asv: &Arc<AppService>) -> Result<()> {
    let state = match load(s, asv)? {
        Some(state) => state,
        // A new registration starts from now, not from the beginning of history.
        None => PusherState {
            cursor: s.stream.head(),
            next_txn: 1,
            pending: Vec::new(),
        },
    };
    let shared = Shared {
        // Whatever was loaded is on disk.
        durable_txn: AtomicU64::new(state.pending.last().map_or(0, |t| t.txn_id)),
        state: Mutex::new(state),
        prepared: Notify::new(),
        acked: Notify::new(),
    };
    tokio::select! {
        r = prepare(s, asv, &shared) => r,
        r = send_in_order(asv, &shared, s) => r,
    }
}

/// The preparer: turns new interesting events (and ephemeral ones) into durable transactions.
async fn prepare(s: &Arc<Services>, asv: &Arc<AppService>, shared: &Shared) -> Result<()> {
    let mut head_rx = s.stream.watch();
    let mut prepared_upto = {
        let state = shared.state.lock();
        state.pending.last().map_or(state.cursor, |t| t.upto)
    };
    // Ephemeral events ride along with the next transaction; they are not durable.
    let mut edus = asv.receive_ephemeral.then(|| s.notifier.subscribe_edus());
    let mut pending_edus: Vec<serde_json::Value> = Vec::new();
    let mut last_skip_save = Instant::now();
    let mut rooms = RoomInterest::new();
    loop {
        if shared.queued() >= QUEUE_DEPTH {
            tokio::select! {
                _ = shared.acked.notified() => continue,
                _ = s.notifier.stopped() => return Ok(()),
            }
        }
        let head = *head_rx.borrow_and_update();
        if let Some(rx) = &mut edus {
            while let Ok(edu) = rx.try_recv() {
                if edu_wanted(s, asv, &edu)? {
                    pending_edus.push(edu.event.clone());
                }
            }
        }
        // Reading and formatting the stream is most of the pusher's CPU: on a thread of its
        // own it overlaps with this thread sending the previous transaction.
        let (s2, asv2, mut interest) = (s.clone(), asv.clone(), rooms);
        let (collected, interest) = tokio::task::spawn_blocking(move || {
            let collected = collect(&s2, &asv2, prepared_upto, head, &mut interest);
            (collected, interest)
        })
        .await
        .map_err(|e| crate::error::Error::internal(e.to_string()))?;
        rooms = interest;
        let (events, upto) = collected?;
        if !events.is_empty() || !pending_edus.is_empty() {
            let body = transaction_body(&events, &pending_edus);
            pending_edus.clear();
            let (txn_id, ticket) = shared.update(s, asv, |state, batch| {
                let txn_id = state.next_txn;
                state.next_txn += 1;
                batch.put(
                    Table::AppserviceState,
                    body_key(asv, txn_id),
                    body.as_bytes().to_vec(),
                );
                state.pending.push(PendingTxn { txn_id, upto, body });
                txn_id
            })?;
            s.store.durable(ticket).await?;
            shared.durable_txn.store(txn_id, Ordering::SeqCst);
            shared.prepared.notify_one();
            prepared_upto = upto;
            continue;
        }
        if upto > prepared_upto {
            prepared_upto = upto;
            // Only uninteresting events: with nothing queued the cursor may skip them. Saved
            // at most once per interval and not waited for: replaying them after a crash sends
            // nothing, and a store write per event would slow every sender.
            if last_skip_save.elapsed() >= SKIP_SAVE_INTERVAL {
                last_skip_save = Instant::now();
                let _not_awaited = shared.update(s, asv, |state, _| {
                    if state.pending.is_empty() {
                        state.cursor = upto;
                    }
                })?;
            }
        }
        tokio::select! {
            changed = head_rx.changed() => if changed.is_err() { return Ok(()) },
            edu = next_edu(&mut edus) => {
                if let Some(edu) = edu && edu_wanted(s, asv, &edu)? {
                    pending_edus.push(edu.event.clone());
                }
            }
            _ = s.notifier.stopped() => return Ok(()),
        }
    }
}

/// The sender: one transaction in flight, retried with backoff until acknowledged.
async fn send_in_order(asv: &AppService, shared: &Shared, s: &Services) -> Result<()> {
    let http = outbound::client();
    let mut retry = FIRST_RETRY;
    loop {
        let front = {
            let state = shared.state.lock();
            state
                .pending
                .first()
                .filter(|t| t.txn_id <= shared.durable_txn.load(Ordering::SeqCst))
                .cloned()
        };
        let Some(txn) = front else {
            tokio::select! {
                _ = shared.prepared.notified() => continue,
                _ = s.notifier.stopped() => return Ok(()),
            }
        };
        if let Err(e) = send(&http, asv, &txn).await {
            tracing::warn!(appservice = asv.id(), txn = txn.txn_id, error = %e, retry_in = ?retry, "transaction failed");
            tokio::select! {
                _ = tokio::time::sleep(retry) => retry = (retry * 2).min(MAX_RETRY),
                _ = asv.reachable.notified() => retry = FIRST_RETRY,
                _ = s.notifier.stopped() => return Ok(()),
            }
            continue;
        }
        retry = FIRST_RETRY;
        // Not waited for: if the acknowledgement is lost in a crash, the same transaction is
        // sent again and the appservice recognises its txnId.
        let _not_awaited = shared.update(s, asv, |state, batch| {
            batch.delete(Table::AppserviceState, body_key(asv, txn.txn_id));
            state.pending.retain(|t| t.txn_id != txn.txn_id);
            state.cursor = state.cursor.max(txn.upto);
        })?;
        shared.acked.notify_one();
    }
}

/// Reads `pending` as stored now (a list) or as stored before transactions were prepared
/// ahead (one or none).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<PendingTxn>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Many(Vec<PendingTxn>),
        One(PendingTxn),
    }
    Ok(match Option::<Stored>::deserialize(d)? {
        None => Vec::new(),
        Some(Stored::Many(list)) => list,
        Some(Stored::One(txn)) => vec![txn],
    })
}

/// `{"events": [...]}`, with the ephemeral events under the stable and the MSC2409 name.
fn transaction_body(events: &[Box<RawJsonValue>], edus: &[serde_json::Value]) -> String {
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
async fn next_edu(
    edus: &mut Option<tokio::sync::broadcast::Receiver<Arc<Edu>>>,
) -> Option<Arc<Edu>> {
    match edus {
        // Lagged: some were missed, which ephemeral data allows. (The sender lives as long as
        // the server, so the channel never closes under us.)
        Some(rx) => rx.recv().await.ok(),
        None => std::future::pending().await,
    }
}

/// Typing and receipts of rooms the appservice is interested in; presence of its users.
fn edu_wanted(s: &Services, asv: &AppService, edu: &Edu) -> Result<bool> {
    match &edu.room_id {
        Some(room_id) => room_wanted(s, asv, room_id),
        None => Ok(edu.event["sender"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
            .is_some_and(|u| asv.owns_user(&u))),
    }
}

async fn send(
    http: &reqwest::Client,
    asv: &AppService,
    txn: &PendingTxn,
) -> std::result::Result<(), String> {
    let url = outbound::endpoint(asv, &format!("transactions/{}", txn.txn_id)).ok_or("no url")?;
    let res = http
        .put(url)
        .bearer_auth(&asv.registration.hs_token)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(txn.body.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", res.status()))
    }
}

/// The interesting events in `(cursor, head]`, at most [`MAX_EVENTS`], and the position up to
/// which the stream was read.
fn collect(
    s: &Services,
    asv: &AppService,
    cursor: u64,
    head: u64,
    rooms: &mut RoomInterest,
) -> Result<(Vec<Box<RawJsonValue>>, u64)> {
    let mut out = Vec::new();
    let mut upto = cursor;
    rooms.expire();
    loop {
        // Never read (and parse) more than the transaction can still take.
        let events = s
            .rooms
            .events_in_range(upto, head, MAX_EVENTS - out.len())?;
        if events.is_empty() {
            return Ok((out, head.max(cursor)));
        }
        for (pos, event) in events {
            if event.pdu.kind == TimelineEventType::RoomMember {
                // Membership changed: the room's interest may have too.
                rooms.by_room.remove(&event.stored.room);
            }
            if interested(s, asv, &event, rooms)? {
                let view = EventView {
                    user: &asv.sender,
                    device: None,
                    format: ClientFormat::WithRoomId,
                };
                out.push(s.rooms.format_event(&event, view)?);
            }
            upto = pos;
            if out.len() == MAX_EVENTS {
                return Ok((out, upto));
            }
        }
    }
}

/// Per the spec: the sender or the member event's target is in the user namespace, or the room
/// is in the room namespace, has an alias in the alias namespace, or has a member in the user
/// namespace.
fn interested(
    s: &Services,
    asv: &AppService,
    event: &Loaded,
    rooms: &mut RoomInterest,
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
    if let Some(known) = rooms.by_room.get(&event.stored.room) {
        return Ok(*known);
    }
    let wanted = room_wanted(s, asv, &pdu.room_id)?;
    rooms.by_room.insert(event.stored.room, wanted);
    Ok(wanted)
}

/// Whether the appservice wants each room, by room short id. A member event forgets its room
/// at once; everything is forgotten every [`INTEREST_LIFETIME`], which covers aliases added
/// through the directory (they change no room event).
struct RoomInterest {
    by_room: HashMap<u64, bool>,
    since: Instant,
}

const INTEREST_LIFETIME: Duration = Duration::from_secs(1);

impl RoomInterest {
    fn new() -> Self {
        RoomInterest {
            by_room: HashMap::new(),
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
fn room_wanted(s: &Services, asv: &AppService, room_id: &RoomId) -> Result<bool> {
    let room = s.rooms.room(room_id)?;
    Ok(asv.owns_room(room_id.as_str())
        || s.rooms
            .room_aliases(room_id)?
            .iter()
            .any(|a| asv.owns_alias(a))
        || room.joined_members().iter().any(|u| asv.owns_user(u)))
}

fn load(s: &Services, asv: &AppService) -> Result<Option<PusherState>> {
    let corrupt = |detail: String| Error::internal(format!("corrupt appservice state: {detail}"));
    let Some(v) = s.store.get(Table::AppserviceState, asv.id().as_bytes())? else {
        return Ok(None);
    };
    let mut state: PusherState = serde_json::from_slice(&v).map_err(|e| corrupt(e.to_string()))?;
    for txn in state.pending.iter_mut().filter(|t| t.body.is_empty()) {
        let body = s
            .store
            .get(Table::AppserviceState, &body_key(asv, txn.txn_id))?
            .ok_or_else(|| corrupt(format!("transaction {} has no body", txn.txn_id)))?;
        txn.body = String::from_utf8(body.to_vec()).map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(Some(state))
}

/// Where a prepared transaction's body is stored, next to the state.
fn body_key(asv: &AppService, txn_id: u64) -> Vec<u8> {
    Key::new().str(asv.id()).u64(txn_id).into_vec()
}
