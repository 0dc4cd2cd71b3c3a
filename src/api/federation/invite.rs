//! `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: another server's user invites a
//! local one. The work is the federation service's (`federation/invite.rs`).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
};
use ruma::{EventId, UserId};
use serde_json::Value;

use super::{federation, peer::Peer};
use crate::{
    error::Error,
    federation::{invite::InboundInvite, membership::room_id},
    services::Services,
};

pub(super) async fn invite(
    State(s): State<Arc<Services>>,
    Path((room, event)): Path<(String, String)>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    let room_id = room_id(&room)?;
    let event_id = EventId::parse(&event).map_err(|_| Error::invalid_param("Invalid event id"))?;
    let body = peer.raw()?;
    // The invitee must be a user here: read before the event is checked, from its state key.
    let invitee: Option<String> = serde_json::from_str::<Value>(body.get())
        .ok()
        .and_then(|b| b["event"]["state_key"].as_str().map(str::to_owned));
    let invitee = invitee
        .and_then(|u| UserId::parse(u).ok())
        .ok_or_else(|| Error::bad_json("The invite has no valid invitee"))?;
    if invitee.server_name() != s.config.server_name || !s.user_is_active(&invitee).await? {
        return Err(Error::not_found("Unknown user"));
    }
    let request = InboundInvite {
        origin: &peer.origin,
        from: peer.from,
        room_id: &room_id,
        event_id: &event_id,
        body: &body,
    };
    federation(&s)?
        .receive_invite(&s.rooms, request)
        .await
        .map(Json)
}
