//! Private notes on a conversation.
//!
//! The customer is a member of the conversation's room (a Matrix or web customer reads all of
//! it), so no note is ever written there. A conversation's notes live in a notes room beside it:
//! desk-owned ([`owned_rooms`]), created on first use, linked from the desk's durable state. Only the
//! bot invites to it, and only staff; it is no conversation and no portal, so no customer and
//! no bridge is ever in it. Its timeline is the notes' record: an agent in Element writes notes
//! there as plain messages (`!note` in the conversation invites them and links it), the support
//! API writes them there as the bot on the author's behalf, and lists them from there.

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    Desk, actions,
    actor::Actor,
    owned_rooms::{self, OwnedRoom, Purpose},
    say,
};
use crate::{
    error::Result,
    events::Pdu,
    rooms::{Direction, MemberProfile, MembershipChange},
    storage::Key,
};

/// State in a notes room naming its conversation: `{"conversation": room id}`.
pub(crate) const NOTES_EVENT: &str = "io.charla.notes";
/// The key of the content field that carries a note's author and text when the bot writes it.
const NOTE_FIELD: &str = "io.charla.note";
/// Longest note, in characters.
pub(crate) const MAX_NOTE_CHARS: usize = 4000;

/// A note as the support API shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Note {
    pub(crate) event_id: OwnedEventId,
    pub(crate) author: OwnedUserId,
    pub(crate) body: String,
    pub(crate) ts: u64,
}

fn key(conversation: &RoomId) -> Vec<u8> {
    Key::new()
        .str("notes_room")
        .str(conversation.as_str())
        .into_vec()
}

/// The conversation's notes room, if it has one yet.
pub(crate) fn existing_room(desk: &Desk<'_>, conversation: &RoomId) -> Result<Option<OwnedRoomId>> {
    let recorded = owned_rooms::recorded_room(desk, &key(conversation))?;
    Ok(match recorded {
        Some(room) if desk.rooms.exists(&room)? => Some(room),
        _ => None,
    })
}

/// The conversation's notes room, created on first use (idempotently: its id is recorded
/// before it is made).
pub(crate) async fn room(desk: &Desk<'_>, conversation: &RoomId) -> Result<OwnedRoomId> {
    let held = desk.support.changes.lock().await;
    let room_id = owned_rooms::intended_room(desk, &held, &key(conversation)).await?;
    if desk.rooms.exists(&room_id)? {
        return Ok(room_id);
    }
    let about = actions::current(desk, conversation)?
        .and_then(|(c, _)| c.contact.name)
        .unwrap_or_else(|| conversation.to_string());
    let room = OwnedRoom {
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
    owned_rooms::create_room(desk, room).await
}

/// Invites `user` to the notes room, if they are staff and not in it yet.
pub(crate) async fn invite(desk: &Desk<'_>, notes_room: &RoomId, user: &UserId) -> Result<()> {
    if !desk.support.is_staff(user) {
        return Ok(());
    }
    let room = desk.rooms.room(notes_room)?;
    if matches!(
        desk.rooms.membership(&room, user)?,
        Some(MembershipState::Join | MembershipState::Invite)
    ) {
        return Ok(());
    }
    let change = MembershipChange {
        sender: desk.bot(),
        target: user,
        membership: MembershipState::Invite,
        profile: MemberProfile::default(),
        reason: Some("Private notes of a conversation"),
        is_direct: None,
    };
    desk.rooms.change_membership(notes_room, change).await?;
    Ok(())
}

/// Writes a note on its author's behalf (the actor): the bot posts it in the notes room
/// (created if need be), where it is durable once this returns; audited (without its text).
pub(crate) async fn write(
    desk: &Desk<'_>,
    conversation: &RoomId,
    actor: &Actor<'_>,
    text: &str,
) -> Result<Note> {
    let author = actor.user(desk.bot());
    let notes_room = room(desk, conversation).await?;
    let mut content = say::message(&format!("Note from {author}: {text}"), false);
    content[NOTE_FIELD] = json!({ "author": author, "text": text });
    let event_id = say::say_content(desk, &notes_room, &content, actor.txn("note")).await?;
    let details = json!({ "event_id": event_id, "notes_room": notes_room });
    desk.support
        .audit
        .write(actor, "conversation.note", conversation.as_str(), details)
        .await?;
    let ts = match desk.rooms.pdu_by_id(&event_id)? {
        Some(pdu) => u64::from(pdu.origin_server_ts.get()),
        None => super::now_ms(),
    };
    Ok(Note {
        event_id,
        author: author.to_owned(),
        body: text.to_owned(),
        ts,
    })
}

/// A page of the conversation's notes, newest first, from stream position `from` down: the
/// notes among the `limit` newest events there, and where the next page starts.
pub(crate) fn list(
    desk: &Desk<'_>,
    conversation: &RoomId,
    limit: usize,
    from: Option<u64>,
) -> Result<(Vec<Note>, Option<u64>)> {
    let Some(notes_room) = existing_room(desk, conversation)? else {
        return Ok((Vec::new(), None));
    };
    let room = desk.rooms.room(&notes_room)?;
    let from = from.unwrap_or(u64::MAX);
    let positions = desk
        .rooms
        .timeline_positions(room.short, from, Direction::Backward, limit)?;
    let next = (positions.len() == limit)
        .then(|| positions.last().map(|p| p.saturating_sub(1)))
        .flatten();
    let mut notes = Vec::new();
    for pos in positions {
        let ev = desk.rooms.event(pos)?;
        if ev.stored.redacted_by.is_none()
            && let Some(note) = note_of(desk, &ev.pdu)
        {
            notes.push(note);
        }
    }
    Ok((notes, next))
}

/// The note an event of a notes room is, if it is one: a message of staff, or one the bot
/// wrote on an author's behalf.
fn note_of(desk: &Desk<'_>, pdu: &Pdu) -> Option<Note> {
    if pdu.kind != TimelineEventType::RoomMessage {
        return None;
    }
    let content = pdu.content_as::<Value>().ok()?;
    let (author, body) = if pdu.sender == desk.bot() {
        // The bot's other messages are not notes.
        let note = &content[NOTE_FIELD];
        let author = UserId::parse(note["author"].as_str()?).ok()?;
        (author, note["text"].as_str()?.to_owned())
    } else {
        (pdu.sender.clone(), content["body"].as_str()?.to_owned())
    };
    Some(Note {
        event_id: pdu.event_id.clone(),
        author,
        body,
        ts: u64::from(pdu.origin_server_ts.get()),
    })
}
