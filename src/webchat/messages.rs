//! What the customer sees of their conversation: the seed's `ChatMessage`s, read from the
//! room's events.
//!
//! The room is the record: a message is an `m.room.message` event, its id a UUID derived from
//! the event id (so the same message has the same id in every answer and every socket frame),
//! its time the event's `origin_server_ts`. The customer sees their own messages and support's
//! (agents', and the bot's greeting and answers), never the desk's inner workings: messages
//! marked `io.charla.internal` (the bot's notices to agents), agents' `!` commands, edits as
//! separate messages (an edit by the message's sender changes its text instead), or anything
//! that is not a message (state, reactions).

use ruma::{EventId, OwnedEventId, UserId, events::TimelineEventType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::events::Pdu;

/// Who wrote a message, as the widget names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Sender {
    /// The customer.
    User,
    /// An agent or the support bot.
    Support,
}

/// A message as the seed's `ChatMessage` describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatMessage {
    pub(crate) id: Uuid,
    pub(crate) session_id: Uuid,
    pub(crate) message: String,
    pub(crate) sender: Sender,
    pub(crate) timestamp_ms: u64,
    /// The stream position of its event: the order of arrival, and a socket frame's cursor.
    pub(crate) pos: u64,
    pub(crate) is_read: bool,
}

impl ChatMessage {
    /// The message the customer sees of the event at `pos` (`seen`: what [`visible`] gave).
    pub(crate) fn of(
        pdu: &Pdu,
        pos: u64,
        session_id: Uuid,
        seen: (Sender, String),
        is_read: bool,
    ) -> Self {
        let (sender, message) = seen;
        ChatMessage {
            id: message_id(&pdu.event_id),
            session_id,
            message,
            sender,
            timestamp_ms: u64::from(pdu.origin_server_ts.get()),
            pos,
            is_read,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "sessionId": self.session_id,
            "message": self.message,
            "sender": self.sender,
            "timestamp": iso(self.timestamp_ms),
            "isRead": self.is_read,
        })
    }
}

/// How far each side has read a conversation (stream positions of the newest event read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReadMarks {
    /// The customer, through mark-read.
    pub(crate) customer: u64,
    /// Any agent, through a Matrix read receipt.
    pub(crate) support: u64,
}

impl ReadMarks {
    /// Whether the other side has read a message of `sender` at `pos`.
    pub(crate) fn is_read(&self, sender: Sender, pos: u64) -> bool {
        match sender {
            Sender::User => pos <= self.support,
            Sender::Support => pos <= self.customer,
        }
    }
}

/// The content fields that decide what the customer sees.
#[derive(Deserialize)]
struct Content {
    body: Option<String>,
    #[serde(rename = "io.charla.internal", default)]
    internal: Option<bool>,
    #[serde(rename = "m.relates_to", default)]
    relates_to: Option<Value>,
}

/// What the customer `customer` sees of an event of their conversation: who wrote it and its
/// text, or `None` when it is not for them.
pub(crate) fn visible(pdu: &Pdu, customer: &UserId) -> Option<(Sender, String)> {
    if pdu.kind != TimelineEventType::RoomMessage {
        return None;
    }
    // A redacted message has no body left: it is gone for the customer too.
    let content: Content = pdu.content_as().ok()?;
    let body = content.body?;
    if content.internal == Some(true) {
        return None;
    }
    if content
        .relates_to
        .as_ref()
        .is_some_and(|r| r["rel_type"] == "m.replace")
    {
        return None;
    }
    if pdu.sender == customer {
        return Some((Sender::User, body));
    }
    // Commands are for the bot: the customer sees what they do, never the command.
    if body.starts_with('!') {
        return None;
    }
    Some((Sender::Support, body))
}

/// An edit (`m.replace`) of an earlier message: the event it replaces and the new text. Whether
/// it counts (the same sender as the message, which the customer sees) is the caller's to
/// check with the original at hand.
pub(crate) fn edit(pdu: &Pdu) -> Option<(OwnedEventId, String)> {
    #[derive(Deserialize)]
    struct Edit {
        #[serde(rename = "m.new_content")]
        new_content: NewContent,
        #[serde(rename = "m.relates_to")]
        relates_to: Relation,
        #[serde(rename = "io.charla.internal", default)]
        internal: Option<bool>,
    }
    #[derive(Deserialize)]
    struct NewContent {
        body: String,
    }
    #[derive(Deserialize)]
    struct Relation {
        rel_type: String,
        event_id: OwnedEventId,
    }
    if pdu.kind != TimelineEventType::RoomMessage {
        return None;
    }
    let e: Edit = pdu.content_as().ok()?;
    (e.relates_to.rel_type == "m.replace" && e.internal != Some(true))
        .then_some((e.relates_to.event_id, e.new_content.body))
}

