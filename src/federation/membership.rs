//! Users of other servers joining, knocking on and leaving this server's rooms:
//! `make_join`/`send_join` (v2), `make_knock`/`send_knock` and `make_leave`/`send_leave` (v2),
//! as the spec's "Joining Rooms", "Knocking upon a room" and "Leaving Rooms" describe them. The remote server asks for a template, signs the event and sends it back;
//! this server checks it like any remote event and answers a join with the room's state.

use std::net::IpAddr;

use axum::http::StatusCode;
use ruma::{
    EventId, OwnedRoomId, RoomId, RoomVersionId, ServerName, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use super::Federation;
use crate::{
    error::{Error, Result},
    events::Incoming,
    rooms::{Accepted, RoomMeta, RoomService, membership_of},
};

/// A `make_join`/`make_knock`/`make_leave` request: who asks, for whom, in which room.
pub(crate) struct MakeMembership<'a> {
    pub(crate) origin: &'a ServerName,
    pub(crate) room_id: &'a RoomId,
    pub(crate) user_id: &'a UserId,
    /// The room versions the asking server supports (`ver`); for joins and knocks.
    pub(crate) versions: Option<&'a [RoomVersionId]>,
}

/// A `send_join`/`send_knock`/`send_leave` request.
pub(crate) struct SendMembership<'a> {
    pub(crate) origin: &'a ServerName,
    pub(crate) from: IpAddr,
    pub(crate) room_id: &'a RoomId,
    pub(crate) event_id: &'a EventId,
    pub(crate) event: &'a RawJsonValue,
}

impl Federation {
    /// The template for a remote user's join or leave: `{room_version, event}`.
    pub(crate) async fn make_membership(
        &self,
        rooms: &RoomService,
        request: MakeMembership<'_>,
        membership: MembershipState,
    ) -> Result<Value> {
        if request.user_id.server_name() != request.origin {
            return Err(Error::forbidden("The user is not of the asking server"));
        }
        let room = rooms.room(request.room_id)?;
        rooms.require_server_allowed(&room, request.origin)?;
        if let Some(versions) = request.versions
            && !versions.contains(&room.version)
        {
            return Err(incompatible(&room.version));
        }
        let event = rooms
            .membership_template(&room, request.user_id, membership)
            .await?;
        Ok(json!({ "room_version": room.version, "event": event }))
    }

