//! What the desk refuses on the client send path, as a Synapse module's `check_event_for_spam`
//! would: the room's auth rules know nothing of the desk, so these checks run before them.
//!
//! - The desk's state (`io.charla.*`) from anyone [`trust::is_desk`] does not name: power in a
//!   room is no say on the desk (the desk ignores such events anyway; refusing them says so).
//! - `!note TEXT` from staff in a conversation: the customer is a member of that room, so a
//!   note there would be read by the very person it is about. Notes go to the conversation's
//!   staff-only notes room (`!note` alone links it) or through the support API.

use ruma::{RoomId, UserId, events::TimelineEventType};
use serde_json::value::RawValue;

use super::{Desk, SupportService, conversation::DESK_STATE_PREFIX, trust};
use crate::error::{Error, Result};

/// A state event of type `kind` from `sender`.
pub(crate) fn check_state(desk: &Desk<'_>, sender: &UserId, kind: &str) -> Result<()> {
    if !desk.config().enabled || !kind.starts_with(DESK_STATE_PREFIX) {
        return Ok(());
    }
    if trust::is_desk(desk, sender)? {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "{kind} is the support desk's state: only the desk may set it"
    )))
}

/// A message event of type `kind` with this content from `sender` in `room_id`. On the send
/// path: costs a substring test unless the message is a `!note`.
pub(crate) fn check_message(
    support: &SupportService,
    sender: &UserId,
    room_id: &RoomId,
    kind: &TimelineEventType,
    content: &RawValue,
) -> Result<()> {
    // A substring test first: this runs on every message sent.
    if *kind != TimelineEventType::RoomMessage
        || !content.get().contains("!note")
        || !support.config.enabled
    {
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        body: Option<std::borrow::Cow<'a, str>>,
    }
    let body = serde_json::from_str::<Body>(content.get())
        .ok()
        .and_then(|b| b.body);
    if !body.as_deref().is_some_and(is_note_with_text)
        || !support.is_staff(sender)
        || !support.index.contains(room_id)?
    {
        return Ok(());
    }
    Err(Error::forbidden(
        "Private notes are never written in the conversation, which the customer reads: send \
         !note alone to be invited to the conversation's notes room, or use the support API",
    ))
}

/// `!note` followed by some text.
fn is_note_with_text(body: &str) -> bool {
    body.strip_prefix("!note")
        .is_some_and(|rest| rest.starts_with(char::is_whitespace) && !rest.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::is_note_with_text;

    #[test]
    fn only_a_note_with_text_is_one() {
        assert!(is_note_with_text("!note call her back"));
        assert!(is_note_with_text("!note\nline"));
        for not in [
            "!note",
            "!note   ",
            "!notes x",
            "note x",
            " !note x",
            "!ticket x",
        ] {
            assert!(!is_note_with_text(not), "{not:?}");
        }
    }
}
