//! The transaction pusher: one task per appservice that pushes the events it is interested in,
//! in stream order, at most 100 per transaction, one transaction in flight.
//!
//! Its state is durable: a cursor (the stream position covered) and the pending transaction
//! (id, upper position, exact body). The pending transaction is stored before it is first sent,
//! so a retry, after a failure or a restart, sends the same txnId with the same content; the
//! cursor moves only once the appservice acknowledged it. Nothing is lost, nothing duplicated.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{RoomId, UserId, events::TimelineEventType};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue as RawJsonValue;

use super::{AppService, outbound};
use crate::{
    error::{Error, Result},
    events::ClientFormat,
    rooms::{EventView, Loaded},
    services::Services,
    storage::{Batch, Table},
    sync::Edu,
};

/// Events per transaction, as the spec suggests.
const MAX_EVENTS: usize = 100;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Serialize, Deserialize)]
struct PusherState {
    cursor: u64,
    next_txn: u64,
    pending: Option<PendingTxn>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PendingTxn {
    txn_id: u64,
    upto: u64,
    body: String,
}

/// Starts one pusher per appservice that has a URL.
pub fn run_pushers(services: &Arc<Services>) {
    for asv in services.appservices.all() {
        if outbound::endpoint(asv, "transactions").is_some() {
            tokio::spawn(push_loop(services.clone(), asv.clone()));
        }
    }
}

async fn push_loop(s: Arc<Services>, asv: Arc<AppService>) {
    if let Err(e) = push(&s, &asv).await {
        tracing::error!(appservice = asv.id(), error = %e, "appservice pusher stopped");
    }
}

async fn push(s: &Services, asv: &AppService) -> Result<()> {
    let http = outbound::client();
    let mut head_rx = s.stream.watch();
    let mut state = match load(s, asv)? {
        Some(state) => state,
        // A new registration starts from now, not from the beginning of history.
        None => PusherState {
            cursor: s.stream.head(),
            next_txn: 1,
            pending: None,
        },
    };
    let mut retry = FIRST_RETRY;
    // Ephemeral events ride along with the next transaction; they are not durable.
    let mut edus = asv.receive_ephemeral.then(|| s.notifier.subscribe_edus());
    let mut pending_edus: Vec<serde_json::Value> = Vec::new();
    loop {
        if let Some(pending) = &state.pending {
            if let Err(e) = send(&http, asv, pending).await {
                tracing::warn!(appservice = asv.id(), txn = pending.txn_id, error = %e, retry_in = ?retry, "transaction failed");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = s.notifier.stopped() => return Ok(()),
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
            retry = FIRST_RETRY;
            state.cursor = pending.upto;
            state.pending = None;
        }
        let head = *head_rx.borrow_and_update();
        if let Some(rx) = &mut edus {
            while let Ok(edu) = rx.try_recv() {
                if edu_wanted(s, asv, &edu)? {
                    pending_edus.push(edu.event.clone());
                }
            }
        }
        let (events, upto) = collect(s, asv, state.cursor, head)?;
        let moved = upto > state.cursor;
        if !events.is_empty() || !pending_edus.is_empty() {
            let body = transaction_body(&events, &pending_edus);
            pending_edus.clear();
            state.pending = Some(PendingTxn {
                txn_id: state.next_txn,
                upto,
                body,
            });
            state.next_txn += 1;
        }
        if moved || state.pending.is_some() {
            state.cursor = if state.pending.is_some() {
                state.cursor
            } else {
                upto
            };
            save(s, asv, &state).await?;
        }
        if state.pending.is_some() {
            continue;
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
) -> Result<(Vec<Box<RawJsonValue>>, u64)> {
    let mut out = Vec::new();
    let mut upto = cursor;
    // Room short id → whether the appservice is interested in the whole room.
    let mut rooms: HashMap<u64, bool> = HashMap::new();
    loop {
        let positions = s.rooms.event_positions(upto, head, 256)?;
        if positions.is_empty() {
            return Ok((out, head.max(cursor)));
        }
        for pos in positions {
            let event = s.rooms.event(pos)?;
            if event.pdu.kind == TimelineEventType::RoomMember {
                // Membership changed: the room's interest may have too.
                rooms.remove(&event.stored.room);
            }
            if interested(s, asv, &event, &mut rooms)? {
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
    rooms: &mut HashMap<u64, bool>,
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
    if let Some(known) = rooms.get(&event.stored.room) {
        return Ok(*known);
    }
    let wanted = room_wanted(s, asv, &pdu.room_id)?;
    rooms.insert(event.stored.room, wanted);
    Ok(wanted)
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
    s.store
        .get(Table::AppserviceState, asv.id().as_bytes())?
        .map(|v| {
            serde_json::from_slice(&v)
                .map_err(|e| Error::internal(format!("corrupt appservice state: {e}")))
        })
        .transpose()
}

/// Stores the state. A pending transaction must be on disk before it is sent (a retry must
/// resend it unchanged); a cursor moved over uninteresting events need not wait for the flush,
/// since replaying them after a crash sends nothing.
async fn save(s: &Services, asv: &AppService, state: &PusherState) -> Result<()> {
    let mut batch = Batch::new();
    batch.put(
        Table::AppserviceState,
        asv.id().as_bytes().to_vec(),
        serde_json::to_vec(state).expect("state serializes"),
    );
    if state.pending.is_some() {
        s.store.write_durable(batch).await?;
    } else {
        // Deliberately not awaited: see above.
        let _not_awaited = s.store.write(batch)?;
    }
    Ok(())
}
