//! What the bot does with one event of the stream.

use ruma::{
    RoomId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::json;

use super::{commands, faq, hours, invite};
use crate::{
    error::Result,
    events::Pdu,
    rooms::membership_of,
    support::{
        CONVERSATION_EVENT, Conversation, ConversationRecord, Desk, actions, actor::Actor,
        conversation::Status, say::say, trust,
    },
};

/// Whether the bot may have something to do with an event: cheap, so the stream is read fast
/// and only these events go to a room's lane.
pub(crate) fn concerns(desk: &Desk<'_>, pdu: &Pdu) -> bool {
    match &pdu.kind {
        TimelineEventType::RoomMember => is_invite_of_bot(desk, pdu),
        TimelineEventType::RoomMessage => true,
        _ => is_conversation_state(pdu),
    }
}

fn is_invite_of_bot(desk: &Desk<'_>, pdu: &Pdu) -> bool {
    pdu.state_key.as_deref() == Some(desk.bot().as_str())
        && membership_of(pdu) == Some(MembershipState::Invite)
}

fn is_conversation_state(pdu: &Pdu) -> bool {
    // Checked on the state key first: most events are not state and need no string.
    pdu.state_key.as_deref() == Some("") && pdu.kind.to_string() == CONVERSATION_EVENT
}

/// Handles the event at `pos`; returns whether the queue should be looked at.
pub(crate) async fn event(desk: &Desk<'_>, pos: u64, pdu: &Pdu) -> Result<bool> {
    match &pdu.kind {
        TimelineEventType::RoomMember if is_invite_of_bot(desk, pdu) => {
            invite::invited(desk, pdu, pos).await
        }
        TimelineEventType::RoomMessage => message(desk, pdu, pos).await,
        _ if is_conversation_state(pdu) => conversation_state(desk, pdu).await,
        _ => Ok(false),
    }
}

/// A change of a conversation's state: indexed if the desk made it.
async fn conversation_state(desk: &Desk<'_>, pdu: &Pdu) -> Result<bool> {
    // Power in a room is no say on the desk: only the desk's own changes count.
    if !trust::is_desk(desk, &pdu.sender)? {
        tracing::debug!(room = %pdu.room_id, sender = %pdu.sender,
            "support bot: conversation state not from the desk, ignored");
        return Ok(false);
    }
    let content = Conversation::from_str_lenient(pdu.content.get()).bounded();
    let held = desk.support.changes.lock().await;
    // Only rooms the bot is in are conversations it runs.
    if !desk.rooms.room(&pdu.room_id)?.is_joined(desk.bot()) {
        return Ok(false);
    }
    actions::index_state(desk, &held, &pdu.room_id, &pdu.event_id, &content).await?;
    // Unassigned work, or capacity freed by a closed conversation.
    Ok(content.assignee.is_none() || !content.is_active())
}

/// A message in a conversation: commands, activity, FAQ, out of office, reopening.
async fn message(desk: &Desk<'_>, pdu: &Pdu, pos: u64) -> Result<bool> {
    let room_id = &pdu.room_id;
    let Some(record) = desk.support.index.get(room_id)? else {
        return Ok(false);
    };
    let body = pdu.content_as::<serde_json::Value>().ok();
    let body = body
        .as_ref()
        .and_then(|c| c["body"].as_str())
        .unwrap_or_default()
        .to_owned();
    let ts = u64::from(pdu.origin_server_ts.get());
    let sender = &pdu.sender;
    if sender == desk.bot() {
        count_message(desk, room_id, pos, ts).await?;
        return Ok(false);
    }
    if desk.support.is_staff(sender) {
        if body.starts_with('!') {
            count_message(desk, room_id, pos, ts).await?;
            return commands::run(desk, pdu, pos, &body).await;
        }
        return agent_message(desk, room_id, record.content, pos, ts).await;
    }
    if commands::is_command(&body) {
        count_message(desk, room_id, pos, ts).await?;
        commands::refuse(desk, room_id, pos, sender).await?;
        return Ok(false);
    }
    customer_message(desk, pdu, record, pos, ts, body).await
}

/// Counts a message that is neither the customer's nor an agent's answer: the bot's, a
/// command.
async fn count_message(desk: &Desk<'_>, room_id: &RoomId, pos: u64, ts: u64) -> Result<()> {
    actions::update_record(desk, room_id, pos, |r| {
        r.messages += 1;
        r.last_activity_ts = r.last_activity_ts.max(ts);
    })
    .await?;
    Ok(())
}

async fn agent_message(
    desk: &Desk<'_>,
    room_id: &RoomId,
    content: Conversation,
    pos: u64,
    ts: u64,
) -> Result<bool> {
    actions::update_record(desk, room_id, pos, |r| {
        r.messages += 1;
        r.agent_messages += 1;
        r.waiting_since = None;
        r.last_activity_ts = r.last_activity_ts.max(ts);
    })
    .await?;
    if content.first_agent_response_ts.is_none() && content.first_customer_message_ts.is_some() {
        let actor = Actor::bot(pos);
        actions::update(desk, room_id, &actor, "first-response", json!({}), |c| {
            c.first_agent_response_ts.get_or_insert(ts);
            Ok(())
        })
        .await?;
    }
    Ok(false)
}

async fn customer_message(
    desk: &Desk<'_>,
    pdu: &Pdu,
    record: ConversationRecord,
    pos: u64,
    ts: u64,
    body: String,
) -> Result<bool> {
    let room_id = &pdu.room_id;
    let cfg = desk.config();
    let day = hours::local_day(cfg.business_hours.as_ref(), ts);
    let closed_now = !hours::is_open(cfg.business_hours.as_ref(), ts);
    let send_ooo = closed_now
        && !cfg.out_of_office.is_empty()
        && record.out_of_office_day != Some(day)
        && record.applied_pos < pos;
    let text = body.clone();
    actions::update_record(desk, room_id, pos, |r| {
        r.messages += 1;
        r.customer_messages += 1;
        r.waiting_since.get_or_insert(ts);
        r.last_activity_ts = r.last_activity_ts.max(ts);
        r.last_customer_text = Some(text);
        if send_ooo {
            r.out_of_office_day = Some(day);
        }
    })
    .await?;
    let actor = Actor::bot(pos);
    let c = &record.content;
    let reopen = c.status == Status::Closed;
    if c.first_customer_message_ts.is_none() || reopen {
        actions::update(desk, room_id, &actor, "customer-message", json!({}), |c| {
            c.first_customer_message_ts.get_or_insert(ts);
            if c.status == Status::Closed {
                c.status = Status::Open;
                c.resolved_ts = None;
                c.assignee = None;
            }
            Ok(())
        })
        .await?;
    }
    if send_ooo {
        let txn = actor.txn("ooo");
        say(desk, room_id, &cfg.out_of_office, false, &[], txn).await?;
    } else if let Some(answer) = faq::answer(&cfg.faq, &body, cfg.faq_threshold) {
        say(desk, room_id, answer, false, &[], actor.txn("faq")).await?;
    }
    Ok(c.assignee.is_none() || reopen)
}
