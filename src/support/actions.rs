//! Changes to conversations, shared by the bot's commands and the agent API, so both make
//! exactly the same state events, index updates and audit entries (tickets: [`super::escalation`]).

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::room::member::MembershipState,
};
use serde_json::{Value, json};

use super::{
    CONVERSATION_EVENT, Conversation, ConversationRecord,
    changes::ChangeGuard,
    conversation::MAX_LABELS,
    desk::{self, DeskRoom, Purpose},
    now_ms, trust,
};
use crate::{
    error::{Error, Result},
    events::EventTemplate,
    rooms::{MemberProfile, MembershipChange, Txn},
    services::Services,
    storage::Batch,
};

/// The device name the bot's idempotent sends are recorded under.
const BOT_DEVICE: &str = "io.charla.support";

/// Who asks for a change and how: recorded in the audit log.
#[derive(Debug, Clone)]
pub struct Actor<'a> {
    pub user: &'a UserId,
    /// `api`, `command`, or `bot` (automatic; not audited).
    pub via: &'static str,
    /// A key that makes the bot's sends idempotent when it replays the event that caused them.
    pub txn: Option<String>,
}

impl Actor<'_> {
    /// The txn id of one of the sends this actor's request makes, `tag` telling them apart.
    pub fn txn(&self, tag: &str) -> Option<Txn> {
        self.txn.as_ref().map(|t| Txn {
            device: BOT_DEVICE.into(),
            txn_id: format!("{t}:{tag}").into(),
        })
    }
}

/// The room's conversation as the desk last set it, with that state event's position; `None`
/// if the room is not a conversation. State others sent is not the desk's ([`trust`]).
pub fn current(s: &Services, room_id: &RoomId) -> Result<Option<(Conversation, u64)>> {
    trust::conversation(s, room_id)
}

/// A user as a conversation's contact: their display name and id.
pub fn contact_of(s: &Services, user: &UserId) -> Result<super::conversation::Contact> {
    Ok(super::conversation::Contact {
        name: s.users.get(user)?.and_then(|r| r.displayname),
        id: Some(user.to_string()),
        ..Default::default()
    })
}

/// Applies `edit` to the conversation and sends the result as the bot's state event; indexes
/// it at once (so the next listing shows it) and records it in the audit log. Returns the new
/// content; an edit that changes nothing sends nothing.
pub async fn update(
    s: &Services,
    room_id: &RoomId,
    actor: &Actor<'_>,
    action: &str,
    details: Value,
    edit: impl FnOnce(&mut Conversation) -> Result<()>,
) -> Result<Conversation> {
    let held = s.support.changes.lock().await;
    let (old, _) = current(s, room_id)?.ok_or_else(|| not_a_conversation(room_id))?;
    let mut new = old.clone();
    edit(&mut new)?;
    if new.labels.len() > MAX_LABELS {
        return Err(Error::invalid_param(format!(
            "a conversation has at most {MAX_LABELS} labels"
        )));
    }
    if new == old {
        return Ok(new);
    }
    let template = EventTemplate::state_json(CONVERSATION_EVENT, "", &new.to_json());
    let event_id = s
        .rooms
        .send(room_id, &s.support.bot, template, actor.txn(action))
        .await?;
    index_state(s, &held, room_id, &event_id, &new).await?;
    if actor.via != "bot" {
        let mut batch = Batch::new();
        s.support.audit.record(
            &mut batch,
            actor.user.as_str(),
            action,
            room_id.as_str(),
            actor.via,
            details,
        )?;
        s.store.write_durable(batch).await?;
    }
    Ok(new)
}

/// Indexes a conversation state event the desk sent ([`trust::is_desk`]; the caller checked),
/// bounded as the desk keeps it. Under the change lock, which the caller holds.
pub async fn index_state(
    s: &Services,
    held: &ChangeGuard<'_>,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    content: &Conversation,
) -> Result<()> {
    let Some(pos) = s.rooms.event_pos(event_id)? else {
        return Ok(());
    };
    let ts = u64::from(s.rooms.event(pos)?.pdu.origin_server_ts.get());
    let old = s.support.index.get(room_id.as_str())?;
    if old.as_ref().is_some_and(|o| o.state_pos >= pos) {
        return Ok(());
    }
    let mut new = old.clone().unwrap_or_else(|| ConversationRecord {
        room_id: room_id.to_string(),
        created_ts: ts,
        ..Default::default()
    });
    new.content = content.clone().bounded();
    new.state_pos = pos;
    new.last_activity_ts = new.last_activity_ts.max(ts);
    let mut batch = Batch::new();
    s.support.index.put(held, &mut batch, old.as_ref(), &new);
    write_index(s, batch)
}

/// Writes an index change without waiting for the disk. The index is derived from the room
/// stream: a change lost in a crash is rebuilt when the bot replays the stream from its
/// cursor, and the cursor can only be durable past this change if the change is too (the
/// store's log keeps write order). Readers see it at once either way. Waiting here cost the
/// bot one disk sync per message and per state change, and every conversation queued behind.
fn write_index(s: &Services, batch: Batch) -> Result<()> {
    let _not_awaited = s.store.write(batch)?;
    Ok(())
}

