//! Tickets as the desk changes them, from a chat command or the API alike: escalating a
//! conversation, changing a ticket, and mirroring it as room state (`io.charla.ticket`) and
//! announcing it in its conversation.

use ruma::RoomId;
use serde_json::json;

use super::{
    TICKET_EVENT, Ticket,
    actions::{Actor, current, not_a_conversation, say},
    now_ms,
    tickets::TicketStatus,
};
use crate::{
    error::{Error, Result},
    events::EventTemplate,
    services::Services,
    storage::Batch,
};

/// The fields a ticket change may set.
#[derive(Debug, Clone, Default)]
pub struct TicketPatch {
    pub title: Option<String>,
    pub status: Option<TicketStatus>,
    pub priority: Option<super::conversation::Priority>,
    /// `Some(None)` unassigns.
    pub assignee: Option<Option<String>>,
}

/// Escalates a conversation to a ticket; `source` (the asking event) makes it idempotent.
pub async fn create_ticket(
    s: &Services,
    room_id: &RoomId,
    title: &str,
    actor: &Actor<'_>,
    source: Option<&str>,
) -> Result<Ticket> {
    if let Some(src) = source
        && let Some(t) = s.support.tickets.by_source(src)?
    {
        return Ok(t);
    }
    let (conv, _) = current(s, room_id)?.ok_or_else(|| not_a_conversation(room_id))?;
    let now = now_ms();
    let ticket = Ticket {
        number: s.support.tickets.next_number()?,
        title: title.to_owned(),
        status: TicketStatus::Open,
        priority: conv.priority,
        assignee: conv.assignee.clone(),
        room_id: room_id.to_string(),
        created_by: actor.user.to_string(),
        created_ts: now,
        updated_ts: now,
    };
    let mut batch = Batch::new();
    s.support.tickets.put(&mut batch, None, &ticket, source);
    s.support.audit.record(
        &mut batch,
        actor.user.as_str(),
        "ticket.create",
        &format!("#{}", ticket.number),
        actor.via,
        json!({ "room_id": room_id, "title": title }),
    )?;
    s.store.write_durable(batch).await?;
    mirror_ticket(s, &ticket, actor).await?;
    say(
        s,
        room_id,
        &format!("Ticket #{} created: {}", ticket.number, ticket.title),
        true,
        &[],
        actor.txn("ticket-created"),
    )
    .await?;
    Ok(ticket)
}

/// Changes a ticket, mirrors it in its room and announces the change there.
pub async fn update_ticket(
    s: &Services,
    number: u64,
    patch: TicketPatch,
    actor: &Actor<'_>,
) -> Result<Ticket> {
    let _guard = s.support.changes.lock().await;
    let old = s
        .support
        .tickets
        .get(number)?
        .ok_or_else(|| Error::not_found(format!("No ticket #{number}")))?;
    let mut new = old.clone();
    if let Some(t) = patch.title {
        new.title = t;
    }
    if let Some(st) = patch.status {
        new.status = st;
    }
    if let Some(p) = patch.priority {
        new.priority = p;
    }
    if let Some(a) = patch.assignee {
        new.assignee = a;
    }
    if new == old {
        return Ok(new);
    }
    new.updated_ts = now_ms();
    let mut batch = Batch::new();
    s.support.tickets.put(&mut batch, Some(&old), &new, None);
    s.support.audit.record(
        &mut batch,
        actor.user.as_str(),
        "ticket.update",
        &format!("#{number}"),
        actor.via,
        json!({ "status": new.status.as_str(), "priority": new.priority.as_str(),
                "assignee": new.assignee, "title": new.title }),
    )?;
    s.store.write_durable(batch).await?;
    let room_id = RoomId::parse(&new.room_id).map_err(|e| Error::internal(e.to_string()))?;
    mirror_ticket(s, &new, actor).await?;
    say(
        s,
        &room_id,
        &format!(
            "Ticket #{} is now {} ({} priority): {}",
            new.number,
            new.status.as_str(),
            new.priority.as_str(),
            new.title
        ),
        true,
        &[],
        None,
    )
    .await?;
    if new.status == TicketStatus::Resolved
        && old.status != TicketStatus::Resolved
        && s.support.config.notify_customer_on_resolve
    {
        say(
            s,
            &room_id,
            &format!("Your request #{} has been resolved.", new.number),
            false,
            &[],
            None,
        )
        .await?;
    }
    Ok(new)
}

/// The ticket as room state (`io.charla.ticket`, state key: its number).
async fn mirror_ticket(s: &Services, t: &Ticket, actor: &Actor<'_>) -> Result<()> {
    let room_id = RoomId::parse(&t.room_id).map_err(|e| Error::internal(e.to_string()))?;
    let template = EventTemplate::state_json(TICKET_EVENT, t.number.to_string(), t);
    let txn = actor.txn(&format!("ticket-state-{}-{}", t.number, t.updated_ts));
    s.rooms
        .send(&room_id, &s.support.bot, template, txn)
        .await?;
    Ok(())
}