    /// Takes a remote user's signed join or leave. A join is answered with the room's state
    /// before it and the auth chain (`send_join` v2), a leave with `{}` (`send_leave` v2).
    pub(crate) async fn send_membership(
        &self,
        rooms: &RoomService,
        request: SendMembership<'_>,
        membership: MembershipState,
    ) -> Result<Value> {
        let room = rooms.room(request.room_id)?;
        rooms.require_server_allowed(&room, request.origin)?;
        let answer = membership.clone();
        // A restricted join this server vouches for carries its signature from here on.
        let vouched = match membership {
            MembershipState::Join => self.vouch(rooms, &room, request.event)?,
            _ => None,
        };
        let request = SendMembership {
            event: vouched.as_deref().unwrap_or(request.event),
            ..request
        };
        let incoming = self.membership_event(&room, &request, membership).await?;
        let user = incoming.pdu.sender.clone();
        match rooms.append_remote(&room, incoming).await? {
            Accepted::Appended(pending) => rooms.publish(&room, pending).await?,
            Accepted::Known => {}
            Accepted::SoftFailed(reason) => return Err(Error::forbidden(reason)),
        }
        match answer {
            MembershipState::Join => {}
            // What the knocking user's server shows them of the room until they are let in.
            // Without the knock itself, which the knocker's server adds (as Synapse does).
            MembershipState::Knock => {
                let stripped: Vec<Box<RawJsonValue>> = rooms
                    .stripped_state(&room, &user)?
                    .into_iter()
                    .filter(|e| {
                        #[derive(serde::Deserialize)]
                        struct Kind<'a> {
                            #[serde(rename = "type", borrow)]
                            kind: &'a str,
                        }
                        serde_json::from_str::<Kind<'_>>(e.get())
                            .is_ok_and(|k| k.kind != "m.room.member")
                    })
                    .collect();
                return Ok(json!({ "knock_room_state": stripped }));
            }
            _ => return Ok(json!({})),
        }
        let (state, auth_chain) = rooms.state_and_auth_chain(&room, Some(&user)).await?;
        let mut answer = json!({
            "origin": self.server_name,
            "state": state,
            "auth_chain": auth_chain,
            "members_omitted": false,
            "servers_in_room": rooms.servers_in_room(&room),
        });
        if let Some(event) = vouched {
            answer["event"] =
                serde_json::to_value(event).map_err(|e| Error::internal(e.to_string()))?;
        }
        Ok(answer)
    }

    /// A restricted join naming one of this server's users as who vouches for it
    /// (`join_authorised_via_users_server`), signed by this server once the joining user may
    /// join (`RoomService::join_authoriser`); `None` when it names nobody here.
    fn vouch(
        &self,
        rooms: &RoomService,
        room: &RoomMeta,
        raw: &RawJsonValue,
    ) -> Result<Option<Box<RawJsonValue>>> {
        let mut object = crate::events::incoming::parse_object(raw.get())?;
        let field = |object: &ruma::CanonicalJsonObject, path: &[&str]| -> Option<String> {
            let mut value = object.get(path[0])?;
            for key in &path[1..] {
                match value {
                    ruma::CanonicalJsonValue::Object(map) => value = map.get(*key)?,
                    _ => return None,
                }
            }
            match value {
                ruma::CanonicalJsonValue::String(s) => Some(s.clone()),
                _ => None,
            }
        };
        let authoriser = field(&object, &["content", "join_authorised_via_users_server"])
            .and_then(|u| ruma::OwnedUserId::try_from(u).ok());
        if authoriser.is_none_or(|a| a.server_name() != self.server_name) {
            return Ok(None);
        }
        let sender = field(&object, &["sender"])
            .and_then(|u| ruma::OwnedUserId::try_from(u).ok())
            .ok_or_else(|| Error::bad_json("a join without a sender"))?;
        rooms.join_authoriser(room, &sender)?;
        // Signed as events are, over the redacted event: the content hash it recomputes is the
        // one the sender's signature covers, so a tampered join still fails that check.
        crate::events::hash_and_sign(&self.key, &room.rules, &mut object)?;
        serde_json::value::to_raw_value(&object)
            .map(Some)
            .map_err(|e| Error::internal(e.to_string()))
    }

    /// The membership event a `send_*` carries, checked: the one the path names, a member event
    /// of its sender about itself, setting `membership`, from a user of the sending server.
    async fn membership_event(
        &self,
        room: &RoomMeta,
        request: &SendMembership<'_>,
        membership: MembershipState,
    ) -> Result<Incoming> {
        let incoming = self
            .verify_pdu(&room.rules, request.event, Some(request.from))
            .await?;
        let pdu = &incoming.pdu;
        if incoming.event_id != request.event_id {
            return Err(Error::bad_json("The event id does not match the event"));
        }
        if pdu.room_id != room.room_id {
            return Err(Error::bad_json("The event is of another room"));
        }
        if pdu.kind != TimelineEventType::RoomMember
            || pdu.state_key.as_deref() != Some(pdu.sender.as_str())
            || membership_of(pdu) != Some(membership)
        {
            return Err(Error::bad_json(
                "Not a membership event of its sender with the expected membership",
            ));
        }
        if pdu.sender.server_name() != request.origin {
            return Err(Error::forbidden("The user is not of the sending server"));
        }
        Ok(incoming)
    }
}

/// `400 M_INCOMPATIBLE_ROOM_VERSION` with the room's version, as the spec and Synapse answer.
pub(crate) fn incompatible(version: &RoomVersionId) -> Error {
    Error::Matrix {
        status: StatusCode::BAD_REQUEST,
        errcode: "M_INCOMPATIBLE_ROOM_VERSION",
        message: format!("Your homeserver does not support the features required to join this room (version {version})").into(),
        extra: Some(json!({ "room_version": version })),
    }
}

/// The room id of a path, or `400 M_INVALID_PARAM`.
pub(crate) fn room_id(raw: &str) -> Result<OwnedRoomId> {
    RoomId::parse(raw).map_err(|_| Error::invalid_param("Invalid room id"))
}
