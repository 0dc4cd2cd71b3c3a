//! What other servers read of a room: the template of a membership event a remote user is to
//! sign (`make_join`, `make_leave`), the room's state and the auth chain under it (`send_join`,
//! `/state`), and events by id (`/event`, `/event_auth`).

use std::collections::{HashSet, VecDeque};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedServerName, UInt, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use super::{RoomMeta, RoomService};
use crate::{
    error::{Error, Result},
    events::{Pdu, auth_types, check_against_state},
};

/// The most events an auth chain or a state answer holds: a room past it is beyond this
/// server's federation for now, and a peer cannot make it walk further.
pub(crate) const MAX_CHAIN: usize = 50_000;

impl RoomService {
    /// The unsigned membership event `user` (of another server) would send to set `membership`,
    /// on top of the room's extremities with the auth events the current state selects; checked
    /// against the current state first, so that a user who may not join learns it here.
    pub(crate) async fn membership_template(
        &self,
        room: &RoomMeta,
        user: &UserId,
        membership: MembershipState,
    ) -> Result<Value> {
        let mut content = json!({ "membership": membership });
        if membership == MembershipState::Join
            && let Some(authoriser) = self.join_authoriser(room, user)?
        {
            content["join_authorised_via_users_server"] = authoriser.as_str().into();
        }
        let raw = serde_json::value::to_raw_value(&content).expect("JSON");
        let kind = TimelineEventType::RoomMember;
        let head = room.head.lock().await;
        let types = auth_types(&room.rules, &kind, user, Some(user.as_str()), &raw)?;
        let auth_events: Vec<OwnedEventId> = types
            .iter()
            .filter_map(|(kind, key)| head.state.get(kind, key))
            .map(|pos| Ok(self.event(pos)?.stored.event_id.clone()))
            .collect::<Result<_>>()?;
        let from = head.extremities.len().saturating_sub(10);
        let prev_events = head.extremities[from..].to_vec();
        let depth = head.depth.saturating_add(UInt::from(1u32));
        let now = MilliSecondsSinceUnixEpoch::now();
        let candidate = Pdu {
            event_id: ruma::owned_event_id!("$template"),
            room_id: room.room_id.clone(),
            sender: user.to_owned(),
            origin_server_ts: now,
            kind: kind.clone(),
            content: raw,
            state_key: Some(user.to_string()),
            prev_events: prev_events.clone(),
            auth_events: auth_events.clone(),
            depth,
            redacts: None,
        };
        check_against_state(&room.rules, &candidate, |kind, key| {
            let pos = head.state.get(kind, key)?;
            self.event(pos).ok().map(|e| e.pdu.clone())
        })?;
        Ok(json!({
            "room_id": room.room_id,
            "sender": user,
            "origin": user.server_name(),
            "origin_server_ts": now,
            "type": kind,
            "state_key": user,
            "content": content,
            "prev_events": prev_events,
            "auth_events": auth_events,
            "depth": depth,
        }))
    }

    /// The room's current state as PDUs, the member event of `except` replaced by the one it
    /// replaced (the state before that user's membership event just appended), with the auth
    /// chain of all of it.
    pub(crate) async fn state_and_auth_chain(
        &self,
        room: &RoomMeta,
        before_member: Option<&UserId>,
    ) -> Result<(Vec<Box<RawJsonValue>>, Vec<Box<RawJsonValue>>)> {
        let positions: Vec<u64> = {
            let head = room.head.lock().await;
            head.state
                .0
                .values()
                .flat_map(|m| m.values().copied())
                .collect()
        };
        let mut state = Vec::with_capacity(positions.len());
        let mut ids = Vec::with_capacity(positions.len());
        for pos in positions {
            let mut loaded = self.event(pos)?;
            if let Some(user) = before_member
                && loaded.pdu.kind == TimelineEventType::RoomMember
                && loaded.pdu.state_key.as_deref() == Some(user.as_str())
            {
                match loaded.stored.prev_state {
                    Some(prev) => loaded = self.event(prev)?,
                    None => continue,
                }
            }
            ids.push(loaded.stored.event_id.clone());
            state.push(loaded.stored.pdu.clone());
        }
        let chain = self.auth_chain(&ids)?;
        Ok((state, chain))
    }

    /// The auth chain of `ids`: their auth events, theirs, and so on, without `ids`
    /// themselves unless one is in another's chain.
    pub(crate) fn auth_chain(&self, ids: &[OwnedEventId]) -> Result<Vec<Box<RawJsonValue>>> {
        let mut starts = Vec::new();
        for id in ids {
            if let Some(pdu) = self.known_pdu(id)? {
                starts.extend(pdu.auth_events);
            }
        }
        let mut chain = Vec::new();
        for id in self.auth_chain_ids(&starts)? {
            if let Some(json) = self.known_json(&id)? {
                chain.push(json);
            }
        }
        Ok(chain)
    }

    /// `starts` and every event their `auth_events` reach, as far as this server knows them;
    /// `M_TOO_LARGE` past [`MAX_CHAIN`].
    pub(crate) fn auth_chain_ids(&self, starts: &[OwnedEventId]) -> Result<HashSet<OwnedEventId>> {
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut queue: VecDeque<OwnedEventId> = starts.iter().cloned().collect();
        while let Some(id) = queue.pop_front() {
            if seen.contains(&id) {
                continue;
            }
            if seen.len() >= MAX_CHAIN {
                return Err(Error::too_large("the auth chain is too long"));
            }
            if let Some(pdu) = self.known_pdu(&id)? {
                queue.extend(pdu.auth_events);
                seen.insert(id);
            }
        }
        Ok(seen)
    }

