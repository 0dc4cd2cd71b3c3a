//! Local users' ephemeral events in the federation's EDU shapes. The notifier carries them in
//! the client format: typing as the room's whole list of typing users, receipts as one
//! receipt; federation wants one `m.typing` per user whose state changed and receipts as
//! `{room: {"m.read": {user: {event_ids, data}}}}`.

use std::collections::{BTreeSet, HashMap};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, ServerName};
use serde_json::{Value, json};

/// Remembers each room's typing users, to tell who started or stopped.
#[derive(Default)]
pub(super) struct EphemeralMapper {
    typing: HashMap<OwnedRoomId, BTreeSet<OwnedUserId>>,
}

impl EphemeralMapper {
    /// The EDUs about users of `own` that a client-format ephemeral event of `room` makes.
    pub(super) fn map(&mut self, own: &ServerName, room: &RoomId, event: &Value) -> Vec<Value> {
        match event.get("type").and_then(Value::as_str) {
            Some("m.typing") => self.typing(own, room, event),
            Some("m.receipt") => receipts(own, room, event),
            _ => Vec::new(),
        }
    }

    /// A local user's presence change (`m.presence`, client format, no room) as the EDU.
    pub(super) fn presence(own: &ServerName, event: &Value) -> Option<(OwnedUserId, Value)> {
        let user = OwnedUserId::try_from(event.get("sender")?.as_str()?).ok()?;
        if user.server_name() != own || event.get("type")? != "m.presence" {
            return None;
        }
        let mut update = event.get("content")?.clone();
        update["user_id"] = user.as_str().into();
        Some((
            user,
            json!({ "edu_type": "m.presence", "content": { "push": [update] } }),
        ))
    }

    fn typing(&mut self, own: &ServerName, room: &RoomId, event: &Value) -> Vec<Value> {
        let now: BTreeSet<OwnedUserId> = event["content"]["user_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().and_then(|u| OwnedUserId::try_from(u).ok()))
            .filter(|u| u.server_name() == own)
            .collect();
        let before = self.typing.remove(room).unwrap_or_default();
        let edu = |user: &OwnedUserId, typing: bool| {
            json!({
                "edu_type": "m.typing",
                "content": { "room_id": room, "user_id": user, "typing": typing },
            })
        };
        let mut out: Vec<Value> = now.difference(&before).map(|u| edu(u, true)).collect();
        out.extend(before.difference(&now).map(|u| edu(u, false)));
        if !now.is_empty() {
            self.typing.insert(room.to_owned(), now);
        }
        out
    }
}

fn receipts(own: &ServerName, room: &RoomId, event: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let Some(events) = event["content"].as_object() else {
        return out;
    };
    for (event_id, kinds) in events {
        let Some(users) = kinds.get("m.read").and_then(Value::as_object) else {
            continue;
        };
        for (user, receipt) in users {
            if OwnedUserId::try_from(user.as_str()).map_or(true, |u| u.server_name() != own) {
                continue;
            }
            out.push(json!({
                "edu_type": "m.receipt",
                "content": { room.as_str(): { "m.read": { user: {
                    "event_ids": [event_id],
                    "data": receipt,
                } } } },
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, server_name};

    use super::*;

    #[test]
    fn typing_becomes_one_edu_per_local_user_who_started_or_stopped() {
        let mut m = EphemeralMapper::default();
        let own = server_name!("here");
        let room = room_id!("!r:here");
        let typing = |users: &[&str]| json!({"type": "m.typing", "content": {"user_ids": users}});
        let out = m.map(own, room, &typing(&["@a:here", "@b:there"]));
        assert_eq!(
            out,
            vec![json!({"edu_type": "m.typing",
                "content": {"room_id": "!r:here", "user_id": "@a:here", "typing": true}})]
        );
        assert!(m.map(own, room, &typing(&["@a:here"])).is_empty());
        let out = m.map(own, room, &typing(&[]));
        assert_eq!(out[0]["content"]["typing"], false);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_local_read_receipt_becomes_a_federation_receipt() {
        let mut m = EphemeralMapper::default();
        let event = json!({"type": "m.receipt", "content": {"$e": {"m.read": {
            "@a:here": {"ts": 5}, "@b:there": {"ts": 6}}}}});
        let out = m.map(server_name!("here"), room_id!("!r:here"), &event);
        assert_eq!(
            out,
            vec![
                json!({"edu_type": "m.receipt", "content": {"!r:here": {"m.read": {
                "@a:here": {"event_ids": ["$e"], "data": {"ts": 5}}}}}})
            ]
        );
    }
}
