//! A conversation's history for export (`charla admin conversation export`): every message with
//! its sender, the sender's display name, its time, text and media, a page at a time so that a
//! long conversation costs each request a bounded amount of work.
//!
//! A message is shown as it reads now: an edit is folded into the message it edits (the latest
//! edit's text, `edited: true`) rather than exported as a message of its own, and a redacted
//! message keeps its place, sender and time but has no text (`redacted: true`), as clients show
//! it. Reactions, redactions and state changes are not messages.

use std::collections::HashMap;

use ruma::{
    OwnedEventId, OwnedUserId, RoomId, UserId,
    events::{TimelineEventType, relation::RelationType},
};
use serde::Serialize;
use serde_json::Value;

use super::Desk;
use crate::{
    error::{Error, Result},
    events::ClientFormat,
    rooms::{Direction, EventView, relation_of},
};

/// One exported message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ExportedMessage {
    pub(crate) event_id: OwnedEventId,
    /// `m.room.message`, `m.sticker` or `m.room.encrypted`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) sender: OwnedUserId,
    /// The sender's display name in the room now.
    pub(crate) sender_name: Option<String>,
    pub(crate) origin_server_ts: u64,
    /// `origin_server_ts` in ISO 8601 (RFC 3339, UTC).
    pub(crate) time: String,
    pub(crate) msgtype: Option<String>,
    pub(crate) body: Option<String>,
    /// The media's `mxc://` URI, for images, files, audio, video and stickers.
    pub(crate) media_url: Option<String>,
    /// Where the media downloads over HTTP (the authenticated media API: any access token of
    /// someone who may see it).
    pub(crate) download_url: Option<String>,
    /// The message this one answers.
    pub(crate) in_reply_to: Option<String>,
    pub(crate) edited: bool,
    pub(crate) redacted: bool,
}

/// One page: the messages among the timeline events read, and where the next page starts
/// (`None` on the last).
#[derive(Debug)]
pub(crate) struct ExportPage {
    pub(crate) messages: Vec<ExportedMessage>,
    pub(crate) next: Option<u64>,
}

/// The messages among the conversation's next `limit` timeline events after position `from`
/// (0: from the start). `media_base` is the download URL's prefix, up to the server name.
pub(crate) fn page(
    desk: &Desk<'_>,
    room_id: &RoomId,
    from: u64,
    limit: usize,
    media_base: &str,
) -> Result<ExportPage> {
    let room = desk.rooms.room(room_id)?;
    let positions = desk
        .rooms
        .timeline_positions(room.short, from, Direction::Forward, limit)?;
    let next = (positions.len() == limit)
        .then(|| positions.last().copied())
        .flatten();
    let view = EventView {
        user: desk.bot(),
        device: None,
        format: ClientFormat::WithRoomId,
    };
    let mut names: HashMap<OwnedUserId, Option<String>> = HashMap::new();
    let mut messages = Vec::new();
    for pos in positions {
        let event = desk.rooms.event(pos)?;
        let pdu = &event.pdu;
        let is_message = matches!(
            pdu.kind,
            TimelineEventType::RoomMessage
                | TimelineEventType::Sticker
                | TimelineEventType::RoomEncrypted
        );
        let is_edit = relation_of(pdu).is_some_and(|r| r.rel_type == RelationType::Replacement);
        if !is_message || pdu.state_key.is_some() || is_edit {
            continue;
        }
        let formatted: Value = serde_json::from_str(desk.rooms.client_event(pos, view)?.get())
            .map_err(|e| Error::internal(e.to_string()))?;
        if !names.contains_key(&pdu.sender) {
            let name = display_name(desk, room.short, &pdu.sender)?;
            names.insert(pdu.sender.clone(), name);
        }
        let ts = u64::from(pdu.origin_server_ts.get());
        let shown = shown(&formatted, media_base);
        messages.push(ExportedMessage {
            event_id: pdu.event_id.clone(),
            kind: pdu.kind.to_string(),
            sender: pdu.sender.clone(),
            sender_name: names.get(&pdu.sender).cloned().flatten(),
            origin_server_ts: ts,
            time: iso_time(ts),
            msgtype: shown.msgtype,
            body: shown.body,
            media_url: shown.media_url,
            download_url: shown.download_url,
            in_reply_to: shown.in_reply_to,
            edited: shown.edited,
            redacted: event.stored.redacted_by.is_some(),
        });
    }
    Ok(ExportPage { messages, next })
}

