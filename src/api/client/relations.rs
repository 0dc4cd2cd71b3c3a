//! Event relationships: `/relations` (children of an event) and `/threads` (a room's threads).

use std::sync::Arc;

use axum::Router;
use ruma::{
    EventId, RoomId, UInt,
    api::{
        Direction as ApiDirection,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
    events::{TimelineEventType, relation::RelationType},
    serde::Raw,
};

use super::view;
use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    rooms::{Direction, RECURSION_DEPTH, RelationsQuery},
    services::Services,
    sync::{format_token, parse_token},
    users::Identity,
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, relations);
    let r = route(r, relations_by_type);
    let r = route(r, relations_by_type_and_event_type);
    route(r, threads)
}

/// Synapse's defaults: clients nearly always send a limit.
const DEFAULT_LIMIT: usize = 5;
const MAX_LIMIT: usize = 1000;

fn limit(requested: Option<UInt>) -> usize {
    requested
        .map(|l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT))
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT)
}

/// The parameters the three `/relations` endpoints share.
struct Params<'a> {
    room_id: &'a RoomId,
    event_id: &'a EventId,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: ApiDirection,
    limit: Option<UInt>,
    recurse: bool,
}

/// The response the three `/relations` endpoints share.
struct Page {
    chunk: Vec<Box<serde_json::value::RawValue>>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

/// Lists the children of an event the user may see. Someone who may not read the room gets
/// 403 (as Synapse answers), an unknown or invisible parent 404 (as the spec says).
fn page(
    s: &Services,
    who: &Identity,
    p: Params<'_>,
    rel_type: Option<&RelationType>,
    event_type: Option<&TimelineEventType>,
) -> Result<Page> {
    let (room, visibility) = s.rooms.readable(p.room_id, &who.user_id)?;
    let parent = s
        .rooms
        .event_pos(p.event_id)?
        .filter(|pos| visibility.can_see(*pos))
        .map(|pos| s.rooms.event(pos))
        .transpose()?
        .filter(|e| e.stored.room == room.short)
        .ok_or_else(|| Error::not_found("Event not found."))?;
    let query = RelationsQuery {
        rel_type,
        event_type,
        from: p.from.map(parse_token).transpose()?,
        to: p.to.map(parse_token).transpose()?,
        direction: match p.dir {
            ApiDirection::Backward => Direction::Backward,
            ApiDirection::Forward => Direction::Forward,
        },
        limit: limit(p.limit),
        recurse: p.recurse,
    };
    let found = s
        .rooms
        .relations(&parent.stored.event_id, &visibility, &query)?;
    let mut chunk = Vec::with_capacity(found.positions.len());
    for pos in found.positions {
        chunk.push(s.rooms.client_event(pos, view(who))?);
    }
    Ok(Page {
        chunk,
        next_batch: found.next.map(format_token),
        prev_batch: p.from.map(str::to_owned),
        recursion_depth: p.recurse.then(|| UInt::from(RECURSION_DEPTH)),
    })
}

macro_rules! respond {
    ($module:ident, $page:expr) => {{
        let page = $page;
        let mut response =
            $module::v1::Response::new(page.chunk.into_iter().map(Raw::from_json).collect());
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.recursion_depth = page.recursion_depth;
        Ok(response)
    }};
}

macro_rules! params {
    ($b:expr) => {
        Params {
            room_id: &$b.room_id,
            event_id: &$b.event_id,
            from: $b.from.as_deref(),
            to: $b.to.as_deref(),
            dir: $b.dir.clone(),
            limit: $b.limit,
            recurse: $b.recurse,
        }
    };
}

async fn relations(
    s: Arc<Services>,
    req: Ruma<get_relating_events::v1::Request>,
) -> Result<get_relating_events::v1::Response> {
    let b = &req.body;
    respond!(
        get_relating_events,
        page(&s, req.identity(), params!(b), None, None)?
    )
}

async fn relations_by_type(
    s: Arc<Services>,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let b = &req.body;
    respond!(
        get_relating_events_with_rel_type,
        page(&s, req.identity(), params!(b), Some(&b.rel_type), None)?
    )
}

async fn relations_by_type_and_event_type(
    s: Arc<Services>,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let b = &req.body;
    respond!(
        get_relating_events_with_rel_type_and_event_type,
        page(
            &s,
            req.identity(),
            params!(b),
            Some(&b.rel_type),
            Some(&b.event_type)
        )?
    )
}

/// `GET /rooms/{roomId}/threads`: thread roots by latest activity, each with its `m.thread`
/// bundle.
async fn threads(
    s: Arc<Services>,
    req: Ruma<get_threads::v1::Request>,
) -> Result<get_threads::v1::Response> {
    let who = req.identity();
    let b = &req.body;
    let (room, visibility) = s.rooms.readable(&b.room_id, &who.user_id)?;
    let participated_by = match &b.include {
        IncludeThreads::All => None,
        IncludeThreads::Participated => Some(&*who.user_id),
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown include value {:?}",
                other.as_str()
            )));
        }
    };
    let from = b.from.as_deref().map(parse_token).transpose()?;
    let (roots, next) =
        s.rooms
            .thread_roots(&room, &visibility, participated_by, from, limit(b.limit))?;
    let mut chunk = Vec::with_capacity(roots.len());
    for pos in roots {
        chunk.push(Raw::from_json(s.rooms.client_event(pos, view(who))?));
    }
    let mut response = get_threads::v1::Response::new(chunk);
    response.next_batch = next.map(format_token);
    Ok(response)
}
