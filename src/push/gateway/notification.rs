//! The Push Gateway API's `notification` object: what one event becomes for one user, the badge
//! count, and the body a pusher receives (spec v1.16, Push Gateway API; Synapse's
//! `httppusher.py` where the spec leaves a choice).

use ruma::{
    UserId,
    events::TimelineEventType,
    push::{Action, HttpPusherData, PushFormat},
};
use serde_json::{Map, Value, json};

use super::{Delivery, outbox::Queued};
use crate::{
    error::Result,
    push::{LazyRuleset, RoomRules},
    rooms::{Loaded, RoomMeta},
};

/// The tweaks of the actions, by name. A `highlight` tweak without a value means `true` (spec:
/// "Push Rules", tweaks), so it is sent as `true`, not left out.
pub fn tweaks(actions: &[Action]) -> Map<String, Value> {
    let mut out = Map::new();
    for action in actions {
        if !matches!(action, Action::SetTweak(_)) {
            continue;
        }
        let Ok(Value::Object(mut tweak)) = serde_json::to_value(action) else {
            continue;
        };
        let Some(Value::String(name)) = tweak.remove("set_tweak") else {
            continue;
        };
        let value = tweak.remove("value").unwrap_or(Value::Bool(true));
        out.insert(name, value);
    }
    out
}

/// `high` when the notification makes a sound or highlights, or may do either because it is
/// encrypted (Synapse's rule); `low` otherwise.
fn prio(kind: &TimelineEventType, tweaks: &Map<String, Value>) -> &'static str {
    let highlight = tweaks.get("highlight").and_then(Value::as_bool) == Some(true);
    if *kind == TimelineEventType::RoomEncrypted || highlight || tweaks.contains_key("sound") {
        "high"
    } else {
        "low"
    }
}

/// The notification of `event` for `user`, everything but `devices`.
pub fn for_event(
    d: &Delivery<'_>,
    room: &RoomMeta,
    event: &Loaded,
    user: &UserId,
    tweaks: Map<String, Value>,
    badge: u64,
) -> Result<Queued> {
    let pdu = &event.pdu;
    let mut n = Map::new();
    n.insert("event_id".into(), json!(pdu.event_id));
    n.insert("room_id".into(), json!(pdu.room_id));
    n.insert("type".into(), json!(pdu.kind.to_string()));
    n.insert("sender".into(), json!(pdu.sender));
    let state_string = |kind: &str, state_key: &str, field: &str| -> Result<Option<String>> {
        Ok(d.rooms
            .state_pdu(room.short, kind, state_key)?
            .and_then(|p| p.content_as::<Value>().ok())
            .and_then(|c| c.get(field)?.as_str().map(str::to_owned))
            .filter(|v| !v.is_empty()))
    };
    if let Some(name) = state_string("m.room.member", pdu.sender.as_str(), "displayname")? {
        n.insert("sender_display_name".into(), name.into());
    }
    if let Some(name) = state_string("m.room.name", "", "name")? {
        n.insert("room_name".into(), name.into());
    }
    if let Some(alias) = state_string("m.room.canonical_alias", "", "alias")? {
        n.insert("room_alias".into(), alias.into());
    }
    if pdu.kind == TimelineEventType::RoomMember
        && let Some(state_key) = &pdu.state_key
    {
        // Synapse's extra fields, which gateways use to word invites.
        if let Some(membership) = pdu
            .content_as::<Value>()
            .ok()
            .and_then(|c| c.get("membership").cloned())
        {
            n.insert("membership".into(), membership);
        }
        n.insert("user_is_target".into(), (state_key == user.as_str()).into());
    }
    n.insert("prio".into(), prio(&pdu.kind, &tweaks).into());
    n.insert(
        "content".into(),
        serde_json::from_str(pdu.content.get()).unwrap_or_else(|_| json!({})),
    );
    n.insert("counts".into(), json!({ "unread": badge }));
    Ok(Queued {
        notification: n,
        tweaks: Some(tweaks),
    })
}

/// A badge update: only the counts (Synapse sends one when a read receipt moves).
pub fn badge_only(badge: u64) -> Queued {
    let mut n = Map::new();
    n.insert("counts".into(), json!({ "unread": badge }));
    Queued {
        notification: n,
        tweaks: None,
    }
}

