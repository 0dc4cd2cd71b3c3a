//! What an event changes in the index, and the documents the index holds.
//!
//! Decided from the event alone ([`change_of`]); the indexer resolves what needs the store (an
//! edit's original, a conversation's record).

use ruma::{
    OwnedEventId, OwnedRoomId,
    events::{TimelineEventType, relation::RelationType},
};
use serde::Deserialize;
use tantivy::{TantivyDocument, Term};

use super::Fields;
use crate::{events::Pdu, support::CONVERSATION_EVENT};

/// Longest text indexed per document, in bytes: events are at most 64 KiB, and a word past
/// this is not what anyone searches for.
const MAX_TEXT: usize = 32 * 1024;

/// Which text of an event a document holds: the Client-Server API's search keys, and the
/// support desk's conversation documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Body,
    Name,
    Topic,
    Conversation,
}

impl Key {
    /// Every key, the most common first.
    pub(crate) const ALL: [Key; 4] = [Key::Body, Key::Name, Key::Topic, Key::Conversation];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Key::Body => "content.body",
            Key::Name => "content.name",
            Key::Topic => "content.topic",
            Key::Conversation => "conversation",
        }
    }
}

/// One document of the index.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    pub(crate) room_id: String,
    pub(crate) pos: u64,
    pub(crate) sender: String,
    pub(crate) kind: String,
    pub(crate) key: Key,
    pub(crate) text: String,
    /// The edit the text comes from.
    pub(crate) edit: Option<OwnedEventId>,
    /// Whether the event's content has a `url` (a file, an image).
    pub(crate) has_url: bool,
}

impl Doc {
    /// The document of an event's own text under `key`.
    pub(crate) fn of_event(pdu: &Pdu, pos: u64, key: Key, text: &str, has_url: bool) -> Doc {
        Doc {
            room_id: pdu.room_id.to_string(),
            pos,
            sender: pdu.sender.to_string(),
            kind: pdu.kind.to_string(),
            key,
            text: truncate(text).to_owned(),
            edit: None,
            has_url,
        }
    }

    /// The document under an edit's text.
    pub(crate) fn edited(mut self, edit: OwnedEventId, text: &str) -> Doc {
        self.text = truncate(text).to_owned();
        self.edit = Some(edit);
        self
    }

    pub(crate) fn to_tantivy(&self, f: &Fields) -> TantivyDocument {
        let mut d = TantivyDocument::default();
        d.add_text(f.room_id, &self.room_id);
        d.add_u64(f.pos, self.pos);
        d.add_text(f.sender, &self.sender);
        d.add_text(f.kind, &self.kind);
        d.add_text(f.key, self.key.as_str());
        d.add_text(f.text, &self.text);
        if let Some(edit) = &self.edit {
            d.add_text(f.edit, edit.as_str());
        }
        if self.has_url {
            d.add_text(f.url, "true");
        }
        d
    }
}

/// What identifies an event's document, for replacing or removing it: its stream position
/// (unique per event, and a sequential number costs the term dictionary next to nothing, where
/// an event id per document made it the rebuild's largest cost).
pub(crate) fn pos_term(f: &Fields, pos: u64) -> Term {
    Term::from_field_u64(f.pos, pos)
}

/// The event types of the documents, the most common first.
pub(crate) const INDEXED_KINDS: [&str; 4] = [
    "m.room.message",
    "m.room.name",
    "m.room.topic",
    CONVERSATION_EVENT,
];

/// What one event changes in the index.
#[derive(Debug)]
pub(crate) enum Change {
    /// The event's own text, as a new document.
    Put(Doc),
    /// A message's text changed (an edit of it arrived): index it again, under its newest text.
    Refresh(OwnedEventId),
    /// An event was redacted: its document goes, and a message indexed under its text (it was
    /// an edit) is indexed again.
    Redacted(OwnedEventId),
    /// A conversation's support state changed: its document is written again.
    Conversation(OwnedRoomId, u64),
}

