//! The redaction algorithm: what is left of an event once it is redacted.
//!
//! A redacted event keeps the keys the room version names and loses the rest of its content
//! (spec v1.16, client-server API "Redactions", and each room version's "Redactions" section).
//! The server's signature covers exactly this form, which is why a redacted event still
//! verifies: only its content hash stops matching.

use ruma::{CanonicalJsonObject, room_version_rules::RoomVersionRules};

use crate::error::{Error, Result};

/// The stored PDU JSON of an event, redacted per the room version's rules.
pub(crate) fn redact(pdu_json: &str, rules: &RoomVersionRules) -> Result<String> {
    let object: CanonicalJsonObject =
        serde_json::from_str(pdu_json).map_err(|e| Error::internal(e.to_string()))?;
    let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
        .map_err(|e| Error::internal(e.to_string()))?;
    serde_json::to_string(&redacted).map_err(|e| Error::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// An event of `kind` with every top-level key a PDU may carry, plus one it may not.
    fn event(kind: &str, state_key: Option<&str>, content: Value) -> Value {
        let mut event = json!({
            "event_id": "$e", "type": kind, "room_id": "!r:domain", "sender": "@u:domain",
            "content": content, "hashes": { "sha256": "h" },
            "signatures": { "domain": { "ed25519:1": "s" } }, "depth": 3,
            "prev_events": ["$p"], "auth_events": ["$a"], "origin_server_ts": 1000000,
            "origin": "domain", "membership": "join", "prev_state": [], "unsigned": { "age": 1 },
            "not_a_pdu_key": true,
        });
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        event
    }

    fn redacted(event: &Value, rules: &RoomVersionRules) -> Value {
        serde_json::from_str(&redact(&event.to_string(), rules).unwrap()).unwrap()
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn v11_keeps_only_the_spec_top_level_keys_and_empties_message_content() {
        let e = event(
            "m.room.message",
            None,
            json!({ "body": "secret", "msgtype": "m.text" }),
        );
        let r = redacted(&e, &RoomVersionRules::V11);
        // Room version 11 dropped `origin`, `membership` and `prev_state` from the list.
        assert_eq!(
            keys(&r),
            [
                "auth_events",
                "content",
                "depth",
                "event_id",
                "hashes",
                "origin_server_ts",
                "prev_events",
                "room_id",
                "sender",
                "signatures",
                "type",
            ]
        );
        assert_eq!(r["content"], json!({}));
        assert_eq!(r["hashes"], e["hashes"]);
        assert_eq!(r["signatures"], e["signatures"]);
    }

    #[test]
    fn v11_keeps_the_content_keys_each_event_type_needs() {
        let cases = [
            (
                "m.room.member",
                json!({
                    "membership": "join", "displayname": "U", "avatar_url": "mxc://a/b",
                    "join_authorised_via_users_server": "@x:domain",
                    "third_party_invite": { "display_name": "d", "signed": { "token": "t" } },
                }),
                json!({
                    "membership": "join", "join_authorised_via_users_server": "@x:domain",
                    "third_party_invite": { "signed": { "token": "t" } },
                }),
            ),
            (
                "m.room.create",
                json!({ "room_version": "11", "m.federate": false, "custom": 1 }),
                json!({ "room_version": "11", "m.federate": false, "custom": 1 }),
            ),
            (
                "m.room.join_rules",
                json!({ "join_rule": "restricted", "allow": [], "other": 1 }),
                json!({ "join_rule": "restricted", "allow": [] }),
            ),
            (
                "m.room.power_levels",
                json!({
                    "ban": 50, "events": {}, "events_default": 0, "invite": 0, "kick": 50,
                    "redact": 50, "state_default": 50, "users": {}, "users_default": 0,
                    "notifications": { "room": 50 }, "historical": 100,
                }),
                json!({
                    "ban": 50, "events": {}, "events_default": 0, "invite": 0, "kick": 50,
                    "redact": 50, "state_default": 50, "users": {}, "users_default": 0,
                }),
            ),
            (
                "m.room.history_visibility",
                json!({ "history_visibility": "joined", "other": 1 }),
                json!({ "history_visibility": "joined" }),
            ),
            ("m.room.name", json!({ "name": "Secret plans" }), json!({})),
        ];
        for (kind, content, kept) in cases {
            let r = redacted(&event(kind, Some(""), content), &RoomVersionRules::V11);
            assert_eq!(r["content"], kept, "{kind}");
            assert_eq!(r["state_key"], json!(""), "{kind}: the state key stays");
        }
        // A v11 redaction keeps `redacts`, which moved into its content.
        let r = redacted(
            &event(
                "m.room.redaction",
                None,
                json!({ "redacts": "$t", "reason": "spam" }),
            ),
            &RoomVersionRules::V11,
        );
        assert_eq!(r["content"], json!({ "redacts": "$t" }));
    }

    #[test]
    fn v10_keeps_what_v11_dropped_and_drops_what_v11_added() {
        let rules = RoomVersionRules::V10;
        let r = redacted(
            &event("m.room.message", None, json!({ "body": "x" })),
            &rules,
        );
        assert_eq!(
            (&r["origin"], &r["membership"], &r["prev_state"]),
            (&json!("domain"), &json!("join"), &json!([]))
        );
        let create = redacted(
            &event(
                "m.room.create",
                Some(""),
                json!({ "creator": "@u:domain", "room_version": "10" }),
            ),
            &rules,
        );
        assert_eq!(create["content"], json!({ "creator": "@u:domain" }));
        let levels = redacted(
            &event(
                "m.room.power_levels",
                Some(""),
                json!({ "invite": 0, "ban": 50 }),
            ),
            &rules,
        );
        assert_eq!(levels["content"], json!({ "ban": 50 }));
        let redaction = redacted(
            &event("m.room.redaction", None, json!({ "redacts": "$t" })),
            &rules,
        );
        assert_eq!(redaction["content"], json!({}));
    }

    #[test]
    fn what_is_not_json_is_an_error_not_a_panic() {
        assert!(redact("not json", &RoomVersionRules::V11).is_err());
        assert!(redact("[1, 2]", &RoomVersionRules::V11).is_err());
    }
}