/// Changes the record's activity fields (not its content) under the change lock, once per
/// stream position: a replayed position changes nothing.
pub async fn update_record(
    s: &Services,
    room_id: &RoomId,
    pos: u64,
    edit: impl FnOnce(&mut ConversationRecord),
) -> Result<Option<ConversationRecord>> {
    let held = s.support.changes.lock().await;
    let Some(old) = s.support.index.get(room_id.as_str())? else {
        return Ok(None);
    };
    if old.applied_pos >= pos {
        return Ok(Some(old));
    }
    let mut new = old.clone();
    edit(&mut new);
    new.applied_pos = pos;
    let mut batch = Batch::new();
    s.support.index.put(&held, &mut batch, Some(&old), &new);
    write_index(s, batch)?;
    Ok(Some(new))
}

/// Assigns (or, with `None`, unassigns) the conversation, invites the agent and tells them.
pub async fn assign(
    s: &Services,
    room_id: &RoomId,
    agent: Option<&UserId>,
    actor: &Actor<'_>,
) -> Result<Conversation> {
    if let Some(agent) = agent
        && s.support.capacity(agent).is_none()
        && s.support.role(agent) != super::Role::Admin
    {
        return Err(Error::invalid_param(format!("{agent} is not an agent")));
    }
    let action = if agent.is_some() {
        "conversation.assign"
    } else {
        "conversation.unassign"
    };
    let details = json!({ "assignee": agent });
    let new = update(s, room_id, actor, action, details, |c| {
        c.assignee = agent.map(|a| a.to_string());
        if let Some(agent) = agent {
            s.support.mark_assigned(agent);
        }
        Ok(())
    })
    .await?;
    if let Some(agent) = agent {
        bring_in_agent(s, room_id, agent, actor).await?;
    }
    Ok(new)
}

/// The next agent in turn who is online and under capacity. Racy unless the caller holds
/// `changes` (loads only change under it): [`assign_next`] and [`open`] decide under it.
pub fn next_available(s: &Services) -> Result<Option<OwnedUserId>> {
    for agent in s.support.agents_in_turn() {
        let capacity = s.support.capacity(&agent).unwrap_or(0) as usize;
        if s.presence.is_online(&agent) && s.support.index.load(agent.as_str())? < capacity {
            return Ok(Some(agent));
        }
    }
    Ok(None)
}

/// Assigns a waiting conversation to the next available agent, deciding under the change lock
/// so that rooms handled at once never push an agent past capacity. Returns the agent, or
/// `None` when nobody is available or the conversation no longer waits.
pub async fn assign_next(
    s: &Services,
    room_id: &RoomId,
    actor: &Actor<'_>,
) -> Result<Option<OwnedUserId>> {
    let mut chosen = None;
    let details = json!({ "automatic": true });
    update(s, room_id, actor, "conversation.assign", details, |c| {
        if c.assignee.is_none() && c.is_active() {
            chosen = next_available(s)?;
            c.assignee = chosen.as_ref().map(|a| a.to_string());
        }
        if let Some(agent) = &chosen {
            s.support.mark_assigned(agent);
        }
        Ok(())
    })
    .await?;
    if let Some(agent) = &chosen {
        bring_in_agent(s, room_id, agent, actor).await?;
    }
    Ok(chosen)
}

/// After an assignment: invites the agent and tells them.
pub async fn bring_in_agent(
    s: &Services,
    room_id: &RoomId,
    agent: &UserId,
    actor: &Actor<'_>,
) -> Result<()> {
    {
        let room = s.rooms.room(room_id)?;
        if !matches!(
            s.rooms.membership(&room, agent)?,
            Some(MembershipState::Join | MembershipState::Invite)
        ) {
            s.rooms
                .change_membership(
                    room_id,
                    MembershipChange {
                        sender: &s.support.bot,
                        target: agent,
                        membership: MembershipState::Invite,
                        profile: MemberProfile::default(),
                        reason: Some("Assigned to you"),
                        is_direct: None,
                    },
                )
                .await?;
        }
        // The conversation's private notes are theirs to read and write too.
        if let Some(notes_room) = super::notes::existing_room(s, room_id)? {
            super::notes::invite(s, &notes_room, agent).await?;
        }
        say(
            s,
            room_id,
            &format!("Conversation assigned to {agent}."),
            true,
            &[agent],
            actor.txn("assigned-notice"),
        )
        .await?;
    }
    Ok(())
}

/// Sends a message as the bot. `internal` messages are for agents only: the bridge never
/// forwards them (contract.md).
pub async fn say(
    s: &Services,
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
    say_content(s, room_id, &content, txn).await
}

