//! Private notes on a conversation.
//!
//! The customer is a member of the conversation's room (a Matrix or web customer reads all of
//! it), so no note is ever written there. A conversation's notes live in a notes room beside it:
//! desk-owned ([`desk`]), created on first use, linked from the desk's durable state. Only the
//! bot invites to it, and only staff; it is no conversation and no portal, so no customer and
//! no bridge is ever in it. Its timeline is the notes' record: an agent in Element writes notes
//! there as plain messages (`!note` in the conversation invites them and links it), the support
//! API writes them there as the bot on the author's behalf, and lists them from there.

use ruma::{
    OwnedRoomId, RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    actions::{self, Actor},
    desk::{self, DeskRoom, Purpose},
};
use crate::{
    error::Result,
    rooms::{Direction, MemberProfile, MembershipChange},
    services::Services,
    storage::{Batch, Key},
};

/// State in a notes room naming its conversation: `{"conversation": room id}`.
pub const NOTES_EVENT: &str = "io.charla.notes";
/// The key of the content field that carries a note's author and text when the bot writes it.
const NOTE_FIELD: &str = "io.charla.note";
/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 4000;

/// A note as the support API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    pub event_id: String,
    pub author: String,
    pub body: String,
    pub ts: u64,
}

fn key(conversation: &RoomId) -> Vec<u8> {
    Key::new()
        .str("notes_room")
        .str(conversation.as_str())
        .into_vec()
}

/// The conversation's notes room, if it has one yet.
pub fn existing_room(s: &Services, conversation: &RoomId) -> Result<Option<OwnedRoomId>> {
    let recorded = desk::recorded_room(s, &key(conversation))?;
    Ok(match recorded {
        Some(room) if s.rooms.exists(&room)? => Some(room),
        _ => None,
    })
}

/// The conversation's notes room, created on first use (idempotently: its id is recorded
/// before it is made).
pub async fn room(s: &Services, conversation: &RoomId) -> Result<OwnedRoomId> {
    let held = s.support.changes.lock().await;
    let room_id = desk::intended_room(s, &held, &key(conversation)).await?;
    if s.rooms.exists(&room_id)? {
        return Ok(room_id);
    }
    let about = actions::current(s, conversation)?
        .and_then(|(c, _)| c.contact.name)
        .unwrap_or_else(|| conversation.to_string());
    let room = DeskRoom {
        purpose: Purpose::Notes,
        room_id,
        name: Some(format!("Notes: {about}")),
        topic: Some(format!(
            "Private notes on the conversation {conversation}, for staff only: the customer never \
             sees this room."
        )),
        invite: Vec::new(),
        is_direct: false,
        initial_state: vec![(
            NOTES_EVENT.into(),
            String::new(),
            json!({ "conversation": conversation }),
        )],
    };
    desk::create_room(s, room).await
}

/// Invites `user` to the notes room, if they are staff and not in it yet.
pub async fn invite(s: &Services, notes_room: &RoomId, user: &UserId) -> Result<()> {
    if !s.support.is_staff(user) {
        return Ok(());
    }
    let room = s.rooms.room(notes_room)?;
    if matches!(
        s.rooms.membership(&room, user)?,
        Some(MembershipState::Join | MembershipState::Invite)
    ) {
        return Ok(());
    }
    let change = MembershipChange {
        sender: &s.support.bot,
        target: user,
        membership: MembershipState::Invite,
        profile: MemberProfile::default(),
        reason: Some("Private notes of a conversation"),
        is_direct: None,
    };
    s.rooms.change_membership(notes_room, change).await?;
    Ok(())
}

/// Writes a note on its author's behalf (the actor): the bot posts it in the notes room
/// (created if need be), where it is durable once this returns; audited (without its text).
pub async fn write(
    s: &Services,
    conversation: &RoomId,
    actor: &Actor<'_>,
    text: &str,
) -> Result<Note> {
    let author = actor.user;
    let notes_room = room(s, conversation).await?;
    let mut content = actions::message(&format!("Note from {author}: {text}"), false);
    content[NOTE_FIELD] = json!({ "author": author, "text": text });
    let event_id = actions::say_content(s, &notes_room, &content, actor.txn("note")).await?;
    let mut batch = Batch::new();
    s.support.audit.record(
        &mut batch,
        author.as_str(),
        "conversation.note",
        conversation.as_str(),
        actor.via,
        json!({ "event_id": event_id, "notes_room": notes_room }),
    )?;
    s.store.write_durable(batch).await?;
    let ts = match s.rooms.pdu_by_id(&event_id)? {
        Some(pdu) => u64::from(pdu.origin_server_ts.get()),
        None => super::now_ms(),
    };
    Ok(Note {
        event_id: event_id.to_string(),
        author: author.to_string(),
        body: text.to_owned(),
        ts,
    })
}

/// A page of the conversation's notes, newest first, from stream position `from` down: the
/// notes among the `limit` newest events there, and where the next page starts.
pub fn list(
    s: &Services,
    conversation: &RoomId,
    limit: usize,
    from: Option<u64>,
) -> Result<(Vec<Note>, Option<u64>)> {
    let Some(notes_room) = existing_room(s, conversation)? else {
        return Ok((Vec::new(), None));
    };
    let room = s.rooms.room(&notes_room)?;
    let from = from.unwrap_or(u64::MAX);
    let positions = s
        .rooms
        .timeline_positions(room.short, from, Direction::Backward, limit)?;
    let next = (positions.len() == limit)
        .then(|| positions.last().map(|p| p.saturating_sub(1)))
        .flatten();
    let mut notes = Vec::new();
    for pos in positions {
        let ev = s.rooms.event(pos)?;
        let pdu = &ev.pdu;
        if pdu.kind != TimelineEventType::RoomMessage || ev.stored.redacted_by.is_some() {
            continue;
        }
        let Ok(content) = pdu.content_as::<Value>() else {
            continue;
        };
        let (author, body) = if pdu.sender == s.support.bot {
            let note = &content[NOTE_FIELD];
            match (note["author"].as_str(), note["text"].as_str()) {
                (Some(a), Some(t)) => (a.to_owned(), t.to_owned()),
                // The bot's other messages are not notes.
                _ => continue,
            }
        } else {
            match content["body"].as_str() {
                Some(body) => (pdu.sender.to_string(), body.to_owned()),
                None => continue,
            }
        };
        notes.push(Note {
            event_id: pdu.event_id.to_string(),
            author,
            body,
            ts: u64::from(pdu.origin_server_ts.get()),
        });
    }
    Ok((notes, next))
}
