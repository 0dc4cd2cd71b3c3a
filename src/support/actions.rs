//! Changes to conversations, shared by the bot's commands and the agent API, so both make
//! exactly the same state events, index updates and audit entries (tickets: [`super::escalation`]).
//!
//! Every change reads the conversation, changes it and writes it back under the desk's change
//! lock ([`super::changes`]), and is sent as the bot's `io.charla.conversation` state event,
//! indexed at once (the next listing shows it) and audited unless the bot made it on its own.

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::room::member::MembershipState,
};
use serde_json::{Value, json};

use super::{
    CONVERSATION_EVENT, Conversation, ConversationRecord, Desk, Role,
    actor::Actor,
    agents,
    changes::ChangeGuard,
    conversation::{Contact, MAX_LABELS, Status},
    notes,
    owned_rooms::{self, OwnedRoom, Purpose},
    say::say,
    trust,
};
use crate::{
    error::{Error, Result},
    events::EventTemplate,
    rooms::{MemberProfile, MembershipChange, Txn},
    storage::Batch,
};

/// The room's conversation as the desk last set it, with that state event's position; `None`
/// if the room is not a conversation. State others sent is not the desk's ([`trust`]).
pub(crate) fn current(desk: &Desk<'_>, room_id: &RoomId) -> Result<Option<(Conversation, u64)>> {
    trust::conversation(desk, room_id)
}

/// A user as a conversation's contact: their display name and id.
pub(crate) fn contact_of(desk: &Desk<'_>, user: &UserId) -> Result<Contact> {
    Ok(Contact {
        name: desk.users.get(user)?.and_then(|r| r.displayname),
        id: Some(user.to_string()),
        ..Default::default()
    })
}

pub(crate) fn not_a_conversation(room_id: &RoomId) -> Error {
    Error::not_found(format!("{room_id} is not a support conversation"))
}

/// Applies `edit` to the conversation and sends the result as the bot's state event; indexes
/// it at once (so the next listing shows it) and records it in the audit log. Returns the new
/// content; an edit that changes nothing sends nothing. A conversation keeps at most
/// [`MAX_LABELS`] labels: an edit that would leave more is refused and changes nothing.
pub(crate) async fn update(
    desk: &Desk<'_>,
    room_id: &RoomId,
    actor: &Actor<'_>,
    action: &str,
    details: Value,
    edit: impl FnOnce(&mut Conversation) -> Result<()>,
) -> Result<Conversation> {
    let held = desk.support.changes.lock().await;
    let change = Change {
        room_id,
        actor,
        action,
        details,
    };
    update_locked(desk, &held, change, edit).await
}

/// A change to a conversation, as [`update`] makes it.
struct Change<'a> {
    room_id: &'a RoomId,
    actor: &'a Actor<'a>,
    /// What the audit log calls it.
    action: &'a str,
    details: Value,
}

/// [`update`], under the change lock the caller holds.
async fn update_locked(
    desk: &Desk<'_>,
    held: &ChangeGuard<'_>,
    change: Change<'_>,
    edit: impl FnOnce(&mut Conversation) -> Result<()>,
) -> Result<Conversation> {
    let Change {
        room_id,
        actor,
        action,
        details,
    } = change;
    let (old, _) = current(desk, room_id)?.ok_or_else(|| not_a_conversation(room_id))?;
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
    let event_id = send_state(desk, room_id, &new, actor.txn(action)).await?;
    index_state(desk, held, room_id, &event_id, &new).await?;
    desk.support
        .audit
        .write(actor, action, room_id.as_str(), details)
        .await?;
    Ok(new)
}

/// Sends the conversation as the bot's `io.charla.conversation` state event.
async fn send_state(
    desk: &Desk<'_>,
    room_id: &RoomId,
    content: &Conversation,
    txn: Option<Txn>,
) -> Result<OwnedEventId> {
    let template = EventTemplate::state_json(CONVERSATION_EVENT, "", &content.to_json());
    desk.rooms.send(room_id, desk.bot(), template, txn).await
}

/// Indexes a conversation state event the desk sent ([`trust::is_desk`]; the caller checked),
/// bounded as the desk keeps it. Under the change lock, which the caller holds.
pub(crate) async fn index_state(
    desk: &Desk<'_>,
    held: &ChangeGuard<'_>,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    content: &Conversation,
) -> Result<()> {
    let Some(pos) = desk.rooms.event_pos(event_id)? else {
        return Ok(());
    };
    let ts = u64::from(desk.rooms.event(pos)?.pdu.origin_server_ts.get());
    let old = desk.support.index.get(room_id)?;
    if old.as_ref().is_some_and(|o| o.state_pos >= pos) {
        return Ok(());
    }
    let mut new = old
        .clone()
        .unwrap_or_else(|| ConversationRecord::new(room_id.to_owned(), ts));
    new.content = content.clone().bounded();
    new.state_pos = pos;
    new.last_activity_ts = new.last_activity_ts.max(ts);
    let mut batch = Batch::new();
    desk.support.index.put(held, &mut batch, old.as_ref(), &new);
    write_index(desk, batch)
}

