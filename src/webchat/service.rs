//! The contract's operations (`docs/webchat.md`), in the order the seed validates: the
//! session exists (404), it is the caller's (403), then the input (400), then the rate (429).
//!
//! Opening a session writes its record first and makes its room second, so that a crash in
//! between leaves a record the next request finishes ([`finish_room`]): the room is named
//! before it is made (`support::owned_rooms::intended_room`), so finishing twice makes one room.

use std::collections::HashMap;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Chat, ChatError, Customer, customer_localpart,
    messages::{ChatMessage, ReadMarks, Sender, edit, iso, message_id, visible},
    sessions::{SessionRecord, SessionStatus},
};
use crate::{
    ephemeral::ReceiptKind,
    error::{Error, Result},
    events::EventTemplate,
    rooms::{Direction, MemberProfile, RoomMeta, Txn},
    storage::{Batch, Key},
    support::{
        actions::{self, NewConversation},
        actor::Actor,
        conversation::{Channel, Contact, Conversation},
        now_ms,
        say::say,
    },
    users::NewAccount,
};

/// Longest message, in characters (the seed's rule).
pub(crate) const MAX_MESSAGE_CHARS: usize = 500;
/// Events of a room looked at for its messages, newest first: a support chat is far shorter;
/// this bounds what one request can make the server read.
const MAX_EVENTS_READ: usize = 2_000;
/// Sessions listed in a customer's history.
const MAX_HISTORY: usize = 100;
/// The device name the web chat's idempotent sends are recorded under.
const WEBCHAT_DEVICE: &str = "io.charla.webchat";

/// A session as the API answers it: the seed's `ChatSession`.
pub(crate) struct SessionView {
    pub(crate) record: SessionRecord,
    /// Its messages, where the answer carries them.
    pub(crate) messages: Option<Vec<ChatMessage>>,
}

impl SessionView {
    pub(crate) fn to_json(&self) -> Value {
        let r = &self.record;
        let last = self
            .messages
            .iter()
            .flatten()
            .map(|m| m.timestamp_ms)
            .max()
            .unwrap_or(0)
            .max(r.last_message_ms);
        let mut v = json!({
            "id": r.id,
            "userId": r.customer,
            "status": r.status.as_str(),
            "createdAt": iso(r.created_ms),
            "lastMessageAt": iso(last),
        });
        if let Some(messages) = &self.messages {
            v["messages"] = messages.iter().map(ChatMessage::to_json).collect();
        }
        v
    }
}

/// The customer's Matrix user.
pub(crate) fn customer_user(chat: &Chat<'_>, customer: &str) -> Result<OwnedUserId> {
    chat.desk.users.user_id_for(&customer_localpart(customer))
}

/// `GET /session/active`: the customer's open session with its messages.
pub(crate) async fn active(
    chat: &Chat<'_>,
    customer: &Customer,
) -> Result<Option<SessionView>, ChatError> {
    let Some(record) = chat.web.sessions.newest(&customer.id)? else {
        return Ok(None);
    };
    if !record.status.is_open() {
        return Ok(None);
    }
    let user = customer_user(chat, &customer.id)?;
    let record = finish_room(chat, record, &user, customer).await?;
    let messages = Some(load_messages(chat, &record, &user)?);
    Ok(Some(SessionView { record, messages }))
}

/// `POST /session`: a new `pending` session, unless one is open.
pub(crate) async fn create(chat: &Chat<'_>, customer: &Customer) -> Result<SessionView, ChatError> {
    let web = chat.web;
    let user = ensure_user(chat, customer).await?;
    let record = {
        let _held = web.sessions.lock(&customer.id).await;
        if web
            .sessions
            .newest(&customer.id)?
            .is_some_and(|r| r.status.is_open())
        {
            return Err(ChatError::Conflict);
        }
        // Checked last: a refused request costs no token.
        web.creations
            .check(&customer.id)
            .map_err(|e| ChatError::limited(&e))?;
        let now = now_ms();
        let record = SessionRecord {
            id: Uuid::new_v4(),
            customer: customer.id.clone(),
            room_id: None,
            status: SessionStatus::Pending,
            created_ms: now,
            last_message_ms: now,
            updated_ms: now,
            status_pos: 0,
            closed_ms: None,
        };
        let mut batch = Batch::new();
        web.sessions.insert(&mut batch, &record);
        let actor = Actor::Customer { user: &user };
        let target = record.id.to_string();
        chat.desk.support.audit.record(
            &mut batch,
            &actor,
            "webchat.session.create",
            &target,
            json!({}),
        )?;
        web.sessions.write(batch).await?;
        record
    };
    let record = finish_room(chat, record, &user, customer).await?;
    let messages = Some(load_messages(chat, &record, &user)?);
    Ok(SessionView { record, messages })
}