    /// The servers with a user joined to the room, this one included when it has one.
    pub(crate) fn servers_in_room(&self, room: &RoomMeta) -> Vec<OwnedServerName> {
        let mut servers: Vec<OwnedServerName> =
            room.members.read().joined_servers.keys().cloned().collect();
        servers.sort_unstable();
        servers
    }

    /// Whether this server follows the room: its own room, or another's that a local user is
    /// in, so that its state here is current. A room every local user left is not followed:
    /// joining it again goes through its servers.
    pub(crate) fn followed_here(
        &self,
        room_id: &ruma::RoomId,
        own: &ruma::ServerName,
    ) -> Result<bool> {
        if !self.exists(room_id)? {
            return Ok(false);
        }
        if room_id.server_name() == Some(own) {
            return Ok(true);
        }
        Ok(self
            .room(room_id)?
            .members
            .read()
            .joined_servers
            .contains_key(own))
    }

    /// Whether the room's server ACL (`m.room.server_acl`) lets `server` take part: send
    /// events and ephemeral events, join, read. Without an ACL every server may.
    pub(crate) fn server_allowed(
        &self,
        room: &RoomMeta,
        server: &ruma::ServerName,
    ) -> Result<bool> {
        let Some(acl) = self.state_pdu(room.short, "m.room.server_acl", "")? else {
            return Ok(true);
        };
        // An ACL that does not parse denies nobody, as Synapse treats it.
        Ok(acl
            .content_as::<ruma::events::room::server_acl::RoomServerAclEventContent>()
            .map_or(true, |acl| acl.is_allowed(server)))
    }

    /// `403 M_FORBIDDEN` unless the room's server ACL lets `server` take part.
    pub(crate) fn require_server_allowed(
        &self,
        room: &RoomMeta,
        server: &ruma::ServerName,
    ) -> Result<()> {
        match self.server_allowed(room, server)? {
            true => Ok(()),
            false => Err(Error::forbidden("Server is banned from room")),
        }
    }

    /// Whether `server` has a user joined to the room: who may read its events and state over
    /// federation (each event then as the room's history visibility lets the server see it:
    /// [`RoomService::server_view`]).
    pub(crate) fn server_may_read(&self, room: &RoomMeta, server: &ruma::ServerName) -> bool {
        room.members.read().joined_servers.contains_key(server)
    }
}

impl RoomService {
    /// The room's state just before the event at `pos`, as `(event id, position)`: each
    /// state key's entry in the state history before it. Rooms here grow linearly, so that is
    /// the state the event was appended on.
    pub(crate) fn state_before(
        &self,
        room: &RoomMeta,
        pos: u64,
    ) -> Result<Vec<(OwnedEventId, u64)>> {
        let mut out = Vec::new();
        let Some(before) = pos.checked_sub(1) else {
            return Ok(out);
        };
        for (kind, state_key, _) in self.current_state_keys(room.short)? {
            if let Some(at) = self.state_pos_at(room.short, &kind, &state_key, before)? {
                out.push((self.event(at)?.stored.event_id.clone(), at));
            }
            if out.len() > MAX_CHAIN {
                return Err(Error::too_large("the room's state is too large"));
            }
        }
        Ok(out)
    }

    /// The events before `from` (theirs included) in the room's timeline, newest first, at
    /// most `limit`, as `server` may see them: what `/backfill` answers.
    pub(crate) fn backfill(
        &self,
        room: &RoomMeta,
        server: &ruma::ServerName,
        from: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<Box<RawJsonValue>>> {
        let mut start = None;
        for id in from {
            if let Some(pos) = self.event_pos(id)?
                && self.event(pos)?.stored.room == room.short
            {
                start = Some(start.map_or(pos, |s: u64| s.max(pos)));
            }
        }
        let Some(start) = start else {
            return Ok(Vec::new());
        };
        let view = self.server_view(room, server)?;
        self.timeline_positions(room.short, start, super::Direction::Backward, limit)?
            .into_iter()
            .map(|pos| self.as_seen_by(room, &view, pos))
            .collect()
    }

    /// The events between `earliest` and `latest`, walking back from `latest` along
    /// `prev_events`, oldest first, at most `limit`, as `server` may see them: what
    /// `/get_missing_events` answers.
    pub(crate) fn missing_events(
        &self,
        room: &RoomMeta,
        server: &ruma::ServerName,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<Box<RawJsonValue>>> {
        let view = self.server_view(room, server)?;
        let mut seen: HashSet<OwnedEventId> = earliest.iter().cloned().collect();
        let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
        for id in latest {
            if let Some(pdu) = self.pdu_by_id(id)? {
                queue.extend(pdu.prev_events);
            }
        }
        let mut found: Vec<(UInt, Box<RawJsonValue>)> = Vec::new();
        while let Some(id) = queue.pop_front() {
            if found.len() >= limit || !seen.insert(id.clone()) {
                if found.len() >= limit {
                    break;
                }
                continue;
            }
            let Some(pos) = self.event_pos(&id)? else {
                continue;
            };
            let loaded = self.event(pos)?;
            if loaded.stored.room != room.short {
                continue;
            }
            queue.extend(loaded.pdu.prev_events.iter().cloned());
            found.push((loaded.pdu.depth, self.as_seen_by(room, &view, pos)?));
        }
        found.sort_by_key(|(depth, _)| *depth);
        Ok(found.into_iter().map(|(_, json)| json).collect())
    }
}
