//! Remote users joining, knocking on and leaving this server's rooms: `GET make_join`,
//! `PUT send_join` (v2), `GET make_knock`, `PUT send_knock`, `GET make_leave`, `PUT send_leave`
//! (v2). The work is the federation service's
//! (`federation/membership.rs`).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, RawQuery, State},
};
use ruma::{EventId, RoomVersionId, UserId, events::room::member::MembershipState};
use serde_json::Value;

use super::{federation, peer::Peer};
use crate::{
    error::Error,
    federation::membership::{MakeMembership, SendMembership, room_id},
    services::Services,
};

/// The most `ver` parameters read: more than there are room versions.
const MAX_VERSIONS: usize = 32;

pub(super) async fn make_join(
    State(s): State<Arc<Services>>,
    Path((room, user)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    make_versioned(&s, &peer, (&room, &user), query, MembershipState::Join).await
}

pub(super) async fn make_knock(
    State(s): State<Arc<Services>>,
    Path((room, user)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    make_versioned(&s, &peer, (&room, &user), query, MembershipState::Knock).await
}

/// A join or knock template, for a server that names the room versions it supports.
async fn make_versioned(
    s: &Services,
    peer: &Peer,
    (room, user): (&str, &str),
    query: Option<String>,
    membership: MembershipState,
) -> Result<Json<Value>, Error> {
    // Without `ver` the asking server supports room version 1 only (spec, `make_join`).
    let versions: Vec<RoomVersionId> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "ver")
        .take(MAX_VERSIONS)
        .filter_map(|(_, v)| RoomVersionId::try_from(v.as_ref()).ok())
        .collect();
    let versions = if versions.is_empty() {
        vec![RoomVersionId::V1]
    } else {
        versions
    };
    make(s, peer, room, user, Some(&versions), membership).await
}

pub(super) async fn make_leave(
    State(s): State<Arc<Services>>,
    Path((room, user)): Path<(String, String)>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    make(&s, &peer, &room, &user, None, MembershipState::Leave).await
}

async fn make(
    s: &Services,
    peer: &Peer,
    room: &str,
    user: &str,
    versions: Option<&[RoomVersionId]>,
    membership: MembershipState,
) -> Result<Json<Value>, Error> {
    let room_id = room_id(room)?;
    let user_id = UserId::parse(user).map_err(|_| Error::invalid_param("Invalid user id"))?;
    let request = MakeMembership {
        origin: &peer.origin,
        room_id: &room_id,
        user_id: &user_id,
        versions,
    };
    federation(s)?
        .make_membership(&s.rooms, request, membership)
        .await
        .map(Json)
}

pub(super) async fn send_join(
    State(s): State<Arc<Services>>,
    Path((room, event)): Path<(String, String)>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    send(&s, &peer, &room, &event, MembershipState::Join).await
}

pub(super) async fn send_knock(
    State(s): State<Arc<Services>>,
    Path((room, event)): Path<(String, String)>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    send(&s, &peer, &room, &event, MembershipState::Knock).await
}

pub(super) async fn send_leave(
    State(s): State<Arc<Services>>,
    Path((room, event)): Path<(String, String)>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    send(&s, &peer, &room, &event, MembershipState::Leave).await
}

async fn send(
    s: &Services,
    peer: &Peer,
    room: &str,
    event: &str,
    membership: MembershipState,
) -> Result<Json<Value>, Error> {
    let event_id = EventId::parse(event).map_err(|_| Error::invalid_param("Invalid event id"))?;
    let (room_id, body) = (room_id(room)?, peer.raw()?);
    let request = SendMembership {
        origin: &peer.origin,
        from: peer.from,
        room_id: &room_id,
        event_id: &event_id,
        event: &body,
    };
    federation(s)?
        .send_membership(&s.rooms, request, membership)
        .await
        .map(Json)
}
