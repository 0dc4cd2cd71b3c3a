//! Tickets as the desk changes them, from a chat command or the API alike: escalating a
//! conversation, changing a ticket, and mirroring it as room state (`io.charla.ticket`) and
//! announcing it in its conversation.

use ruma::{EventId, OwnedUserId, RoomId};
use serde_json::json;

use super::{
    Desk, TICKET_EVENT, Ticket,
    actions::{current, not_a_conversation},
    actor::Actor,
    conversation::Priority,
    now_ms,
    say::say,
    tickets::TicketStatus,
};
use crate::{
    error::{Error, Result},
    events::EventTemplate,
    storage::Batch,
};

/// The fields a ticket change may set.
#[derive(Debug, Clone, Default)]
pub(crate) struct TicketPatch {
    pub(crate) title: Option<String>,
    pub(crate) status: Option<TicketStatus>,
    pub(crate) priority: Option<Priority>,
    /// `Some(None)` unassigns.
    pub(crate) assignee: Option<Option<OwnedUserId>>,
}

impl TicketPatch {
    /// The ticket with the patch applied.
    fn apply(self, ticket: &Ticket) -> Ticket {
        let mut new = ticket.clone();
        if let Some(t) = self.title {
            new.title = t;
        }
        if let Some(st) = self.status {
            new.status = st;
        }
        if let Some(p) = self.priority {
            new.priority = p;
        }
        if let Some(a) = self.assignee {
            new.assignee = a;
        }
        new
    }
}

/// Escalates a conversation to a ticket; `source` (the asking event) makes it idempotent.
pub(crate) async fn create_ticket(
    desk: &Desk<'_>,
    room_id: &RoomId,
    title: &str,
    actor: &Actor<'_>,
    source: Option<&EventId>,
) -> Result<Ticket> {
    let tickets = &desk.support.tickets;
    // Under the lock from the look for an earlier ticket to the write of this one.
    let held = desk.support.changes.lock().await;
    if let Some(src) = source
        && let Some(t) = tickets.by_source(src)?
    {
        return Ok(t);
    }
    let (conv, _) = current(desk, room_id)?.ok_or_else(|| not_a_conversation(room_id))?;
    let now = now_ms();
    let ticket = Ticket {
        number: tickets.next_number()?,
        title: title.to_owned(),
        status: TicketStatus::Open,
        priority: conv.priority,
        assignee: conv.assignee,
        room_id: room_id.to_owned(),
        created_by: actor.user(desk.bot()).to_owned(),
        created_ts: now,
        updated_ts: now,
    };
    let mut batch = Batch::new();
    tickets.put(&held, &mut batch, None, &ticket, source);
    let details = json!({ "room_id": room_id, "title": title });
    let target = format!("#{}", ticket.number);
    desk.support
        .audit
        .record(&mut batch, actor, "ticket.create", &target, details)?;
    desk.store.write_durable(batch).await?;
    drop(held);
    mirror_ticket(desk, &ticket, actor).await?;
    let announcement = format!("Ticket #{} created: {}", ticket.number, ticket.title);
    say(
        desk,
        room_id,
        &announcement,
        true,
        &[],
        actor.txn("ticket-created"),
    )
    .await?;
    Ok(ticket)
}

/// Changes a ticket, mirrors it in its room and announces the change there.
pub(crate) async fn update_ticket(
    desk: &Desk<'_>,
    number: u64,
    patch: TicketPatch,
    actor: &Actor<'_>,
) -> Result<Ticket> {
    let held = desk.support.changes.lock().await;
    let old = desk
        .support
        .tickets
        .get(number)?
        .ok_or_else(|| Error::not_found(format!("No ticket #{number}")))?;
    let mut new = patch.apply(&old);
    if new == old {
        return Ok(new);
    }
    new.updated_ts = now_ms();
    let mut batch = Batch::new();
    desk.support
        .tickets
        .put(&held, &mut batch, Some(&old), &new, None);
    let details = json!({ "status": new.status.as_str(), "priority": new.priority.as_str(),
                          "assignee": new.assignee, "title": new.title });
    let target = format!("#{number}");
    desk.support
        .audit
        .record(&mut batch, actor, "ticket.update", &target, details)?;
    desk.store.write_durable(batch).await?;
    mirror_ticket(desk, &new, actor).await?;
    announce_change(desk, &old, &new).await?;
    Ok(new)
}

/// Tells the conversation what changed: agents always, the customer when it is resolved
/// (`support.notify_customer_on_resolve`).
async fn announce_change(desk: &Desk<'_>, old: &Ticket, new: &Ticket) -> Result<()> {
    let text = format!(
        "Ticket #{} is now {} ({} priority): {}",
        new.number,
        new.status.as_str(),
        new.priority.as_str(),
        new.title
    );
    say(desk, &new.room_id, &text, true, &[], None).await?;
    if new.status == TicketStatus::Resolved
        && old.status != TicketStatus::Resolved
        && desk.config().notify_customer_on_resolve
    {
        let text = format!("Your request #{} has been resolved.", new.number);
        say(desk, &new.room_id, &text, false, &[], None).await?;
    }
    Ok(())
}

/// The ticket as room state (`io.charla.ticket`, state key: its number).
async fn mirror_ticket(desk: &Desk<'_>, t: &Ticket, actor: &Actor<'_>) -> Result<()> {
    let template = EventTemplate::state_json(TICKET_EVENT, t.number.to_string(), t);
    let txn = actor.txn(&format!("ticket-state-{}-{}", t.number, t.updated_ts));
    desk.rooms
        .send(&t.room_id, desk.bot(), template, txn)
        .await?;
    Ok(())
}
