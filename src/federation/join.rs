//! A local user joining a room of another server (spec v1.16, "Joining Rooms"): ask a resident
//! server for a join template (`make_join`, naming the room versions this server supports),
//! sign it, send it (`send_join` v2), check the state and auth chain it answers with, take the
//! room in (`rooms/adopt.rs`) and append the join.

use std::collections::HashMap;

use reqwest::Method;
use ruma::{CanonicalJsonObject, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, UserId};
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use super::{Federation, client::PeerError, membership::incompatible};
use crate::{
    error::{Error, Result},
    events::{Incoming, SUPPORTED_ROOM_VERSIONS, check_auth_events, hash_and_sign, rules_for},
    rooms::{Accepted, MemberProfile, RemoteState, RoomService},
};

/// The most resident servers tried, in the order given.
pub(super) const MAX_TRIED: usize = 5;

/// A local user's member event to be made from a template.
pub(super) struct Member<'a> {
    pub(super) room_id: &'a RoomId,
    pub(super) user: &'a UserId,
    pub(super) profile: &'a MemberProfile,
    pub(super) membership: &'static str,
    pub(super) reason: Option<&'a str>,
}
/// The largest `send_join` answer read: a room's whole state and auth chain (a room of 10,000
/// state events is about 10 MiB).
const MAX_JOIN_ANSWER: u64 = 128 << 20;

impl Federation {
    /// Joins `user` to `room_id` through the first of `via` that lets it.
    pub(crate) async fn join_remote(
        &self,
        rooms: &RoomService,
        room_id: &RoomId,
        user: &UserId,
        profile: &MemberProfile,
        via: &[OwnedServerName],
    ) -> Result<()> {
        let mut last_error = Error::not_found("No server to join the room through");
        for server in via
            .iter()
            .filter(|s| **s != self.server_name)
            .take(MAX_TRIED)
        {
            match self.join_via(rooms, room_id, user, profile, server).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%room_id, %server, error = %e, "remote join failed");
                    if e.errcode() == "M_INCOMPATIBLE_ROOM_VERSION" || e.errcode() == "M_FORBIDDEN"
                    {
                        return Err(e);
                    }
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    async fn join_via(
        &self,
        rooms: &RoomService,
        room_id: &RoomId,
        user: &UserId,
        profile: &MemberProfile,
        server: &OwnedServerName,
    ) -> Result<()> {
        let (answer, version) = self.template(server, "make_join", room_id, user).await?;
        let rules = rules_for(&version)?;
        let member = Member {
            room_id,
            user,
            profile,
            membership: "join",
            reason: None,
        };
        let (event_id, event, prev_events, depth) =
            self.sign_membership(&answer, member, &rules)?;
        let path = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            encode(room_id.as_str()),
            encode(event_id.as_str()),
        );
        let body = serde_json::to_value(&event).map_err(|e| Error::internal(e.to_string()))?;
        let answer = self
            .client
            .send_signed_large(server, Method::PUT, &path, Some(&body), MAX_JOIN_ANSWER)
            .await
            .map_err(peer_error)?;
        let remote = self
            .check_join_answer(&answer, room_id, version, prev_events, depth)
            .await?;
        let room = rooms.adopt_remote_state(room_id, remote).await?;
        // A restricted join comes back signed by the server that vouched for it too.
        let event = match answer.get("event").filter(|e| e.is_object()) {
            Some(signed) => {
                let signed = crate::events::incoming::parse_object(&signed.to_string())?;
                match crate::events::incoming::event_id_of(&signed, &rules)? == event_id {
                    true => signed,
                    false => return Err(bad_gateway("send_join answered another event")),
                }
            }
            None => event,
        };
        let join = self.verify_object(&rules, event, None).await?;
        let before = join.pdu.prev_events.clone();
        match rooms.append_remote(&room, join).await? {
            Accepted::Appended(pending) => rooms.publish(&room, pending).await?,
            Accepted::Known => return Ok(()),
            Accepted::SoftFailed(reason) => return Err(Error::forbidden(reason)),
        }
        // Best effort: the join stands without the history.
        if let Err(e) = self
            .backfill_before_join(rooms, server, &room, &before)
            .await
        {
            tracing::info!(%room_id, %server, error = %e, "no history before the join");
        }
        Ok(())
    }