/// Writes an index change without waiting for the disk. The index is derived from the room
/// stream: a change lost in a crash is rebuilt when the bot replays the stream from its
/// cursor, and the cursor can only be durable past this change if the change is too (the
/// store's log keeps write order). Readers see it at once either way. Waiting here cost the
/// bot one disk sync per message and per state change, and every conversation queued behind.
fn write_index(desk: &Desk<'_>, batch: Batch) -> Result<()> {
    let _not_awaited = desk.store.write(batch)?;
    Ok(())
}

/// Changes the record's activity fields (not its content) under the change lock, once per
/// stream position: a replayed position changes nothing.
pub(crate) async fn update_record(
    desk: &Desk<'_>,
    room_id: &RoomId,
    pos: u64,
    edit: impl FnOnce(&mut ConversationRecord),
) -> Result<Option<ConversationRecord>> {
    let held = desk.support.changes.lock().await;
    let Some(old) = desk.support.index.get(room_id)? else {
        return Ok(None);
    };
    if old.applied_pos >= pos {
        return Ok(Some(old));
    }
    let mut new = old.clone();
    edit(&mut new);
    new.applied_pos = pos;
    let mut batch = Batch::new();
    desk.support.index.put(&held, &mut batch, Some(&old), &new);
    write_index(desk, batch)?;
    Ok(Some(new))
}

/// Assigns (or, with `None`, unassigns) the conversation, invites the agent and tells them.
/// Only agents and support admins may be assigned.
pub(crate) async fn assign(
    desk: &Desk<'_>,
    room_id: &RoomId,
    agent: Option<&UserId>,
    actor: &Actor<'_>,
) -> Result<Conversation> {
    if let Some(agent) = agent
        && desk.support.role(agent) == Role::None
    {
        return Err(Error::invalid_param(format!("{agent} is not an agent")));
    }
    let action = if agent.is_some() {
        "conversation.assign"
    } else {
        "conversation.unassign"
    };
    let details = json!({ "assignee": agent });
    let new = update(desk, room_id, actor, action, details, |c| {
        c.assignee = agent.map(ToOwned::to_owned);
        if let Some(agent) = agent {
            desk.support.turns.mark(agent);
        }
        Ok(())
    })
    .await?;
    if let Some(agent) = agent {
        bring_in_agent(desk, room_id, agent, actor).await?;
    }
    Ok(new)
}

/// Assigns a waiting conversation to the next available agent, deciding under the change lock
/// so that rooms handled at once never push an agent past capacity. Returns the agent, or
/// `None` when nobody is available or the conversation no longer waits.
pub(crate) async fn assign_next(
    desk: &Desk<'_>,
    room_id: &RoomId,
    actor: &Actor<'_>,
) -> Result<Option<OwnedUserId>> {
    let held = desk.support.changes.lock().await;
    let change = Change {
        room_id,
        actor,
        action: "conversation.assign",
        details: json!({ "automatic": true }),
    };
    let mut chosen = None;
    update_locked(desk, &held, change, |c| {
        if c.assignee.is_none() {
            choose_agent(desk, &held, c)?;
            chosen.clone_from(&c.assignee);
        }
        Ok(())
    })
    .await?;
    drop(held);
    if let Some(agent) = &chosen {
        bring_in_agent(desk, room_id, agent, actor).await?;
    }
    Ok(chosen)
}

/// Gives an unassigned, active conversation to the next available agent, if any: in the
/// content about to be sent, so it is never seen unassigned while someone is free. Under the
/// change lock, which the caller holds.
fn choose_agent(desk: &Desk<'_>, held: &ChangeGuard<'_>, content: &mut Conversation) -> Result<()> {
    if content.assignee.is_none()
        && content.is_active()
        && let Some(agent) = agents::next_available(desk, held)?
    {
        desk.support.turns.mark(&agent);
        content.assignee = Some(agent);
    }
    Ok(())
}

/// After an assignment: invites the agent (to the conversation and its notes) and tells them.
pub(crate) async fn bring_in_agent(
    desk: &Desk<'_>,
    room_id: &RoomId,
    agent: &UserId,
    actor: &Actor<'_>,
) -> Result<()> {
    let room = desk.rooms.room(room_id)?;
    if !matches!(
        desk.rooms.membership(&room, agent)?,
        Some(MembershipState::Join | MembershipState::Invite)
    ) {
        let invite = MembershipChange {
            sender: desk.bot(),
            target: agent,
            membership: MembershipState::Invite,
            profile: MemberProfile::default(),
            reason: Some("Assigned to you"),
            is_direct: None,
        };
        desk.rooms.change_membership(room_id, invite).await?;
    }
    // The conversation's private notes are theirs to read and write too.
    if let Some(notes_room) = notes::existing_room(desk, room_id)? {
        notes::invite(desk, &notes_room, agent).await?;
    }
    let notice = format!("Conversation assigned to {agent}.");
    say(
        desk,
        room_id,
        &notice,
        true,
        &[agent],
        actor.txn("assigned-notice"),
    )
    .await?;
    Ok(())
}

