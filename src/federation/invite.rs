//! Invites across servers (`PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`), both ways.
//!
//! In: another server's user invites a local user. The event is checked, signed by this
//! server (the invitee's server must sign an invite), and, for a room this server does not
//! follow, recorded with the stripped state the inviter sent so the user's sync lists it
//! (`rooms/adopt.rs`); the user then joins through the inviter's server.
//! Out: a local user invites another server's user: the invite is built here, signed by the
//! invitee's server, and appended once it comes back.

use std::net::IpAddr;

use reqwest::Method;
use ruma::{
    EventId, OwnedEventId, RoomId, RoomVersionId, ServerName, UserId,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
    signatures::hash_and_sign_event,
};
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use super::{
    Federation,
    join::{encode, peer_error},
    membership::incompatible,
};
use crate::{
    error::{Error, Result},
    events::{EventTemplate, Incoming, SUPPORTED_ROOM_VERSIONS, incoming, rules_for},
    rooms::{Accepted, RoomService, member_target, membership_of},
};

/// The most stripped state events kept with an invite.
const MAX_STRIPPED: usize = 50;

/// An inbound invite's request.
pub(crate) struct InboundInvite<'a> {
    pub(crate) origin: &'a ServerName,
    pub(crate) from: IpAddr,
    pub(crate) room_id: &'a RoomId,
    pub(crate) event_id: &'a EventId,
    pub(crate) body: &'a RawJsonValue,
}

#[derive(Deserialize)]
struct InviteBody {
    room_version: RoomVersionId,
    event: Box<RawJsonValue>,
    #[serde(default)]
    invite_room_state: Vec<Box<RawJsonValue>>,
}

impl Federation {
    /// Takes another server's invite of a local user (who the caller checked exists); answers
    /// `{"event": …}` with the event signed by this server too.
    pub(crate) async fn receive_invite(
        &self,
        rooms: &RoomService,
        request: InboundInvite<'_>,
    ) -> Result<Value> {
        let body: InviteBody = serde_json::from_str(request.body.get())
            .map_err(|e| Error::bad_json(format!("not an invite: {e}")))?;
        if !SUPPORTED_ROOM_VERSIONS.contains(&body.room_version) {
            return Err(incompatible(&body.room_version));
        }
        let rules = rules_for(&body.room_version)?;
        let invite = self
            .verify_pdu(&rules, &body.event, Some(request.from))
            .await?;
        let pdu = &invite.pdu;
        let invitee = member_target(pdu)
            .filter(|_| pdu.kind == TimelineEventType::RoomMember)
            .filter(|_| membership_of(pdu) == Some(MembershipState::Invite))
            .ok_or_else(|| Error::bad_json("Not an invite"))?;
        if invite.event_id != request.event_id || pdu.room_id != request.room_id {
            return Err(Error::bad_json("The event is not the one the path names"));
        }
        if pdu.sender.server_name() != request.origin {
            return Err(Error::forbidden("The inviter is not of the sending server"));
        }
        if invitee.server_name() != self.server_name {
            return Err(Error::bad_json("The invitee is not of this server"));
        }
        let mut object = incoming::parse_object(&invite.json)?;
        hash_and_sign_event(
            self.server_name.as_str(),
            &self.key.key_pair,
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| Error::internal(format!("cannot sign the invite: {e}")))?;
        let signed_json =
            serde_json::to_string(&object).map_err(|e| Error::internal(e.to_string()))?;
        let signed = Incoming {
            json: signed_json,
            ..invite
        };
        // A room a local user is in hears of the invite by a transaction too.
        if !rooms.followed_here(&signed.pdu.room_id, &self.server_name)? {
            let stripped: Vec<_> = body
                .invite_room_state
                .into_iter()
                .take(MAX_STRIPPED)
                .collect();
            rooms
                .record_remote_membership(body.room_version, &signed, &stripped)
                .await?;
        }
        Ok(json!({ "event": object }))
    }

    /// A local user invites `invitee` of another server: the invitee's server signs the
    /// invite, then it is appended.
    pub(crate) async fn invite_remote(
        &self,
        rooms: &RoomService,
        room_id: &RoomId,
        sender: &UserId,
        invitee: &UserId,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<OwnedEventId> {
        let room = rooms.require_joined(room_id, sender)?;
        let mut content = json!({ "membership": "invite" });
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        if is_direct {
            content["is_direct"] = true.into();
        }
        let template =
            EventTemplate::state_json(StateEventType::RoomMember, invitee.as_str(), &content);
        let (event_id, json) = rooms.build_unsent(&room, sender, template).await?;
        let event: Value =
            serde_json::from_str(&json).map_err(|e| Error::internal(e.to_string()))?;
        let stripped = rooms.stripped_state(&room, sender)?;
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            encode(room_id.as_str()),
            encode(event_id.as_str())
        );
        let body = json!({
            "room_version": room.version,
            "event": event,
            "invite_room_state": stripped,
        });
        let answer = self
            .client
            .send_signed(invitee.server_name(), Method::PUT, &path, Some(&body))
            .await
            .map_err(peer_error)?;
        let signed = answer
            .get("event")
            .ok_or_else(|| Error::bad_json("The invitee's server answered without the event"))?;
        let raw =
            serde_json::value::to_raw_value(signed).map_err(|e| Error::internal(e.to_string()))?;
        let checked = self.verify_pdu(&room.rules, &raw, None).await?;
        if checked.event_id != event_id {
            return Err(Error::bad_json("The invitee's server changed the invite"));
        }
        match rooms.append_remote(&room, checked).await? {
            Accepted::Appended(pending) => rooms.publish(&room, pending).await?,
            Accepted::Known => {}
            Accepted::SoftFailed(reason) => return Err(Error::forbidden(reason)),
        }
        Ok(event_id)
    }
}