/// The message id of the event `event_id`: a UUID (version 8, RFC 9562) made of the first
/// bytes of the id's SHA-256, so the widget gets UUIDs as the seed asks and every answer gives
/// one message the same id.
pub(crate) fn message_id(event_id: &EventId) -> Uuid {
    let digest = Sha256::digest(event_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// A time as the widget's `Date` parses it: ISO 8601, UTC, milliseconds.
pub(crate) fn iso(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => "1970-01-01T00:00:00.000Z".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::{owned_event_id, user_id};
    use serde_json::json;

    fn pdu(sender: &str, kind: &str, content: Value) -> Pdu {
        let event = json!({
            "room_id": "!r:x", "sender": sender, "origin_server_ts": 1_000, "type": kind,
            "content": content, "prev_events": [], "auth_events": [], "depth": 1,
        });
        Pdu::parse(owned_event_id!("$e:x"), &event.to_string()).unwrap()
    }

    #[test]
    fn the_customer_sees_messages_but_not_the_desks_inner_workings() {
        let customer = user_id!("@web_ana:x");
        let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
        assert_eq!(
            visible(&pdu("@web_ana:x", "m.room.message", text("hola")), customer),
            Some((Sender::User, "hola".into()))
        );
        assert_eq!(
            visible(
                &pdu("@agent:x", "m.room.message", text("¿En qué puedo ayudar?")),
                customer
            ),
            Some((Sender::Support, "¿En qué puedo ayudar?".into()))
        );
        // The customer's own text starting with `!` is theirs; an agent's is a command.
        assert_eq!(
            visible(
                &pdu("@web_ana:x", "m.room.message", text("!urgente")),
                customer
            ),
            Some((Sender::User, "!urgente".into()))
        );
        assert_eq!(
            visible(&pdu("@agent:x", "m.room.message", text("!close")), customer),
            None
        );
        let internal =
            json!({ "msgtype": "m.notice", "body": "assigned", "io.charla.internal": true });
        assert_eq!(
            visible(&pdu("@support:x", "m.room.message", internal), customer),
            None
        );
        let edit = json!({ "msgtype": "m.text", "body": "* hola",
            "m.relates_to": { "rel_type": "m.replace", "event_id": "$a:x" } });
        assert_eq!(
            visible(&pdu("@agent:x", "m.room.message", edit), customer),
            None
        );
        assert_eq!(
            visible(&pdu("@agent:x", "m.room.message", json!({})), customer),
            None
        );
        assert_eq!(
            visible(&pdu("@agent:x", "m.reaction", text("x")), customer),
            None
        );
    }

    #[test]
    fn an_edit_names_its_message_and_new_text() {
        let replace = json!({ "msgtype": "m.text", "body": "* Hola, Ana",
            "m.new_content": { "msgtype": "m.text", "body": "Hola, Ana" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": "$a:x" } });
        assert_eq!(
            edit(&pdu("@agent:x", "m.room.message", replace)),
            Some((owned_event_id!("$a:x"), "Hola, Ana".into()))
        );
        let thread = json!({ "msgtype": "m.text", "body": "x",
            "m.relates_to": { "rel_type": "m.thread", "event_id": "$a:x" } });
        assert_eq!(edit(&pdu("@agent:x", "m.room.message", thread)), None);
        let plain = json!({ "msgtype": "m.text", "body": "x" });
        assert_eq!(edit(&pdu("@agent:x", "m.room.message", plain)), None);
    }

    #[test]
    fn ids_are_stable_uuids_and_times_are_iso_utc_with_milliseconds() {
        let id = message_id(&owned_event_id!("$abc:x"));
        assert_eq!(id, message_id(&owned_event_id!("$abc:x")));
        assert_ne!(id, message_id(&owned_event_id!("$abd:x")));
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(iso(1_733_479_200_123), "2024-12-06T10:00:00.123Z");
        assert_eq!(iso(1_733_479_200_000), "2024-12-06T10:00:00.000Z");
    }

    #[test]
    fn each_side_reads_the_others_messages() {
        let marks = ReadMarks {
            customer: 10,
            support: 5,
        };
        assert!(marks.is_read(Sender::User, 5));
        assert!(!marks.is_read(Sender::User, 6));
        assert!(marks.is_read(Sender::Support, 10));
        assert!(!marks.is_read(Sender::Support, 11));
    }
}
