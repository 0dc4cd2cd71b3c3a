//! What a transaction carries, typed with ruma.

use ruma::OwnedRoomId;
use ruma::events::presence::PresenceEvent;
use ruma::events::{AnySyncEphemeralRoomEvent, AnyTimelineEvent, AnyToDeviceEvent};
use ruma::serde::Raw;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// One transaction pushed by the homeserver, in the order it sent it.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The homeserver's txnId.
    pub id: String,
    /// Timeline events, client format (`room_id`, `sender`, `event_id`, …).
    pub events: Vec<Raw<AnyTimelineEvent>>,
    /// EDUs, from `ephemeral` or MSC2409's `de.sorunome.msc2409.ephemeral`.
    pub ephemeral: Vec<Raw<EphemeralEvent>>,
    /// To-device messages, from `to_device` or `de.sorunome.msc2409.to_device`.
    pub to_device: Vec<Raw<AnyToDeviceEvent>>,
}

/// An EDU of a transaction. Room EDUs (`m.typing`, `m.receipt`) carry the room they belong
/// to in an extra `room_id` field, which the sync-format ruma types do not have.
#[derive(Debug, Clone)]
pub enum EphemeralEvent {
    Room {
        room_id: OwnedRoomId,
        event: AnySyncEphemeralRoomEvent,
    },
    Presence(PresenceEvent),
}

impl EphemeralEvent {
    pub fn room_id(&self) -> Option<&OwnedRoomId> {
        match self {
            Self::Room { room_id, .. } => Some(room_id),
            Self::Presence(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for EphemeralEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Head {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            room_id: Option<OwnedRoomId>,
        }
        let json = Box::<RawValue>::deserialize(d)?;
        let head: Head = serde_json::from_str(json.get()).map_err(D::Error::custom)?;
        if head.kind == "m.presence" {
            return serde_json::from_str(json.get())
                .map(Self::Presence)
                .map_err(D::Error::custom);
        }
        let room_id = head
            .room_id
            .ok_or_else(|| D::Error::custom(format!("`{}` EDU without `room_id`", head.kind)))?;
        let event = serde_json::from_str(json.get()).map_err(D::Error::custom)?;
        Ok(Self::Room { room_id, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::events::AnySyncEphemeralRoomEvent as Sync;

    #[test]
    fn parses_the_three_edu_kinds() {
        let typing = serde_json::json!({
            "type": "m.typing", "room_id": "!r:example.org",
            "content": { "user_ids": ["@a:example.org"] }
        });
        match serde_json::from_value::<EphemeralEvent>(typing).unwrap() {
            EphemeralEvent::Room {
                room_id,
                event: Sync::Typing(t),
            } => {
                assert_eq!(room_id, "!r:example.org");
                assert_eq!(t.content.user_ids, ["@a:example.org"]);
            }
            other => panic!("{other:?}"),
        }
        let presence = serde_json::json!({
            "type": "m.presence", "sender": "@a:example.org",
            "content": { "presence": "online" }
        });
        match serde_json::from_value::<EphemeralEvent>(presence).unwrap() {
            EphemeralEvent::Presence(p) => assert_eq!(p.sender, "@a:example.org"),
            other => panic!("{other:?}"),
        }
        let receipt_without_room = serde_json::json!({ "type": "m.receipt", "content": {} });
        let err = serde_json::from_value::<EphemeralEvent>(receipt_without_room).unwrap_err();
        assert!(err.to_string().contains("without `room_id`"), "{err}");
    }
}