/// What a message shows: its text and media.
struct Shown {
    msgtype: Option<String>,
    body: Option<String>,
    media_url: Option<String>,
    download_url: Option<String>,
    in_reply_to: Option<String>,
    edited: bool,
}

/// The message's text and media as clients see it now (the latest edit's content when it was
/// edited), from the event in the client format.
fn shown(event: &Value, media_base: &str) -> Shown {
    let edit = &event["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"];
    let content = if edit.is_object() {
        edit
    } else {
        &event["content"]
    };
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let media_url = text(&content["url"])
        .or_else(|| text(&content["file"]["url"]))
        .filter(|u| u.starts_with("mxc://"));
    Shown {
        msgtype: text(&content["msgtype"]),
        body: text(&content["body"]),
        download_url: media_url
            .as_deref()
            .and_then(|mxc| mxc.strip_prefix("mxc://"))
            .map(|server_and_id| format!("{media_base}/{server_and_id}")),
        media_url,
        in_reply_to: text(&event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"]),
        edited: edit.is_object(),
    }
}

/// The sender's display name in the room now (their member event), if they set one.
fn display_name(desk: &Desk<'_>, short: u64, user: &UserId) -> Result<Option<String>> {
    let Some(member) = desk
        .rooms
        .state_pdu(short, "m.room.member", user.as_str())?
    else {
        return Ok(None);
    };
    let content: Value =
        serde_json::from_str(member.content.get()).map_err(|e| Error::internal(e.to_string()))?;
    Ok(content["displayname"].as_str().map(str::to_owned))
}

/// Milliseconds since the epoch as ISO 8601 (RFC 3339) in UTC.
fn iso_time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const BASE: &str = "https://chat.example/_matrix/client/v1/media/download";

    #[test]
    fn an_edited_message_reads_as_its_latest_edit() {
        let event = json!({
            "content": {"msgtype": "m.text", "body": "helo",
                        "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}}},
            "unsigned": {"m.relations": {"m.replace": {"content": {
                "body": "* hello", "m.new_content": {"msgtype": "m.text", "body": "hello"}}}}},
        });
        let m = shown(&event, BASE);
        assert_eq!(m.body.as_deref(), Some("hello"));
        assert!(m.edited);
        assert_eq!(m.in_reply_to.as_deref(), Some("$q"));
        assert_eq!(m.media_url, None);
    }

    #[test]
    fn media_gets_its_download_url_and_a_redacted_message_no_text() {
        let image = json!({"content": {"msgtype": "m.image", "body": "cat.png",
                                       "url": "mxc://chat.example/abc123"}});
        let m = shown(&image, BASE);
        assert_eq!(m.media_url.as_deref(), Some("mxc://chat.example/abc123"));
        assert_eq!(
            m.download_url.as_deref(),
            Some("https://chat.example/_matrix/client/v1/media/download/chat.example/abc123")
        );
        assert!(!m.edited);
        let redacted = json!({"content": {}, "unsigned": {"redacted_because": {}}});
        let m = shown(&redacted, BASE);
        assert_eq!((m.body, m.msgtype, m.media_url), (None, None, None));
        let not_mxc = json!({"content": {"msgtype": "m.image", "body": "x", "url": "https://x"}});
        assert_eq!(shown(&not_mxc, BASE).download_url, None);
    }

    #[test]
    fn times_are_iso_8601_in_utc() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