/// What the event at `pos` changes in the index, if anything.
pub(crate) fn change_of(pdu: &Pdu, pos: u64) -> Option<Change> {
    match &pdu.kind {
        TimelineEventType::RoomMessage => message_change(pdu, pos),
        TimelineEventType::RoomName => state_text(pdu, "name")
            .map(|t| Change::Put(Doc::of_event(pdu, pos, Key::Name, &t, false))),
        TimelineEventType::RoomTopic => state_text(pdu, "topic")
            .map(|t| Change::Put(Doc::of_event(pdu, pos, Key::Topic, &t, false))),
        TimelineEventType::RoomRedaction => redacted_event(pdu).map(Change::Redacted),
        _ if pdu.state_key.as_deref() == Some("") && pdu.kind.to_string() == CONVERSATION_EVENT => {
            Some(Change::Conversation(pdu.room_id.clone(), pos))
        }
        _ => None,
    }
}

/// Whether a stored event still has the text it was indexed under: not when it was redacted
/// or its room deleted (rewritten without its content) since its document was written.
pub(crate) fn still_has_text(event: &crate::rooms::Loaded) -> bool {
    event.stored.redacted_by.is_none() && matches!(change_of(&event.pdu, 0), Some(Change::Put(_)))
}

/// A message's change, from one reading of its content: an edit refreshes its original (the
/// edit itself is not a document), anything else with a `body` is one. Reindexing reads every
/// message once, so this is the indexing's hot path.
fn message_change(pdu: &Pdu, pos: u64) -> Option<Change> {
    #[derive(Deserialize)]
    struct Relation {
        rel_type: Option<String>,
        event_id: Option<OwnedEventId>,
    }
    #[derive(Deserialize)]
    struct Content<'a> {
        #[serde(borrow)]
        body: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        url: Option<&'a serde_json::value::RawValue>,
        #[serde(rename = "m.relates_to")]
        relates_to: Option<Relation>,
    }
    let content: Content<'_> = pdu.content_as().ok()?;
    if let Some(Relation {
        rel_type: Some(rel),
        event_id: Some(original),
    }) = content.relates_to
        && rel == RelationType::Replacement.as_str()
    {
        return Some(Change::Refresh(original));
    }
    let has_url = content.url.is_some_and(|u| u.get().starts_with('"'));
    let body = content.body?;
    Some(Change::Put(Doc::of_event(
        pdu,
        pos,
        Key::Body,
        &body,
        has_url,
    )))
}

/// A message's `body`; `None` for a redacted or malformed message.
pub(crate) fn message_body(pdu: &Pdu) -> Option<String> {
    #[derive(Deserialize)]
    struct Content {
        body: String,
    }
    pdu.content_as::<Content>().ok().map(|c| c.body)
}

/// The `body` an edit gives its message (`m.new_content.body`).
pub(crate) fn new_body(edit: &Pdu) -> Option<String> {
    #[derive(Deserialize)]
    struct NewContent {
        body: String,
    }
    #[derive(Deserialize)]
    struct Content {
        #[serde(rename = "m.new_content")]
        new_content: NewContent,
    }
    edit.content_as::<Content>()
        .ok()
        .map(|c| c.new_content.body)
}

fn state_text(pdu: &Pdu, field: &str) -> Option<String> {
    if pdu.state_key.as_deref() != Some("") {
        return None;
    }
    let content: serde_json::Map<String, serde_json::Value> = pdu.content_as().ok()?;
    let text = content.get(field)?.as_str()?;
    (!text.is_empty()).then(|| text.to_owned())
}

/// The event a redaction redacts: `content.redacts` (room version 11), or the top-level key.
fn redacted_event(pdu: &Pdu) -> Option<OwnedEventId> {
    #[derive(Deserialize)]
    struct Content {
        redacts: Option<OwnedEventId>,
    }
    pdu.content_as::<Content>()
        .ok()
        .and_then(|c| c.redacts)
        .or_else(|| pdu.redacts.clone())
}

fn truncate(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "ñ".repeat(MAX_TEXT);
        let cut = truncate(&text);
        assert!(cut.len() <= MAX_TEXT && cut.len() > MAX_TEXT - 2);
        assert!(cut.chars().all(|c| c == 'ñ'));
        assert_eq!(truncate("batería"), "batería");
    }
}