/// `GET /session/:id/messages`: every message, oldest first; closed sessions too.
pub(crate) fn messages(
    chat: &Chat<'_>,
    customer: &Customer,
    id: &Uuid,
) -> Result<Vec<ChatMessage>, ChatError> {
    let record = owned_session(chat, customer, id)?;
    let user = customer_user(chat, &customer.id)?;
    Ok(load_messages(chat, &record, &user)?)
}

/// `GET /sessions`: the customer's sessions, newest first, without their messages.
pub(crate) fn history(chat: &Chat<'_>, customer: &Customer) -> Result<Vec<SessionView>, ChatError> {
    Ok(chat
        .web
        .sessions
        .list(&customer.id, MAX_HISTORY)?
        .into_iter()
        .map(|record| SessionView {
            record,
            messages: None,
        })
        .collect())
}

/// Checks a message's text: the seed's two rules, in characters.
pub(crate) fn check_message(text: &str) -> Result<(), ChatError> {
    if text.trim().is_empty() {
        return Err(ChatError::Invalid {
            field: "message",
            message: "El mensaje no puede estar vacío".into(),
        });
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ChatError::Invalid {
            field: "message",
            message: format!("El mensaje no puede tener más de {MAX_MESSAGE_CHARS} caracteres"),
        });
    }
    Ok(())
}

/// `POST /message`: the customer's message, into their open session's room.
pub(crate) async fn send(
    chat: &Chat<'_>,
    customer: &Customer,
    text: &str,
) -> Result<ChatMessage, ChatError> {
    let web = chat.web;
    let record = match web.sessions.newest(&customer.id)? {
        Some(r) if r.status.is_open() => r,
        _ => return Err(ChatError::NotFound),
    };
    check_message(text)?;
    web.messages
        .check(&customer.id)
        .map_err(|e| ChatError::limited(&e))?;
    let user = customer_user(chat, &customer.id)?;
    let record = finish_room(chat, record, &user, customer).await?;
    let room_id = room_of(&record)?;
    let content = json!({ "msgtype": "m.text", "body": text });
    let raw = serde_json::value::to_raw_value(&content)
        .map_err(|e| Error::internal(format!("message content: {e}")))?;
    let template = EventTemplate::message("m.room.message", raw);
    let event_id = chat.desk.rooms.send(room_id, &user, template, None).await?;
    let pos = chat
        .desk
        .rooms
        .event_pos(&event_id)?
        .ok_or_else(|| Error::internal("a sent event has no position"))?;
    let ts = u64::from(chat.desk.rooms.event(pos)?.pdu.origin_server_ts.get());
    let mut audit = Batch::new();
    let actor = Actor::Customer { user: &user };
    let details = json!({ "event_id": event_id, "chars": text.chars().count() });
    let target = record.id.to_string();
    chat.desk
        .support
        .audit
        .record(&mut audit, &actor, "webchat.message", &target, details)?;
    web.sessions
        .update(&record.id, audit, |r| {
            r.last_message_ms = r.last_message_ms.max(ts);
            true
        })
        .await?;
    Ok(ChatMessage {
        id: message_id(&event_id),
        session_id: record.id,
        message: text.to_owned(),
        sender: Sender::User,
        timestamp_ms: ts,
        pos,
        is_read: false,
    })
}

/// `PATCH /session/:id/close`: closes the session and its conversation. Closing a closed
/// session changes nothing.
pub(crate) async fn close(
    chat: &Chat<'_>,
    customer: &Customer,
    id: &Uuid,
) -> Result<(), ChatError> {
    let record = owned_session(chat, customer, id)?;
    if !record.status.is_open() {
        return Ok(());
    }
    let user = customer_user(chat, &customer.id)?;
    let actor = Actor::Customer { user: &user };
    if let Some(room_id) = &record.room_id {
        let details = json!({ "session": record.id, "by": "customer" });
        actions::close(&chat.desk, room_id, &actor, details).await?;
    }
    let status_pos = chat.stream.head();
    let mut audit = Batch::new();
    let target = record.id.to_string();
    chat.desk.support.audit.record(
        &mut audit,
        &actor,
        "webchat.session.close",
        &target,
        json!({}),
    )?;
    chat.web
        .sessions
        .update(id, audit, |r| close_record(r, status_pos))
        .await?;
    Ok(())
}

/// Marks a record closed (at stream position `pos`); whether that changed it.
pub(crate) fn close_record(r: &mut SessionRecord, pos: u64) -> bool {
    if r.status == SessionStatus::Closed {
        return false;
    }
    r.status = SessionStatus::Closed;
    r.status_pos = r.status_pos.max(pos);
    r.closed_ms = Some(now_ms());
    true
}

