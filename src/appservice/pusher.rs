//! The transaction pusher: one task per appservice that pushes the events it is interested in,
//! in stream order, at most 100 per transaction, one transaction in flight.
//!
//! Its state is durable: a cursor (the stream position covered) and the pending transaction
//! (id, upper position, exact body). The pending transaction is stored before it is first sent,
//! so a retry, after a failure or a restart, sends the same txnId with the same content; the
//! cursor moves only once the appservice acknowledged it. Nothing is lost, nothing duplicated.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{UserId, events::TimelineEventType};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue as RawJsonValue;

use super::{AppService, outbound};
use crate::{
    error::{Error, Result},
    events::ClientFormat,
    rooms::{EventView, Loaded},
    services::Services,
    storage::{Batch, Table},
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
        let (events, upto) = collect(s, asv, state.cursor, head)?;
        let moved = upto > state.cursor;
        if !events.is_empty() {
            let body = format!(
                "{{\"events\":[{}]}}",
                events.iter().map(|e| e.get()).collect::<Vec<_>>().join(",")
            );
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
            _ = s.notifier.stopped() => return Ok(()),
        }
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
    let room = s.rooms.room(&pdu.room_id)?;
    let wanted = asv.owns_room(pdu.room_id.as_str())
        || s.rooms
            .room_aliases(&pdu.room_id)?
            .iter()
            .any(|a| asv.owns_alias(a))
        || room.joined_members().iter().any(|u| asv.owns_user(u));
    rooms.insert(event.stored.room, wanted);
    Ok(wanted)
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

async fn save(s: &Services, asv: &AppService, state: &PusherState) -> Result<()> {
    let mut batch = Batch::new();
    batch.put(
        Table::AppserviceState,
        asv.id().as_bytes().to_vec(),
        serde_json::to_vec(state).expect("state serializes"),
    );
    s.store.write_durable(batch).await?;
    Ok(())
}