/// The unread count a gateway shows on the app's badge: the rooms with unread notifications
/// (Synapse's default, `group_unread_count_by_room`), by the same counts `/sync` reports.
pub fn badge(d: &Delivery<'_>, user: &UserId) -> Result<u64> {
    let ruleset = LazyRuleset::new(d.users, user);
    let head = d.stream.head();
    let mut rooms_with_unread = 0;
    for room_id in d.rooms.joined_rooms(user)? {
        let room = d.rooms.room(&room_id)?;
        let read_up_to = d.receipts.read_up_to(room.short, user)?;
        let counts = d
            .push
            .unread_counts(d.rooms, &room, user, read_up_to, head, || {
                RoomRules::new(d.rooms, ruleset.get()?, &room, user)
            })?;
        rooms_with_unread += u64::from(counts.notify > 0);
    }
    Ok(rooms_with_unread)
}

/// The request body for one pusher: the notification with the pusher's device. With
/// `format: "event_id_only"` the event's details stay home: only `event_id`, `room_id`,
/// `counts`, and `prio` (which Synapse keeps so that the gateway can still wake the app).
pub fn body(
    queued: &Queued,
    data: &HttpPusherData,
    app_id: &str,
    pushkey: &str,
    pushkey_ts: u64,
) -> Value {
    let mut n = queued.notification.clone();
    if data.format == Some(PushFormat::EventIdOnly) && n.contains_key("event_id") {
        n.retain(|k, _| matches!(k.as_str(), "event_id" | "room_id" | "counts" | "prio"));
    }
    let mut pusher_data = serde_json::to_value(data).unwrap_or_else(|_| json!({}));
    if let Some(obj) = pusher_data.as_object_mut() {
        obj.remove("url");
    }
    let mut device = json!({
        "app_id": app_id,
        "pushkey": pushkey,
        "pushkey_ts": pushkey_ts,
        "data": pusher_data,
    });
    if let Some(tweaks) = &queued.tweaks {
        device["tweaks"] = Value::Object(tweaks.clone());
    }
    n.insert("devices".into(), json!([device]));
    json!({ "notification": n })
}

#[cfg(test)]
mod tests {
    use ruma::push::{HighlightTweakValue, SoundTweakValue, Tweak};

    use super::*;

    #[test]
    fn tweaks_name_their_values_and_a_bare_highlight_is_true() {
        let actions = [
            Action::Notify,
            Action::SetTweak(Tweak::Sound(SoundTweakValue::Default)),
            Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes)),
        ];
        let got = tweaks(&actions);
        assert_eq!(
            Value::Object(got.clone()),
            json!({ "sound": "default", "highlight": true })
        );
        assert_eq!(prio(&TimelineEventType::RoomMessage, &got), "high");
        let quiet = tweaks(&[
            Action::Notify,
            Action::SetTweak(Tweak::Highlight(HighlightTweakValue::No)),
        ]);
        assert_eq!(Value::Object(quiet.clone()), json!({ "highlight": false }));
        assert_eq!(prio(&TimelineEventType::RoomMessage, &quiet), "low");
        assert_eq!(prio(&TimelineEventType::RoomEncrypted, &quiet), "high");
    }

    #[test]
    fn event_id_only_keeps_ids_counts_and_prio() {
        let mut n = Map::new();
        for (k, v) in [
            ("event_id", json!("$e")),
            ("room_id", json!("!r:x")),
            ("sender", json!("@a:x")),
            ("content", json!({ "body": "secret" })),
            ("prio", json!("low")),
            ("counts", json!({ "unread": 2 })),
        ] {
            n.insert(k.into(), v);
        }
        let queued = Queued {
            notification: n,
            tweaks: Some(Map::new()),
        };
        let mut data = HttpPusherData::new("https://push.example/_matrix/push/v1/notify".into());
        data.format = Some(PushFormat::EventIdOnly);
        assert_eq!(
            body(&queued, &data, "app", "key", 7),
            json!({ "notification": {
                "event_id": "$e",
                "room_id": "!r:x",
                "prio": "low",
                "counts": { "unread": 2 },
                "devices": [{
                    "app_id": "app",
                    "pushkey": "key",
                    "pushkey_ts": 7,
                    "data": { "format": "event_id_only" },
                    "tweaks": {},
                }],
            }})
        );
    }
}