/// `PATCH /session/:id/mark-read`: the customer has read every support message; agents see a
/// read receipt on the newest.
pub(crate) async fn mark_read(
    chat: &Chat<'_>,
    customer: &Customer,
    id: &Uuid,
) -> Result<(), ChatError> {
    let record = owned_session(chat, customer, id)?;
    let Some(room_id) = &record.room_id else {
        return Ok(());
    };
    let user = customer_user(chat, &customer.id)?;
    let room = chat.desk.rooms.room(room_id)?;
    let Some((pos, event_id)) = newest_support_message(chat, &room, &user)? else {
        return Ok(());
    };
    if chat.receipts.read_up_to(room.short, &user)? >= pos {
        return Ok(());
    }
    if !room.is_joined(&user) {
        // Left or removed from the room (an administrator deleted it): nothing to mark.
        return Ok(());
    }
    chat.receipts
        .set(&room, &user, ReceiptKind::Read, None, &event_id, pos)
        .await?;
    let mut audit = Batch::new();
    let actor = Actor::Customer { user: &user };
    let details = json!({ "event_id": event_id });
    chat.desk.support.audit.record(
        &mut audit,
        &actor,
        "webchat.session.mark-read",
        &record.id.to_string(),
        details,
    )?;
    chat.web.sessions.write(audit).await?;
    Ok(())
}

/// The session `id`, if it is the customer's: 404 when there is none, 403 when it is another's.
fn owned_session(
    chat: &Chat<'_>,
    customer: &Customer,
    id: &Uuid,
) -> Result<SessionRecord, ChatError> {
    let record = chat.web.sessions.get(id)?.ok_or(ChatError::NotFound)?;
    if record.customer != customer.id {
        return Err(ChatError::Forbidden);
    }
    Ok(record)
}

fn room_of(record: &SessionRecord) -> Result<&RoomId> {
    record
        .room_id
        .as_deref()
        .ok_or_else(|| Error::internal("a session without its room"))
}

/// The customer's Matrix user, created on their first session, with the token's name.
async fn ensure_user(chat: &Chat<'_>, customer: &Customer) -> Result<OwnedUserId> {
    let localpart = customer_localpart(&customer.id);
    let user = chat.desk.users.user_id_for(&localpart)?;
    if chat.desk.users.exists(&user)? {
        return Ok(user);
    }
    let created = chat
        .desk
        .users
        .create(NewAccount {
            localpart: &localpart,
            password: None,
            admin: false,
            displayname: Some(display_name(customer)),
        })
        .await;
    match created {
        Ok(user) => Ok(user),
        // Two first requests at once: the other made it.
        Err(_) if chat.desk.users.exists(&user)? => Ok(user),
        Err(e) => Err(e),
    }
}

fn display_name(customer: &Customer) -> String {
    customer
        .name
        .clone()
        .unwrap_or_else(|| format!("Web {}", customer.id.chars().take(40).collect::<String>()))
}

/// Where the room of session `id` is recorded before it is made.
fn intent_key(id: &Uuid) -> Vec<u8> {
    Key::new().str("webchat").str(&id.to_string()).into_vec()
}