/// The content of a message of the bot (see [`say`]), for callers that add fields to it.
pub fn message(text: &str, internal: bool) -> Value {
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
pub async fn say_content(
    s: &Services,
    room_id: &RoomId,
    content: &Value,
    txn: Option<Txn>,
) -> Result<OwnedEventId> {
    let raw = serde_json::value::to_raw_value(content)
        .map_err(|e| Error::internal(format!("message content: {e}")))?;
    let template = EventTemplate::message("m.room.message", raw);
    s.rooms.send(room_id, &s.support.bot, template, txn).await
}

pub fn not_a_conversation(room_id: &RoomId) -> Error {
    Error::not_found(format!("{room_id} is not a support conversation"))
}

/// Makes a room a conversation: sends the first `io.charla.conversation` and indexes it.
/// Without an assignee, the next available agent is chosen in that same state event (under
/// the change lock, like [`assign_next`]), so the conversation is never seen unassigned while
/// someone is free. Returns the agent chosen; the caller brings them in.
pub async fn open(
    s: &Services,
    room_id: &RoomId,
    mut content: Conversation,
    actor: &Actor<'_>,
) -> Result<Option<OwnedUserId>> {
    let held = s.support.changes.lock().await;
    if current(s, room_id)?.is_some() {
        return Ok(None);
    }
    let chosen = match content.assignee {
        Some(_) => None,
        None => next_available(s)?,
    };
    if let Some(agent) = &chosen {
        content.assignee = Some(agent.to_string());
        s.support.mark_assigned(agent);
    }
    let template = EventTemplate::state_json(CONVERSATION_EVENT, "", &content.to_json());
    let event_id = s
        .rooms
        .send(room_id, &s.support.bot, template, actor.txn("open"))
        .await?;
    index_state(s, &held, room_id, &event_id, &content).await?;
    Ok(chosen)
}

/// A conversation the desk opens in a room of its own ([`desk`]).
pub struct NewConversation {
    pub content: Conversation,
    pub name: Option<String>,
    pub participants: Vec<OwnedUserId>,
    /// A direct chat with its one customer: their client lists it with their direct chats.
    pub is_direct: bool,
    /// For an opening a replay may repeat: the key in the desk's durable state under which
    /// the room's id is recorded before the room is made, so the replay finds the room.
    pub intent: Option<Vec<u8>>,
}

/// Opens a conversation in a new desk-owned room: the bot creates it with the conversation's
/// state, invites the participants, and indexes it; without an assignee the next available
/// agent is chosen in that same state (under the change lock, like [`open`]). Audited unless
/// the bot opened it on its own. Returns the room and its conversation; the caller brings the
/// assignee in ([`bring_in_agent`]). With an `intent` whose room exists (a replay), nothing is
/// created again: the room and its conversation are returned as they are.
pub async fn create_conversation(
    s: &Services,
    new: NewConversation,
    actor: &Actor<'_>,
) -> Result<(OwnedRoomId, Conversation)> {
    let held = s.support.changes.lock().await;
    let room_id = match &new.intent {
        Some(key) => desk::intended_room(s, &held, key).await?,
        None => s.rooms.new_room_id()?,
    };
    let mut content = new.content.bounded();
    if !s.rooms.exists(&room_id)? {
        if content.assignee.is_none()
            && content.is_active()
            && let Some(agent) = next_available(s)?
        {
            content.assignee = Some(agent.to_string());
            s.support.mark_assigned(&agent);
        }
        let room = DeskRoom {
            purpose: Purpose::Conversation,
            room_id: room_id.clone(),
            name: new.name,
            topic: None,
            invite: new.participants.clone(),
            is_direct: new.is_direct,
            initial_state: vec![(CONVERSATION_EVENT.into(), String::new(), content.to_json())],
        };
        desk::create_room(s, room).await?;
        if actor.via != "bot" {
            let mut batch = Batch::new();
            s.support.audit.record(
                &mut batch,
                actor.user.as_str(),
                "conversation.create",
                room_id.as_str(),
                actor.via,
                json!({ "participants": new.participants }),
            )?;
            s.store.write_durable(batch).await?;
        }
    }
    let event_id = match current(s, &room_id)? {
        Some((current, pos)) => {
            content = current;
            s.rooms.event(pos)?.pdu.event_id.clone()
        }
        // A creation a crash cut short left the room without its conversation: the bot, its
        // creator, sets it now (the queue gives it an agent).
        None => {
            let template = EventTemplate::state_json(CONVERSATION_EVENT, "", &content.to_json());
            s.rooms
                .send(&room_id, &s.support.bot, template, actor.txn("open"))
                .await?
        }
    };
    index_state(s, &held, &room_id, &event_id, &content).await?;
    Ok((room_id, content))
}

/// Status changes keep the resolution time consistent.
pub fn set_status(c: &mut Conversation, status: super::conversation::Status) {
    if status == super::conversation::Status::Closed
        && c.status != super::conversation::Status::Closed
    {
        c.resolved_ts = Some(now_ms());
    } else if status != super::conversation::Status::Closed {
        c.resolved_ts = None;
    }
    c.status = status;
}