/// Makes a room a conversation: sends the first `io.charla.conversation` and indexes it.
/// Without an assignee, the next available agent is chosen in that same state event (under
/// the change lock, like [`assign_next`]), so the conversation is never seen unassigned while
/// someone is free. Returns the agent chosen; the caller brings them in.
pub(crate) async fn open(
    desk: &Desk<'_>,
    room_id: &RoomId,
    content: Conversation,
    actor: &Actor<'_>,
) -> Result<Option<OwnedUserId>> {
    let held = desk.support.changes.lock().await;
    if current(desk, room_id)?.is_some() {
        return Ok(None);
    }
    let mut content = content;
    let had_assignee = content.assignee.is_some();
    choose_agent(desk, &held, &mut content)?;
    let event_id = send_state(desk, room_id, &content, actor.txn("open")).await?;
    index_state(desk, &held, room_id, &event_id, &content).await?;
    Ok(if had_assignee { None } else { content.assignee })
}

/// A conversation the desk opens in a room of its own ([`owned_rooms`]).
pub(crate) struct NewConversation {
    pub(crate) content: Conversation,
    pub(crate) name: Option<String>,
    pub(crate) participants: Vec<OwnedUserId>,
    /// A direct chat with its one customer: their client lists it with their direct chats.
    pub(crate) is_direct: bool,
    /// For an opening a replay may repeat: the key in the desk's durable state under which
    /// the room's id is recorded before the room is made, so the replay finds the room.
    pub(crate) intent: Option<Vec<u8>>,
}

/// Opens a conversation in a new desk-owned room: the bot creates it with the conversation's
/// state, invites the participants, and indexes it; without an assignee the next available
/// agent is chosen in that same state (under the change lock, like [`open`]). Audited unless
/// the bot opened it on its own. Returns the room and its conversation; the caller brings the
/// assignee in ([`bring_in_agent`]). With an `intent` whose room exists (a replay), nothing is
/// created again: the room and its conversation are returned as they are.
pub(crate) async fn create_conversation(
    desk: &Desk<'_>,
    mut new: NewConversation,
    actor: &Actor<'_>,
) -> Result<(OwnedRoomId, Conversation)> {
    let held = desk.support.changes.lock().await;
    let room_id = match &new.intent {
        Some(key) => owned_rooms::intended_room(desk, &held, key).await?,
        None => desk.rooms.new_room_id()?,
    };
    let mut content = std::mem::take(&mut new.content).bounded();
    if !desk.rooms.exists(&room_id)? {
        choose_agent(desk, &held, &mut content)?;
        create_conversation_room(desk, &room_id, new, &content, actor).await?;
    }
    let event_id = match current(desk, &room_id)? {
        Some((current, pos)) => {
            content = current;
            desk.rooms.event(pos)?.pdu.event_id.clone()
        }
        // A creation a crash cut short left the room without its conversation: the bot, its
        // creator, sets it now (the queue gives it an agent).
        None => send_state(desk, &room_id, &content, actor.txn("open")).await?,
    };
    index_state(desk, &held, &room_id, &event_id, &content).await?;
    Ok((room_id, content))
}

/// Creates the desk-owned room of a new conversation with its state (`content`, not the one
/// in `new`), and audits it.
async fn create_conversation_room(
    desk: &Desk<'_>,
    room_id: &RoomId,
    new: NewConversation,
    content: &Conversation,
    actor: &Actor<'_>,
) -> Result<()> {
    let details = json!({ "participants": new.participants });
    let room = OwnedRoom {
        purpose: Purpose::Conversation,
        room_id: room_id.to_owned(),
        name: new.name,
        topic: None,
        invite: new.participants,
        is_direct: new.is_direct,
        initial_state: vec![(CONVERSATION_EVENT.into(), String::new(), content.to_json())],
    };
    owned_rooms::create_room(desk, room).await?;
    desk.support
        .audit
        .write(actor, "conversation.create", room_id.as_str(), details)
        .await
}

/// Closes the conversation (audited as `conversation.close` with `details`); closing a closed
/// one changes nothing.
pub(crate) async fn close(
    desk: &Desk<'_>,
    room_id: &RoomId,
    actor: &Actor<'_>,
    details: Value,
) -> Result<Conversation> {
    update(desk, room_id, actor, "conversation.close", details, |c| {
        set_status(c, Status::Closed);
        Ok(())
    })
    .await
}

/// Status changes keep the resolution time consistent.
pub(crate) fn set_status(c: &mut Conversation, status: Status) {
    if status == Status::Closed && c.status != Status::Closed {
        c.resolved_ts = Some(super::now_ms());
    } else if status != Status::Closed {
        c.resolved_ts = None;
    }
    c.status = status;
}

#[cfg(test)]
mod tests;