/// Gives a session its conversation room if it has none yet: the desk opens the conversation
/// (channel `web`, assigned as any other), the customer joins, the bot greets. Every step is
/// idempotent, so a request that finds a half-made session finishes it.
async fn finish_room(
    chat: &Chat<'_>,
    record: SessionRecord,
    user: &UserId,
    customer: &Customer,
) -> Result<SessionRecord> {
    if record.room_id.is_some() {
        return Ok(record);
    }
    let desk = &chat.desk;
    let actor = Actor::Customer { user };
    let name = display_name(customer);
    let content = Conversation {
        channel: Channel::Web,
        contact: Contact {
            name: Some(name.clone()),
            id: Some(customer.id.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let new = NewConversation {
        content,
        name: Some(format!("Web chat: {name}")),
        participants: vec![user.to_owned()],
        is_direct: true,
        intent: Some(intent_key(&record.id)),
    };
    let (room_id, content) = actions::create_conversation(desk, new, &actor).await?;
    let profile = MemberProfile {
        displayname: Some(name),
        avatar_url: None,
    };
    desk.rooms.join(&room_id, user, profile, None).await?;
    if let Some(agent) = &content.assignee {
        actions::bring_in_agent(desk, &room_id, agent, &actor).await?;
    }
    let greeting = &desk.config().greeting;
    if !greeting.is_empty() {
        let txn = Txn::new(WEBCHAT_DEVICE, format!("{}:greet", record.id));
        say(desk, &room_id, greeting, false, &[], Some(txn)).await?;
    }
    let id = record.id;
    let updated = chat
        .web
        .sessions
        .update(&id, Batch::new(), |r| set_room(r, &room_id))
        .await?;
    updated.ok_or_else(|| Error::internal("a session vanished"))
}

fn set_room(r: &mut SessionRecord, room_id: &OwnedRoomId) -> bool {
    if r.room_id.is_some() {
        return false;
    }
    r.room_id = Some(room_id.clone());
    true
}

/// The session's messages, oldest first (by time, then arrival).
pub(crate) fn load_messages(
    chat: &Chat<'_>,
    record: &SessionRecord,
    user: &UserId,
) -> Result<Vec<ChatMessage>> {
    let Some(room_id) = &record.room_id else {
        return Ok(Vec::new());
    };
    let rooms = chat.desk.rooms;
    let room = rooms.room(room_id)?;
    let marks = read_marks(chat, &room, user)?;
    let positions =
        rooms.timeline_positions(room.short, u64::MAX, Direction::Backward, MAX_EVENTS_READ)?;
    let mut messages = Vec::new();
    // Each message's Matrix sender, and the newest edit of each, by message id: an edit counts
    // when its sender wrote the message.
    let mut senders = HashMap::new();
    let mut edits = HashMap::new();
    for pos in positions.into_iter().rev() {
        let event = rooms.event(pos)?;
        if let Some(seen) = visible(&event.pdu, user) {
            let is_read = marks.is_read(seen.0, pos);
            let message = ChatMessage::of(&event.pdu, pos, record.id, seen, is_read);
            senders.insert(message.id, event.pdu.sender.clone());
            messages.push(message);
        } else if let Some((target, text)) = edit(&event.pdu) {
            edits.insert(message_id(&target), (event.pdu.sender.clone(), text));
        }
    }
    for message in &mut messages {
        if let Some((editor, text)) = edits.remove(&message.id)
            && senders.get(&message.id) == Some(&editor)
        {
            message.message = text;
        }
    }
    messages.sort_by_key(|m| (m.timestamp_ms, m.pos));
    Ok(messages)
}

/// The message an edit at `pos` changes, with its new text (its id and time stay the
/// original's, so the widget replaces it), if the customer sees the original and its sender
/// made the edit.
pub(crate) fn edited_message(
    chat: &Chat<'_>,
    pdu: &crate::events::Pdu,
    pos: u64,
    session: Uuid,
    user: &UserId,
) -> Result<Option<ChatMessage>> {
    let Some((target, text)) = edit(pdu) else {
        return Ok(None);
    };
    let rooms = chat.desk.rooms;
    let Some(original_pos) = rooms.event_pos(&target)? else {
        return Ok(None);
    };
    let original = rooms.event(original_pos)?;
    if original.pdu.sender != pdu.sender || original.pdu.room_id != pdu.room_id {
        return Ok(None);
    }
    let Some((sender, _)) = visible(&original.pdu, user) else {
        return Ok(None);
    };
    // At the edit's position (a frame's cursor), with the original's id and time.
    Ok(Some(ChatMessage::of(
        &original.pdu,
        pos,
        session,
        (sender, text),
        false,
    )))
}

/// How far the customer and support have read the room.
pub(crate) fn read_marks(chat: &Chat<'_>, room: &RoomMeta, user: &UserId) -> Result<ReadMarks> {
    let customer = chat.receipts.read_up_to(room.short, user)?;
    let mut support = 0;
    for member in room.joined_members() {
        if member != user {
            support = support.max(chat.receipts.read_up_to(room.short, &member)?);
        }
    }
    Ok(ReadMarks { customer, support })
}

/// The newest message support wrote in the room: its position and event id.
fn newest_support_message(
    chat: &Chat<'_>,
    room: &RoomMeta,
    user: &UserId,
) -> Result<Option<(u64, ruma::OwnedEventId)>> {
    let rooms = chat.desk.rooms;
    for pos in
        rooms.timeline_positions(room.short, u64::MAX, Direction::Backward, MAX_EVENTS_READ)?
    {
        let event = rooms.event(pos)?;
        if let Some((Sender::Support, _)) = visible(&event.pdu, user) {
            return Ok(Some((pos, event.pdu.event_id.clone())));
        }
    }
    Ok(None)
}

/// The id of the customer's newest message at or before `upto`: what an agent's receipt at
/// `upto` marks read.
pub(crate) fn newest_customer_message(
    chat: &Chat<'_>,
    room: &RoomMeta,
    user: &UserId,
    upto: u64,
) -> Result<Option<Uuid>> {
    let rooms = chat.desk.rooms;
    for pos in rooms.timeline_positions(room.short, upto, Direction::Backward, MAX_EVENTS_READ)? {
        let event = rooms.event(pos)?;
        if let Some((Sender::User, _)) = visible(&event.pdu, user) {
            return Ok(Some(message_id(&event.pdu.event_id)));
        }
    }
    Ok(None)
}
