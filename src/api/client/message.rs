//! Messages: send, redact, read one event, its context, and paginate history.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use ruma::{
    EventId, OwnedEventId, RoomId, UInt,
    api::{
        Direction as ApiDirection,
        client::{
            context::get_context,
            filter::{FilterDefinition, RoomEventFilter},
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::get_room_event,
        },
    },
    events::{StateEventType, TimelineEventType},
    serde::Raw,
};
use serde_json::{json, value::to_raw_value};

use super::view;
use crate::{
    api::ruma::{AuthRequirement, Ruma, authenticate, read_body, route},
    error::{Error, Result},
    events::EventTemplate,
    rooms::{Direction, RoomMeta, Txn, Visibility},
    services::Services,
    sync::{SyncFilter, format_token, parse_token},
    users::Identity,
};

pub fn routes(r: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    let r = route(r, send);
    let r = route(r, redact);
    let r = route(r, event);
    let r = route(r, context);
    route(r, messages)
}

const MAX_LIMIT: usize = 1000;

async fn send(
    s: Arc<Services>,
    req: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    let who = req.identity();
    let b = &req.body;
    let txn = Txn::new(who.device_id.clone(), b.txn_id.clone());
    let kind = TimelineEventType::from(b.event_type.to_string());
    if let Some(existing) = s
        .rooms
        .committed_txn_event(&who.user_id, &b.room_id, &kind, &txn)
        .await?
    {
        return Ok(send_message_event::v3::Response::new(existing));
    }
    // After the transaction lookup: a retry gets its first answer, not a 429, and costs nothing.
    // Appservices registered with `rate_limited: false` (bridges) are exempt, as in Synapse.
    if who
        .appservice
        .as_ref()
        .is_none_or(|a| a.registration.is_rate_limited())
    {
        s.send_limiter.check(who.user_id.as_str())?;
    }
    crate::support::policy::check_message(
        &s.support,
        &who.user_id,
        &b.room_id,
        &kind,
        b.body.json(),
    )?;
    let mut template = EventTemplate::message(kind, b.body.json().to_owned());
    // `?ts=` is honoured for appservices only (bridges keep the remote message's time).
    template.timestamp = b.timestamp.filter(|_| who.appservice.is_some());
    let event_id = s
        .rooms
        .send(&b.room_id, &who.user_id, template, Some(txn))
        .await?;
    s.presence.bump_active(&s.rooms, &who.user_id)?;
    Ok(send_message_event::v3::Response::new(event_id))
}

/// Sends a state event after the server-side checks the auth rules leave to us.
pub(super) async fn send_state_template(
    s: &Services,
    who: &Identity,
    room_id: &RoomId,
    template: EventTemplate,
) -> Result<OwnedEventId> {
    if template.kind == TimelineEventType::RoomMember {
        // Membership has its own endpoints, which keep profiles and invites consistent.
        if template.state_key.as_deref() != Some(who.user_id.as_str()) {
            return Err(Error::forbidden(
                "Use the membership endpoints to change others' membership",
            ));
        }
        // A per-room display name is bounded like the profile's.
        if let Ok(content) = serde_json::from_str::<serde_json::Value>(template.content.get())
            && let Some(name) = content.get("displayname").and_then(|d| d.as_str())
        {
            crate::users::check_displayname(name)?;
        }
    }
    crate::support::policy::check_state(&s.desk(), &who.user_id, &template.kind.to_string())?;
    s.rooms.send(room_id, &who.user_id, template, None).await
}

