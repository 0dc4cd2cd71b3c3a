//! Peers reading a room's events: `GET /event/{eventId}`, `GET /state_ids/{roomId}` and
//! `GET /state/{roomId}` (the state before an event), `GET /backfill/{roomId}`,
//! `GET /event_auth/{roomId}/{eventId}` and `POST /get_missing_events/{roomId}`.
//!
//! Who may read: a server with a user joined to the room (`RoomService::server_may_read`),
//! each event as the room's history visibility lets it see it (redacted otherwise:
//! `RoomService::server_view`).
//! How much: at most 100 events by backfill, 20 missing events, the auth chain bound.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, Query, RawQuery, State},
};
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};

use super::peer::Peer;
use crate::{
    error::Error,
    federation::membership::room_id,
    rooms::{RoomMeta, RoomService},
    services::Services,
};

const MAX_BACKFILL: usize = 100;
const MAX_MISSING: usize = 20;

/// The room, when `origin` may read it; `403 M_FORBIDDEN` otherwise (and for unknown rooms,
/// which a peer not in them cannot tell apart).
fn readable(
    rooms: &RoomService,
    raw_room: &str,
    origin: &ServerName,
) -> Result<Arc<RoomMeta>, Error> {
    let room = rooms
        .room(&room_id(raw_room)?)
        .map_err(|_| Error::forbidden("Host not in room"))?;
    if !rooms.server_may_read(&room, origin) {
        return Err(Error::forbidden("Host not in room"));
    }
    rooms.require_server_allowed(&room, origin)?;
    Ok(room)
}

fn event_id(raw: &str) -> Result<OwnedEventId, Error> {
    EventId::parse(raw).map_err(|_| Error::invalid_param("Invalid event id"))
}

/// A transaction-shaped answer carrying `pdus`.
fn pdus_answer(s: &Services, pdus: Vec<Box<serde_json::value::RawValue>>) -> Json<Value> {
    Json(json!({
        "origin": s.config.server_name,
        "origin_server_ts": MilliSecondsSinceUnixEpoch::now(),
        "pdus": pdus,
    }))
}

pub(super) async fn event(
    State(s): State<Arc<Services>>,
    Path(id): Path<String>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    let id = event_id(&id)?;
    let not_found = || Error::not_found("Event not found");
    let pdu = s.rooms.known_pdu(&id)?.ok_or_else(not_found)?;
    let room = readable(&s.rooms, pdu.room_id.as_str(), &peer.origin).map_err(|_| not_found())?;
    // In the timeline: as the room's history visibility lets the server see it. An outlier
    // (an auth chain's event) is the room's authorization, which every member server reads.
    let json = match s.rooms.event_pos(&id)? {
        Some(pos) => {
            let view = s.rooms.server_view(&room, &peer.origin)?;
            s.rooms.as_seen_by(&room, &view, pos)?
        }
        None => s.rooms.known_json(&id)?.ok_or_else(not_found)?,
    };
    Ok(pdus_answer(&s, vec![json]))
}

/// The state before `?event_id=` and its auth chain, as ids or as events.
async fn state_at(
    s: &Services,
    room: &str,
    query: &HashMap<String, String>,
    peer: &Peer,
    ids: bool,
) -> Result<Json<Value>, Error> {
    let room = readable(&s.rooms, room, &peer.origin)?;
    let at = event_id(
        query
            .get("event_id")
            .ok_or_else(|| Error::missing_param("Missing event_id"))?,
    )?;
    let pos = s
        .rooms
        .event_pos(&at)?
        .filter(|pos| {
            s.rooms
                .event(*pos)
                .is_ok_and(|e| e.stored.room == room.short)
        })
        .ok_or_else(|| Error::not_found("Event not found in this room"))?;
    let state = s.rooms.state_before(&room, pos)?;
    let state_ids: Vec<OwnedEventId> = state.iter().map(|(id, _)| id.clone()).collect();
    let chain = s.rooms.auth_chain(&state_ids)?;
    if ids {
        let chain_ids: Vec<String> = chain
            .iter()
            .filter_map(|json| {
                let object: ruma::CanonicalJsonObject = serde_json::from_str(json.get()).ok()?;
                crate::events::incoming::event_id_of(&object, &room.rules)
                    .ok()
                    .map(|id| id.to_string())
            })
            .collect();
        return Ok(Json(
            json!({ "pdu_ids": state_ids, "auth_chain_ids": chain_ids }),
        ));
    }
    let pdus: Vec<_> = state
        .iter()
        .map(|(_, pos)| Ok(s.rooms.event(*pos)?.stored.pdu.clone()))
        .collect::<Result<_, Error>>()?;
    Ok(Json(json!({ "pdus": pdus, "auth_chain": chain })))
}

pub(super) async fn state_ids(
    State(s): State<Arc<Services>>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    state_at(&s, &room, &query, &peer, true).await
}

pub(super) async fn state(
    State(s): State<Arc<Services>>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    state_at(&s, &room, &query, &peer, false).await
}

/// `?v=…&v=…&limit=n`: the events before those, theirs included.
pub(super) async fn backfill(
    State(s): State<Arc<Services>>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    let room = readable(&s.rooms, &room, &peer.origin)?;
    let query = query.unwrap_or_default();
    let mut from = Vec::new();
    let mut limit = 10;
    for (k, v) in form_urlencoded::parse(query.as_bytes()).take(64) {
        match &*k {
            "v" => from.push(event_id(&v)?),
            "limit" => {
                limit = v
                    .parse()
                    .map_err(|_| Error::invalid_param("Invalid limit"))?
            }
            _ => {}
        }
    }
    let pdus = s
        .rooms
        .backfill(&room, &peer.origin, &from, limit.min(MAX_BACKFILL))?;
    Ok(pdus_answer(&s, pdus))
}

pub(super) async fn event_auth(
    State(s): State<Arc<Services>>,
    Path((room, id)): Path<(String, String)>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    let room = readable(&s.rooms, &room, &peer.origin)?;
    let id = event_id(&id)?;
    let pdu = s
        .rooms
        .known_pdu(&id)?
        .filter(|p| p.room_id == room.room_id)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let chain = s.rooms.auth_chain(&[pdu.event_id])?;
    Ok(Json(json!({ "auth_chain": chain })))
}

#[derive(Deserialize)]
struct MissingRequest {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    earliest_events: Vec<OwnedEventId>,
    latest_events: Vec<OwnedEventId>,
}

pub(super) async fn get_missing_events(
    State(s): State<Arc<Services>>,
    Path(room): Path<String>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    let room = readable(&s.rooms, &room, &peer.origin)?;
    let request: MissingRequest =
        serde_json::from_value(peer.json()?).map_err(|e| Error::bad_json(e.to_string()))?;
    if request.earliest_events.len() > MAX_BACKFILL || request.latest_events.len() > MAX_BACKFILL {
        return Err(Error::bad_json("Too many events named"));
    }
    let limit = request.limit.unwrap_or(10).min(MAX_MISSING);
    let events = s.rooms.missing_events(
        &room,
        &peer.origin,
        &request.earliest_events,
        &request.latest_events,
        limit,
    )?;
    Ok(Json(json!({ "events": events })))
}
