//! What the bot says in a room: its messages, sent as its own user.

use ruma::{OwnedEventId, RoomId, UserId};
use serde_json::{Value, json};

use super::Desk;
use crate::{
    error::{Error, Result},
    events::EventTemplate,
    rooms::Txn,
};

/// Sends a message as the bot. `internal` messages are for agents only: the bridge never
/// forwards them (contract.md).
pub(crate) async fn say(
    desk: &Desk<'_>,
    room_id: &RoomId,
    text: &str,
    internal: bool,
    mentions: &[&UserId],
    txn: Option<Txn>,
) -> Result<OwnedEventId> {
    let mut content = message(text, internal);
    if !mentions.is_empty() {
        content["m.mentions"] = json!({ "user_ids": mentions });
    }
    say_content(desk, room_id, &content, txn).await
}

/// The content of a message of the bot (see [`say`]), for callers that add fields to it.
pub(crate) fn message(text: &str, internal: bool) -> Value {
    let mut content = json!({
        "msgtype": if internal { "m.notice" } else { "m.text" },
        "body": text,
    });
    if internal {
        content["io.charla.internal"] = json!(true);
    }
    content
}

/// Sends an `m.room.message` with this content as the bot.
pub(crate) async fn say_content(
    desk: &Desk<'_>,
    room_id: &RoomId,
    content: &Value,
    txn: Option<Txn>,
) -> Result<OwnedEventId> {
    let raw = serde_json::value::to_raw_value(content)
        .map_err(|e| Error::internal(format!("message content: {e}")))?;
    let template = EventTemplate::message("m.room.message", raw);
    desk.rooms.send(room_id, desk.bot(), template, txn).await
}

#[cfg(test)]
mod tests {
    use super::message;

    #[test]
    fn internal_messages_are_notices_marked_for_agents_only() {
        let internal = message("hi", true);
        assert_eq!(internal["msgtype"], "m.notice");
        assert_eq!(internal["io.charla.internal"], true);
        let public = message("hi", false);
        assert_eq!(public["msgtype"], "m.text");
        assert_eq!(public["body"], "hi");
        assert!(public.get("io.charla.internal").is_none());
    }
}