    /// `server`'s answer to `make_join` or `make_knock` (`kind`), naming the room versions
    /// this server supports, and the room's version, one of them.
    pub(super) async fn template(
        &self,
        server: &OwnedServerName,
        kind: &str,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<(Value, RoomVersionId)> {
        let versions: String = SUPPORTED_ROOM_VERSIONS
            .iter()
            .map(|v| format!("&ver={v}"))
            .collect();
        let path = format!(
            "/_matrix/federation/v1/{kind}/{}/{}?{}",
            encode(room_id.as_str()),
            encode(user.as_str()),
            &versions[1..],
        );
        let answer = self
            .client
            .send_signed(server, Method::GET, &path, None)
            .await
            .map_err(peer_error)?;
        let version: RoomVersionId = answer
            .get("room_version")
            .and_then(Value::as_str)
            .map_or(Ok(RoomVersionId::V1), RoomVersionId::try_from)
            .map_err(|_| bad_gateway(format!("{kind} answered an invalid room version")))?;
        if !SUPPORTED_ROOM_VERSIONS.contains(&version) {
            return Err(incompatible(&version));
        }
        Ok((answer, version))
    }

    /// The member event from a `make_join`/`make_knock` template, with the user's profile,
    /// hashed and signed.
    pub(super) fn sign_membership(
        &self,
        answer: &Value,
        Member {
            room_id,
            user,
            profile,
            membership,
            reason,
        }: Member<'_>,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> Result<(
        OwnedEventId,
        CanonicalJsonObject,
        Vec<OwnedEventId>,
        ruma::UInt,
    )> {
        let template = answer
            .get("event")
            .and_then(Value::as_object)
            .ok_or_else(|| bad_gateway("the template answer has no event"))?;
        let field = |name: &str| template.get(name).cloned().unwrap_or(Value::Null);
        let prev_events: Vec<OwnedEventId> = serde_json::from_value(field("prev_events"))
            .map_err(|_| bad_gateway("the template has no prev_events"))?;
        let depth: ruma::UInt = serde_json::from_value(field("depth"))
            .map_err(|_| bad_gateway("the template has no depth"))?;
        let mut content = json!({ "membership": membership });
        // A restricted room's resident names who vouches for the join; it signs it too.
        if let Some(authoriser) = template
            .get("content")
            .and_then(|c| c.get("join_authorised_via_users_server"))
            .filter(|_| membership == "join")
        {
            content["join_authorised_via_users_server"] = authoriser.clone();
        }
        if let Some(reason) = reason {
            content["reason"] = reason.into();
        }
        if let Some(name) = &profile.displayname {
            content["displayname"] = name.as_str().into();
        }
        if let Some(avatar) = &profile.avatar_url {
            content["avatar_url"] = avatar.as_str().into();
        }
        let event = json!({
            "room_id": room_id,
            "sender": user,
            "state_key": user,
            "type": "m.room.member",
            "content": content,
            "origin_server_ts": ruma::MilliSecondsSinceUnixEpoch::now(),
            "prev_events": prev_events,
            "auth_events": field("auth_events"),
            "depth": depth,
        });
        let mut object: CanonicalJsonObject = serde_json::from_value(event)
            .map_err(|_| bad_gateway("the template is not canonical JSON"))?;
        let event_id = hash_and_sign(&self.key, rules, &mut object)?;
        Ok((event_id, object, prev_events, depth))
    }

    /// `send_join`'s state and auth chain, each event checked (signatures, content hash, its
    /// room, the auth rules against its own auth events).
    async fn check_join_answer(
        &self,
        answer: &Value,
        room_id: &RoomId,
        version: RoomVersionId,
        prev_events: Vec<OwnedEventId>,
        depth: ruma::UInt,
    ) -> Result<RemoteState> {
        let rules = rules_for(&version)?;
        let list = |name: &str| -> Result<Vec<Box<RawJsonValue>>> {
            serde_json::from_value(answer.get(name).cloned().unwrap_or(Value::Null))
                .map_err(|_| bad_gateway(format!("send_join answered without `{name}`")))
        };
        let mut checked: HashMap<OwnedEventId, Incoming> = HashMap::new();
        let mut state_ids = Vec::new();
        for (is_state, raw) in list("state")?
            .into_iter()
            .map(|r| (true, r))
            .chain(list("auth_chain")?.into_iter().map(|r| (false, r)))
        {
            let event = self.verify_pdu(&rules, &raw, None).await?;
            if event.pdu.room_id != room_id {
                return Err(bad_gateway("send_join answered an event of another room"));
            }
            if is_state && event.pdu.state_key.is_some() {
                state_ids.push(event.event_id.clone());
            }
            checked.insert(event.event_id.clone(), event);
        }
        for event in checked.values() {
            check_auth_events(&rules, &event.pdu, |id| {
                checked.get(id).map(|e| e.pdu.clone())
            })?;
        }
        state_ids.sort_by_key(|id| checked.get(id).map(|e| e.pdu.depth));
        let mut state = Vec::with_capacity(state_ids.len());
        for id in &state_ids {
            if let Some(event) = checked.remove(id) {
                state.push(event);
            }
        }
        Ok(RemoteState {
            version,
            state,
            auth_chain: checked.into_values().collect(),
            prev_events,
            depth,
        })
    }
}

pub(super) fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(super) fn bad_gateway(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::matrix(axum::http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
}

/// A peer's refusal as the client should see it: its Matrix error when it gave one.
pub(super) fn peer_error(e: PeerError) -> Error {
    if let PeerError::Status(_, status, body) = &e
        && let Some(code) = body.get("errcode").and_then(Value::as_str)
    {
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("refused")
            .to_owned();
        let status = axum::http::StatusCode::from_u16(*status)
            .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
        let errcode: &'static str = match code {
            "M_FORBIDDEN" => "M_FORBIDDEN",
            "M_NOT_FOUND" => "M_NOT_FOUND",
            "M_INCOMPATIBLE_ROOM_VERSION" => "M_INCOMPATIBLE_ROOM_VERSION",
            "M_LIMIT_EXCEEDED" => "M_LIMIT_EXCEEDED",
            _ => "M_UNKNOWN",
        };
        return Error::matrix(status, errcode, message);
    }
    bad_gateway(e.to_string())
}

/// The room service's joins and invites across servers (`rooms/federated_hook.rs`).
impl crate::rooms::Federated for Federation {
    fn join<'a>(
        &'a self,
        rooms: &'a RoomService,
        join: crate::rooms::RemoteJoin<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(self.join_remote(rooms, join.room_id, join.user, join.profile, join.via))
    }

    fn knock<'a>(
        &'a self,
        rooms: &'a RoomService,
        knock: crate::rooms::RemoteJoin<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(self.knock_remote(rooms, knock))
    }

    fn invite<'a>(
        &'a self,
        rooms: &'a RoomService,
        invite: crate::rooms::RemoteInvite<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<OwnedEventId>> {
        Box::pin(self.invite_remote(
            rooms,
            invite.room_id,
            invite.sender,
            invite.invitee,
            invite.reason,
            invite.is_direct,
        ))
    }
}
