//! What the bot does with one event of the stream.

use ruma::{
    RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::json;

use super::{commands, faq, hours, invite};
use crate::{
    error::Result,
    events::Pdu,
    rooms::membership_of,
    services::Services,
    support::{
        CONVERSATION_EVENT, Conversation,
        actions::{self, Actor},
        conversation::Status,
        trust,
    },
};

/// Whether the bot may have something to do with an event: cheap, so the stream is read fast
/// and only these events go to a room's lane.
pub fn concerns(s: &Services, pdu: &Pdu) -> bool {
    match &pdu.kind {
        TimelineEventType::RoomMember => {
            pdu.state_key.as_deref() == Some(s.support.bot.as_str())
                && membership_of(pdu) == Some(MembershipState::Invite)
        }
        TimelineEventType::RoomMessage => true,
        // Checked on the state key first: most events are not state and need no string.
        kind => pdu.state_key.as_deref() == Some("") && kind.to_string() == CONVERSATION_EVENT,
    }
}

/// Handles the event at `pos`; returns whether the queue should be looked at.
pub async fn event(s: &Services, pos: u64, pdu: &Pdu) -> Result<bool> {
    let bot = &s.support.bot;
    match pdu.kind.to_string().as_str() {
        "m.room.member"
            if pdu.state_key.as_deref() == Some(bot.as_str())
                && membership_of(pdu) == Some(MembershipState::Invite) =>
        {
            invite::invited(s, pdu, pos).await
        }
        CONVERSATION_EVENT if pdu.state_key.as_deref() == Some("") => {
            // Power in a room is no say on the desk: only the desk's own changes count.
            if !trust::is_desk(s, &pdu.sender)? {
                tracing::debug!(room = %pdu.room_id, sender = %pdu.sender,
                    "support bot: conversation state not from the desk, ignored");
                return Ok(false);
            }
            let content = Conversation::from_str_lenient(pdu.content.get()).bounded();
            let held = s.support.changes.lock().await;
            // Only rooms the bot is in are conversations it runs.
            if !s.rooms.room(&pdu.room_id)?.is_joined(bot) {
                return Ok(false);
            }
            actions::index_state(s, &held, &pdu.room_id, &pdu.event_id, &content).await?;
            // Unassigned work, or capacity freed by a closed conversation.
            Ok(content.assignee.is_none() || !content.is_active())
        }
        "m.room.message" => message(s, pdu, pos).await,
        _ => Ok(false),
    }
}

fn actor_txn(pos: u64, tag: &str) -> Option<crate::rooms::Txn> {
    Some(crate::rooms::Txn {
        device: "io.charla.support".into(),
        txn_id: format!("{pos}:{tag}").into(),
    })
}

/// A message in a conversation: commands, activity, FAQ, out of office, reopening.
async fn message(s: &Services, pdu: &Pdu, pos: u64) -> Result<bool> {
    let room_id = &pdu.room_id;
    let Some(record) = s.support.index.get(room_id.as_str())? else {
        return Ok(false);
    };
    let body = pdu.content_as::<serde_json::Value>().ok();
    let body = body
        .as_ref()
        .and_then(|c| c["body"].as_str())
        .unwrap_or_default()
        .to_owned();
    let ts = u64::from(pdu.origin_server_ts.get());
    let sender: &UserId = &pdu.sender;
    if sender == s.support.bot {
        actions::update_record(s, room_id, pos, |r| {
            r.messages += 1;
            r.last_activity_ts = r.last_activity_ts.max(ts);
        })
        .await?;
        return Ok(false);
    }
    if s.support.is_staff(sender) {
        if body.starts_with('!') {
            actions::update_record(s, room_id, pos, |r| {
                r.messages += 1;
                r.last_activity_ts = r.last_activity_ts.max(ts);
            })
            .await?;
            return commands::run(s, pdu, pos, &body).await;
        }
        return agent_message(s, room_id, record.content, pos, ts).await;
    }
    if commands::is_command(&body) {
        actions::update_record(s, room_id, pos, |r| {
            r.messages += 1;
            r.last_activity_ts = r.last_activity_ts.max(ts);
        })
        .await?;
        commands::refuse(s, room_id, pos, sender).await?;
        return Ok(false);
    }
    customer_message(s, pdu, record, pos, ts, body).await
}

async fn agent_message(
    s: &Services,
    room_id: &RoomId,
    content: Conversation,
    pos: u64,
    ts: u64,
) -> Result<bool> {
    actions::update_record(s, room_id, pos, |r| {
        r.messages += 1;
        r.agent_messages += 1;
        r.waiting_since = None;
        r.last_activity_ts = r.last_activity_ts.max(ts);
    })
    .await?;
    if content.first_agent_response_ts.is_none() && content.first_customer_message_ts.is_some() {
        let actor = Actor {
            user: &s.support.bot,
            via: "bot",
            txn: Some(pos.to_string()),
        };
        actions::update(s, room_id, &actor, "first-response", json!({}), |c| {
            c.first_agent_response_ts.get_or_insert(ts);
            Ok(())
        })
        .await?;
    }
    Ok(false)
}

async fn customer_message(
    s: &Services,
    pdu: &Pdu,
    record: crate::support::ConversationRecord,
    pos: u64,
    ts: u64,
    body: String,
) -> Result<bool> {
    let room_id = &pdu.room_id;
    let cfg = &s.config.support;
    let day = hours::local_day(cfg.business_hours.as_ref(), ts);
    let closed_now = !hours::is_open(cfg.business_hours.as_ref(), ts);
    let send_ooo = closed_now
        && !cfg.out_of_office.is_empty()
        && record.out_of_office_day != Some(day)
        && record.applied_pos < pos;
    let text = body.clone();
    actions::update_record(s, room_id, pos, |r| {
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
    let actor = Actor {
        user: &s.support.bot,
        via: "bot",
        txn: Some(pos.to_string()),
    };
    let c = &record.content;
    let reopen = c.status == Status::Closed;
    if c.first_customer_message_ts.is_none() || reopen {
        actions::update(s, room_id, &actor, "customer-message", json!({}), |c| {
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
        actions::say(
            s,
            room_id,
            &cfg.out_of_office,
            false,
            &[],
            actor_txn(pos, "ooo"),
        )
        .await?;
    } else if let Some(answer) = faq::answer(&cfg.faq, &body, cfg.faq_threshold) {
        actions::say(s, room_id, answer, false, &[], actor_txn(pos, "faq")).await?;
    }
    Ok(c.assignee.is_none() || reopen)
}
