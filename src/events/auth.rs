//! The authorization rules, applied through ruma's state-res before anything is stored.

use ruma::{
    EventId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};
use serde_json::value::RawValue as RawJsonValue;

use super::Pdu;
use crate::error::{Error, Result};

/// The `(type, state_key)` pairs whose current events become a new event's `auth_events`.
pub(crate) fn auth_types(
    rules: &RoomVersionRules,
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &RawJsonValue,
) -> Result<Vec<(StateEventType, String)>> {
    state_res::auth_types_for_event(kind, sender, state_key, content, &rules.authorization)
        .map_err(|e| Error::bad_json(format!("invalid event content: {e}")))
}

/// Checks `pdu` against the authorization rules: its own `auth_events` (state-independent
/// rules) and the room's current state (state-dependent rules). A refusal is `M_FORBIDDEN`
/// with the rule that failed, which is what Synapse tells clients too.
pub(crate) fn check_auth(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<()> {
    check_auth_events(rules, pdu, fetch_event)?;
    check_against_state(rules, pdu, fetch_state)
}

/// The rules that read only the event and its own `auth_events`: what another server's event
/// must pass to be kept at all.
pub(crate) fn check_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<()> {
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)
        .map_err(|reason| refused(pdu, reason))
}

/// The rules that read the room's state: what another server's event must pass against the
/// current state not to be soft-failed.
pub(crate) fn check_against_state(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<()> {
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
        .map_err(|reason| refused(pdu, reason))
}

fn refused(pdu: &Pdu, reason: String) -> Error {
    tracing::debug!(event_id = %pdu.event_id, %reason, "event refused by auth rules");
    Error::forbidden(reason)
}

#[cfg(test)]
mod tests {
    //! The authorization rules as the room service applies them, on a room kept in memory:
    //! each event takes its auth events from the current state, sits on the previous event,
    //! and is checked against the current state, as `rooms/append.rs` does.

    use std::collections::HashMap;

    use ruma::{
        MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, UInt, UserId, owned_room_id,
        room_version_rules::RoomVersionRules,
    };
    use serde_json::{Value, json, value::to_raw_value};

    use super::*;
    use crate::events::{DagPosition, EventTemplate, PowerLevels, SigningKey, build_pdu};

    struct Room {
        key: SigningKey,
        rules: RoomVersionRules,
        room_id: OwnedRoomId,
        events: HashMap<OwnedEventId, Pdu>,
        state: HashMap<(StateEventType, String), OwnedEventId>,
        last: Option<(OwnedEventId, UInt)>,
    }

    /// Room versions 10 and 11 are what the server creates; v11 unless a test says otherwise.
    impl Room {
        fn new() -> Self {
            Room {
                key: SigningKey::spec_test_key(),
                rules: RoomVersionRules::V11,
                room_id: owned_room_id!("!r:domain"),
                events: HashMap::new(),
                state: HashMap::new(),
                last: None,
            }
        }

        /// A v11 room created by `@alice:domain`, who joined, with the server's default power
        /// levels for a private chat and `join_rule`.
        fn created(join_rule: &str) -> Self {
            let mut room = Room::new();
            room.create().unwrap();
            room.join("@alice:domain").unwrap();
            room.state_event(
                "@alice:domain",
                "m.room.power_levels",
                "",
                json!({ "users": { "@alice:domain": 100 }, "state_default": 50,
                        "events_default": 0, "ban": 50, "kick": 50, "redact": 50, "invite": 0 }),
            )
            .unwrap();
            room.state_event(
                "@alice:domain",
                "m.room.join_rules",
                "",
                json!({ "join_rule": join_rule }),
            )
            .unwrap();
            room
        }

        /// Builds the event as the room service would and checks it; stores it if allowed.
        fn send(&mut self, sender: &str, template: EventTemplate) -> Result<Pdu> {
            let sender = UserId::parse(sender).unwrap();
            let types = auth_types(
                &self.rules,
                &template.kind,
                &sender,
                template.state_key.as_deref(),
                &template.content,
            )?;
            let auth_events: Vec<OwnedEventId> = types
                .iter()
                .filter_map(|key| self.state.get(key).cloned())
                .collect();
            let (prev_events, depth) = match &self.last {
                Some((id, depth)) => (vec![id.clone()], *depth + UInt::from(1u32)),
                None => (Vec::new(), UInt::from(1u32)),
            };
            let (event_id, object) = build_pdu(
                &self.key,
                &ruma::RoomVersionId::V11,
                &self.rules,
                &self.room_id,
                &sender,
                &template,
                DagPosition {
                    prev_events: &prev_events,
                    auth_events: &auth_events,
                    depth,
                },
            )?;
            let pdu =
                Pdu::parse(event_id.clone(), &serde_json::to_string(&object).unwrap()).unwrap();
            check_auth(
                &self.rules,
                &pdu,
                |id| self.events.get(id).cloned(),
                |kind, key| {
                    let id = self.state.get(&(kind.clone(), key.to_owned()))?;
                    self.events.get(id).cloned()
                },
            )?;
            if let Some(state_key) = &pdu.state_key {
                self.state.insert(
                    (
                        StateEventType::from(pdu.kind.to_string()),
                        state_key.clone(),
                    ),
                    event_id.clone(),
                );
            }
            self.events.insert(event_id.clone(), pdu.clone());
            self.last = Some((event_id, depth));
            Ok(pdu)
        }

        fn state_event(
            &mut self,
            sender: &str,
            kind: &str,
            key: &str,
            content: Value,
        ) -> Result<Pdu> {
            let mut template = EventTemplate::state(kind, key, to_raw_value(&content).unwrap());
            template.timestamp = Some(MilliSecondsSinceUnixEpoch::now());
            self.send(sender, template)
        }

        /// `@alice:domain` creates the room.
        fn create(&mut self) -> Result<Pdu> {
            self.state_event(
                "@alice:domain",
                "m.room.create",
                "",
                json!({ "room_version": "11" }),
            )
        }

        fn member(&mut self, sender: &str, target: &str, membership: &str) -> Result<Pdu> {
            self.state_event(
                sender,
                "m.room.member",
                target,
                json!({ "membership": membership }),
            )
        }

        fn join(&mut self, user: &str) -> Result<Pdu> {
            self.member(user, user, "join")
        }

        fn message(&mut self, sender: &str, content: Value) -> Result<Pdu> {
            self.send(
                sender,
                EventTemplate::message("m.room.message", to_raw_value(&content).unwrap()),
            )
        }

        fn levels(&self) -> PowerLevels {
            let id = &self.state[&(StateEventType::RoomPowerLevels, String::new())];
            let creator = self.events[&self.state[&(StateEventType::RoomCreate, String::new())]]
                .sender
                .clone();
            PowerLevels::from_event(self.events.get(id), Some(creator))
        }
    }

    /// The refusal's reason, as a client reads it.
    fn refused<T: std::fmt::Debug>(result: Result<T>) -> String {
        match result.unwrap_err() {
            Error::Matrix {
                errcode, message, ..
            } => {
                assert_eq!(errcode, "M_FORBIDDEN", "{message}");
                message.into_owned()
            }
            other => panic!("not a Matrix error: {other:?}"),
        }
    }

    #[test]
    fn create_is_allowed_first_and_only_from_the_room_ids_server() {
        let mut room = Room::new();
        let create = room.create().unwrap();
        assert!(create.auth_events.is_empty() && create.prev_events.is_empty());
        room.join("@alice:domain").unwrap();

        // A second create would sit on the room's last event.
        assert_eq!(
            refused(room.state_event("@alice:domain", "m.room.create", "", json!({}))),
            "`m.room.create` event cannot have previous events"
        );
        // A room id names the server that created the room.
        let mut other = Room::new();
        assert_eq!(
            refused(other.state_event("@alice:elsewhere", "m.room.create", "", json!({}))),
            "invalid `room_id` field in `m.room.create` event: server name does not match \
             sender's server name"
        );
    }

    #[test]
    fn nothing_but_the_creators_join_is_allowed_before_it() {
        let mut room = Room::new();
        room.create().unwrap();
        assert_eq!(
            refused(room.message("@alice:domain", json!({ "body": "hi" }))),
            "sender's membership is not `join`"
        );
        // Without join rules nobody else joins.
        assert_eq!(
            refused(room.join("@bob:domain")),
            "no `m.room.join_rules` event in current state"
        );
        room.join("@alice:domain").unwrap();
        room.message("@alice:domain", json!({ "body": "hi" }))
            .unwrap();
    }

    #[test]
    fn join_rules_decide_who_joins_without_an_invite() {
        let mut private = Room::created("invite");
        assert_eq!(
            refused(private.join("@bob:domain")),
            "cannot join a room that is not `public`"
        );
        // Only a member invites, and nobody joins on another's behalf.
        assert_eq!(
            refused(private.member("@eve:domain", "@bob:domain", "invite")),
            "cannot invite user if sender is not joined"
        );
        private
            .member("@alice:domain", "@bob:domain", "invite")
            .unwrap();
        assert_eq!(
            refused(private.member("@alice:domain", "@bob:domain", "join")),
            "sender of join event must match target user"
        );
        private.join("@bob:domain").unwrap();

        let mut public = Room::created("public");
        public.join("@bob:domain").unwrap();
        public
            .message("@bob:domain", json!({ "body": "hello" }))
            .unwrap();
    }

    #[test]
    fn power_levels_gate_state_and_their_own_changes() {
        let mut room = Room::created("public");
        room.join("@bob:domain").unwrap();
        // `state_default` 50, `events_default` 0.
        assert_eq!(
            refused(room.state_event("@bob:domain", "m.room.name", "", json!({ "name": "x" }))),
            "sender does not have enough power to send event of type `m.room.name`"
        );
        room.message("@bob:domain", json!({ "body": "allowed" }))
            .unwrap();
        // A state key that is another user's id is that user's alone.
        assert_eq!(
            refused(room.state_event(
                "@alice:domain",
                "org.example.profile",
                "@bob:domain",
                json!({})
            )),
            "sender cannot send event with `state_key` matching another user's ID"
        );

        let levels = |bob: i64| {
            json!({ "users": { "@alice:domain": 100, "@bob:domain": bob }, "state_default": 50,
                    "events_default": 0, "ban": 50, "kick": 50, "redact": 50, "invite": 0 })
        };
        room.state_event("@alice:domain", "m.room.power_levels", "", levels(50))
            .unwrap();
        room.state_event("@bob:domain", "m.room.name", "", json!({ "name": "x" }))
            .unwrap();
        // Nobody grants more than they have, or changes a peer's or a superior's level.
        assert_eq!(
            refused(room.state_event("@bob:domain", "m.room.power_levels", "", levels(100))),
            "sender does not have enough power to change `@bob:domain`'s  power level"
        );
        let demote_alice = json!({ "users": { "@alice:domain": 0, "@bob:domain": 50 },
            "state_default": 50, "events_default": 0, "ban": 50, "kick": 50, "redact": 50,
            "invite": 0 });
        assert_eq!(
            refused(room.state_event("@bob:domain", "m.room.power_levels", "", demote_alice)),
            "sender does not have enough power to change `@alice:domain`'s  power level"
        );
        assert_eq!(
            room.levels().user_level(ruma::user_id!("@bob:domain")),
            ruma::Int::from(50)
        );
    }

    #[test]
    fn bans_need_the_ban_level_and_keep_the_banned_out() {
        let mut room = Room::created("public");
        room.join("@bob:domain").unwrap();
        room.join("@eve:domain").unwrap();
        assert_eq!(
            refused(room.member("@bob:domain", "@eve:domain", "ban")),
            "sender does not have enough power to ban target user"
        );
        room.member("@alice:domain", "@eve:domain", "ban").unwrap();
        assert_eq!(
            refused(room.message("@eve:domain", json!({ "body": "still here?" }))),
            "sender's membership is not `join`"
        );
        assert_eq!(
            refused(room.join("@eve:domain")),
            "banned user cannot join room"
        );
        // Unbanning needs the ban level too; then the room is open to them again.
        assert_eq!(
            refused(room.member("@bob:domain", "@eve:domain", "leave")),
            "sender does not have enough power to unban"
        );
        room.member("@alice:domain", "@eve:domain", "leave")
            .unwrap();
        room.join("@eve:domain").unwrap();
    }

    #[test]
    fn redactions_pass_the_rules_for_members_and_the_redact_level_is_the_servers_check() {
        let mut room = Room::created("public");
        room.join("@bob:domain").unwrap();
        let message = room
            .message("@alice:domain", json!({ "body": "alice's" }))
            .unwrap();
        let redaction = |room: &mut Room, sender: &str| {
            room.send(
                sender,
                EventTemplate::message(
                    TimelineEventType::RoomRedaction,
                    to_raw_value(&json!({ "redacts": message.event_id })).unwrap(),
                ),
            )
        };
        // Since room version 3 the auth rules do not look at the target ...
        let by_bob = redaction(&mut room, "@bob:domain").unwrap();
        assert_eq!(by_bob.redacts.as_ref(), Some(&message.event_id));
        // ... so the server refuses a member below the redact level itself.
        let levels = room.levels();
        assert_eq!(
            levels
                .check_redaction(&by_bob.sender, &message.sender)
                .unwrap_err()
                .to_string(),
            "M_FORBIDDEN: You may only redact your own events"
        );
        assert!(
            levels
                .check_redaction(&message.sender, &message.sender)
                .is_ok()
        );
        // Someone outside the room may not redact at all.
        assert_eq!(
            refused(redaction(&mut room, "@eve:domain")),
            "sender's membership is not `join`"
        );
    }
}