/// `PUT /rooms/{id}/state/{type}` (empty state key), which ruma has no path for.
pub(super) async fn send_state_empty_key(
    State(s): State<Arc<Services>>,
    Path((room_id, event_type)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Json<serde_json::Value>> {
    let (parts, body) = request.into_parts();
    let who = authenticate(&s, &parts, AuthRequirement::Required)?.expect("required");
    let room_id = RoomId::parse(&room_id).map_err(|e| Error::invalid_param(e.to_string()))?;
    let bytes = read_body(&s, body).await?;
    let content: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| Error::not_json("Content not JSON."))?;
    if !content.is_object() {
        return Err(Error::bad_json("Content must be a JSON object"));
    }
    let template = EventTemplate::state(
        StateEventType::from(event_type),
        "",
        to_raw_value(&content).expect("json"),
    );
    let event_id = send_state_template(&s, &who, &room_id, template).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

async fn redact(
    s: Arc<Services>,
    req: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    let who = req.identity();
    let b = &req.body;
    // Its own namespace: `/redact/{eventId}/{txnId}` is another endpoint than `/send`.
    let txn = Txn::new(who.device_id.clone(), format!("redact:{}", b.txn_id));
    let mut content = json!({ "redacts": b.event_id });
    if let Some(reason) = &b.reason {
        content["reason"] = json!(reason);
    }
    let template = EventTemplate::message(
        TimelineEventType::RoomRedaction,
        to_raw_value(&content).expect("json"),
    );
    let event_id = s
        .rooms
        .send(&b.room_id, &who.user_id, template, Some(txn))
        .await?;
    Ok(redact_event::v3::Response::new(event_id))
}

/// The position of an event the user may see, or `M_NOT_FOUND` (also for events they may not
/// see, so existence does not leak).
fn visible_event(
    s: &Services,
    room: &RoomMeta,
    visibility: &Visibility,
    event_id: &EventId,
) -> Result<u64> {
    let pos = s
        .rooms
        .event_pos(event_id)?
        .ok_or_else(|| Error::not_found("Event not found."))?;
    if s.rooms.event(pos)?.stored.room != room.short || !visibility.can_see(pos) {
        return Err(Error::not_found("Event not found."));
    }
    Ok(pos)
}

async fn event(
    s: Arc<Services>,
    req: Ruma<get_room_event::v3::Request>,
) -> Result<get_room_event::v3::Response> {
    let who = req.identity();
    let (room, visibility) = s.rooms.readable(&req.body.room_id, &who.user_id)?;
    let pos = visible_event(&s, &room, &visibility, &req.body.event_id)?;
    Ok(get_room_event::v3::Response::new(Raw::from_json(
        s.rooms.client_event(pos, view(who))?,
    )))
}

/// What a walk reads through: a room, as one user may see it, through one filter.
pub(super) struct Reader<'a> {
    pub(super) room: &'a RoomMeta,
    pub(super) visibility: &'a Visibility,
    pub(super) filter: &'a SyncFilter,
}

/// Events a walk looks at before it answers with what it found: a filter that matches nothing,
/// or history the user may not see, must not make one request read a whole room.
const MAX_WALK_SCAN: usize = 5_000;

/// Walks the timeline from `from` in `direction`, keeping visible events that pass `filter`,
/// until `limit` are found, `stop` (exclusive bound of a `to` token) is reached or
/// [`MAX_WALK_SCAN`] events were looked at. Returns the positions and the token to continue
/// from (`None` when history is exhausted). A `limit` of 0 finds nothing.
pub(super) fn walk(
    s: &Services,
    reader: &Reader<'_>,
    from: u64,
    direction: Direction,
    limit: usize,
    stop: Option<u64>,
) -> Result<(Vec<u64>, Option<u64>)> {
    let Reader {
        room,
        visibility,
        filter,
    } = reader;
    let mut out = Vec::new();
    let mut cursor = from;
    let mut scanned = 0;
    if limit == 0 {
        return Ok((out, Some(cursor)));
    }
    loop {
        if scanned >= MAX_WALK_SCAN {
            return Ok((out, Some(cursor)));
        }
        let batch = s.rooms.timeline_positions(
            room.short,
            cursor,
            direction,
            (limit * 2).clamp(16, 512),
        )?;
        if batch.is_empty() {
            return Ok((out, None));
        }
        for pos in batch {
            let beyond = match (direction, stop) {
                (Direction::Backward, Some(to)) => pos <= to,
                (Direction::Forward, Some(to)) => pos > to,
                _ => false,
            };
            if beyond {
                return Ok((out, None));
            }
            cursor = match direction {
                Direction::Backward => pos - 1,
                Direction::Forward => pos,
            };
            scanned += 1;
            if !visibility.can_see(pos) {
                continue;
            }
            let pdu = &s.rooms.event(pos)?.pdu;
            if filter.timeline_allows(pdu.kind.to_string().as_str(), &pdu.sender) {
                out.push(pos);
                if out.len() == limit {
                    return Ok((out, Some(cursor)));
                }
            }
        }
        if direction == Direction::Backward && cursor == 0 {
            return Ok((out, None));
        }
    }
}

pub(super) fn room_filter(filter: &RoomEventFilter) -> SyncFilter {
    let mut def = FilterDefinition::default();
    def.room.timeline = filter.clone();
    def.room.state.lazy_load_options = filter.lazy_load_options;
    SyncFilter::new(def)
}

/// ruma fills in the spec's default of 10 when the client sends no limit.
fn limit(requested: UInt) -> usize {
    usize::try_from(u64::from(requested))
        .unwrap_or(MAX_LIMIT)
        .clamp(1, MAX_LIMIT)
}

/// Member events of the senders of `positions`, for lazy-loading clients.
fn member_state(
    s: &Services,
    room: &RoomMeta,
    who: &Identity,
    positions: &[u64],
) -> Result<Vec<Raw<ruma::events::AnyStateEvent>>> {
    let mut senders = std::collections::BTreeSet::new();
    for pos in positions {
        senders.insert(s.rooms.event(*pos)?.pdu.sender.clone());
    }
    let mut out = Vec::new();
    for sender in senders {
        if let Some(pos) = s
            .rooms
            .state_pos(room.short, "m.room.member", sender.as_str())?
        {
            out.push(Raw::from_json(s.rooms.client_event(pos, view(who))?));
        }
    }
    Ok(out)
}

async fn messages(
    s: Arc<Services>,
    req: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let who = req.identity();
    let b = &req.body;
    let (room, visibility) = s.rooms.readable(&b.room_id, &who.user_id)?;
    let direction = match b.dir {
        ApiDirection::Backward => Direction::Backward,
        ApiDirection::Forward => Direction::Forward,
    };
    let filter = room_filter(&b.filter);
    if let Some(n) = b.from.as_deref().and_then(pre_join_token) {
        return pre_join_page(&s, &room, who, &filter, n, direction, limit(b.limit)).await;
    }
    let from = match &b.from {
        Some(token) => parse_token(token)?,
        None if direction == Direction::Backward => s.stream.head(),
        None => 0,
    };
    let stop = b.to.as_deref().map(parse_token).transpose()?;
    let (positions, next) = walk(
        &s,
        &Reader {
            room: &room,
            visibility: &visibility,
            filter: &filter,
        },
        from,
        direction,
        limit(b.limit),
        stop,
    )?;
    let mut response = get_message_events::v3::Response::new();
    response.start = format_token(from);
    response.end = next.map(format_token);
    for pos in &positions {
        response
            .chunk
            .push(Raw::from_json(s.rooms.client_event(*pos, view(who))?));
    }
    if filter.lazy_load_members {
        response.state = member_state(&s, &room, who, &positions)?;
    }
    // Past the start of another server's room as this server has it: what came before the
    // join, from that server (`h` tokens from here on).
    let wanted = limit(b.limit) - positions.len();
    if direction == Direction::Backward && next.is_none() && stop.is_none() && wanted > 0 {
        let older = pre_join_page(&s, &room, who, &filter, 0, direction, wanted).await?;
        response.chunk.extend(older.chunk);
        response.end = older.end;
    }
    Ok(response)
}

/// The place an `h` token names in a room's history from before this server joined it.
fn pre_join_token(token: &str) -> Option<u64> {
    token.strip_prefix('h')?.parse().ok()
}

/// Events from before this server joined another server's room, from the `from`th back: only
/// backward (a client paginating forward from there meets the join's timeline through sync).
async fn pre_join_page(
    s: &Services,
    room: &RoomMeta,
    who: &Identity,
    filter: &SyncFilter,
    from: u64,
    direction: Direction,
    limit: usize,
) -> Result<get_message_events::v3::Response> {
    let mut response = get_message_events::v3::Response::new();
    response.start = format!("h{from}");
    let (Some(federation), Direction::Backward) = (&s.federation, direction) else {
        return Ok(response);
    };
    if room.room_id.server_name() == Some(&*s.config.server_name) {
        return Ok(response);
    }
    let events = federation
        .pre_join_page(&s.rooms, room, from, limit)
        .await?;
    if let Some((n, _)) = events.last() {
        response.end = Some(format!("h{}", n + 1));
    }
    for (_, event) in events {
        if filter.timeline_allows(event.pdu.kind.to_string().as_str(), &event.pdu.sender) {
            response
                .chunk
                .push(Raw::from_json(s.rooms.format_event(&event, view(who))?));
        }
    }
    Ok(response)
}

async fn context(
    s: Arc<Services>,
    req: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response> {
    let who = req.identity();
    let b = &req.body;
    let (room, visibility) = s.rooms.readable(&b.room_id, &who.user_id)?;
    let pos = visible_event(&s, &room, &visibility, &b.event_id)?;
    let filter = room_filter(&b.filter);
    let total = usize::try_from(u64::from(b.limit))
        .unwrap_or(MAX_LIMIT)
        .min(MAX_LIMIT);
    let before_limit = total / 2;
    let after_limit = total - before_limit;
    let reader = Reader {
        room: &room,
        visibility: &visibility,
        filter: &filter,
    };
    let (before, _) = walk(
        &s,
        &reader,
        pos - 1,
        Direction::Backward,
        before_limit,
        None,
    )?;
    let (after, _) = walk(&s, &reader, pos, Direction::Forward, after_limit, None)?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(format_token(
        before.last().map(|p| p - 1).unwrap_or(pos - 1),
    ));
    response.end = Some(format_token(after.last().copied().unwrap_or(pos)));
    response.event = Some(Raw::from_json(s.rooms.client_event(pos, view(who))?));
    for p in &before {
        response
            .events_before
            .push(Raw::from_json(s.rooms.client_event(*p, view(who))?));
    }
    for p in &after {
        response
            .events_after
            .push(Raw::from_json(s.rooms.client_event(*p, view(who))?));
    }
    let mut all: Vec<u64> = before.iter().chain(after.iter()).copied().collect();
    all.push(pos);
    if filter.lazy_load_members {
        response.state = member_state(&s, &room, who, &all)?;
    } else {
        for (kind, key, _) in s.rooms.current_state_keys(room.short)? {
            if let Some(p) = s.rooms.state_pos_at(room.short, &kind, &key, pos)? {
                response
                    .state
                    .push(Raw::from_json(s.rooms.client_event(p, view(who))?));
            }
        }
    }
    Ok(response)
}
