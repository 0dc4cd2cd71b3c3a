//! What the support API reads: conversations, their history, agents, metrics, the audit log
//! and tickets, each as the asking viewer may see it ([`super::access`]). Handlers parse and
//! shape; the reading and the rules are here.

use ruma::RoomId;
use serde_json::{Map, Value};

use super::{
    ConversationRecord, Desk, Role, Ticket,
    access::Viewer,
    agents::{self, AgentStatus},
    audit::AuditEntry,
    filter::{Assignee, Filter, PageToken, Sort},
    metrics::{self, Metrics},
    tickets::TicketFilter,
};
use crate::{
    config::AgentConfig,
    error::{Error, Result},
    events::ClientFormat,
    rooms::{Direction, EventView},
};

/// A page of the conversations the viewer sees, from `from`, and the next page's token. An
/// agent asking for anyone's but their own or the queue is refused.
pub(crate) fn conversations(
    desk: &Desk<'_>,
    viewer: &Viewer<'_>,
    filter: Filter,
    sort: Sort,
    limit: usize,
    from: Option<&PageToken>,
) -> Result<(Vec<ConversationRecord>, Option<PageToken>)> {
    let filter = restricted(desk, viewer, filter)?;
    desk.support.index.list(&filter, sort, limit, from)
}

/// A listing's filter with the viewer's restriction added: an agent sees their own
/// conversations and the queue, and asking for anyone else's is refused.
pub(crate) fn restricted(
    desk: &Desk<'_>,
    viewer: &Viewer<'_>,
    mut filter: Filter,
) -> Result<Filter> {
    let allowed = viewer.assignees(desk);
    if let Some(allowed) = &allowed
        && filter.assignee != Assignee::Anyone
        && !allowed.contains(&filter.assignee)
    {
        return Err(Error::forbidden(
            "Agents see only their own conversations and the queue",
        ));
    }
    filter.only_assignees = allowed;
    Ok(filter)
}

/// The conversation, if the viewer sees it; `404` otherwise (existence does not leak).
pub(crate) fn conversation(
    desk: &Desk<'_>,
    viewer: &Viewer<'_>,
    room_id: &RoomId,
) -> Result<ConversationRecord> {
    viewer
        .conversation(desk, room_id)?
        .ok_or_else(|| Error::not_found("No such conversation"))
}

/// A conversation's record as it is now, after a change.
pub(crate) fn record(desk: &Desk<'_>, room_id: &RoomId) -> Result<ConversationRecord> {
    desk.support
        .index
        .get(room_id)?
        .ok_or_else(|| Error::not_found("No such conversation"))
}

/// The `limit` newest events of a conversation the viewer sees, oldest first, as the viewer's
/// client would get them; with the delivery state of those a bridge sent (`{event id: state}`).
pub(crate) fn history(
    desk: &Desk<'_>,
    viewer: &Viewer<'_>,
    room_id: &RoomId,
    limit: usize,
) -> Result<(Vec<Value>, Map<String, Value>)> {
    let room = desk.rooms.room(room_id)?;
    let positions =
        desk.rooms
            .timeline_positions(room.short, u64::MAX, Direction::Backward, limit)?;
    let view_as = EventView {
        user: viewer.user,
        device: None,
        format: ClientFormat::WithRoomId,
    };
    let mut events = Vec::with_capacity(positions.len());
    for pos in positions.into_iter().rev() {
        let raw = desk.rooms.client_event(pos, view_as)?;
        events.push(
            serde_json::from_str::<Value>(raw.get()).map_err(|e| Error::internal(e.to_string()))?,
        );
    }
    let event_ids = events.iter().filter_map(|event| event["event_id"].as_str());
    let deliveries = desk.support.deliveries.of(room_id, event_ids);
    Ok((events, deliveries))
}

/// Every agent, in assignment order (the config's, then those given the role at runtime),
/// with where they stand.
pub(crate) fn agents(desk: &Desk<'_>) -> Result<Vec<(AgentConfig, AgentStatus)>> {
    let staff = desk.support.roster.staff();
    staff
        .agents()
        .iter()
        .map(|agent| Ok((agent.clone(), agents::status(desk, agent)?)))
        .collect()
}

/// Metrics of the conversations created in `[from, to)`: overall and per agent, but an agent
/// sees only their own figures besides the overall ones, not their colleagues'.
pub(crate) fn metrics(desk: &Desk<'_>, viewer: &Viewer<'_>, from: u64, to: u64) -> Result<Metrics> {
    let records = desk.support.index.created_between(from, to)?;
    let mut m = metrics::compute(from, to, &records);
    if viewer.role == Role::Agent {
        m.per_agent.retain(|a, _| a == viewer.user);
    }
    Ok(m)
}

/// A page of the audit log, newest first, below id `before`, and where the next page starts.
pub(crate) fn audit(
    desk: &Desk<'_>,
    limit: usize,
    before: Option<u64>,
) -> Result<(Vec<AuditEntry>, Option<u64>)> {
    desk.support.audit.list(limit, before)
}

/// The ticket, if the viewer sees its conversation; `404` otherwise (existence does not leak).
pub(crate) fn ticket(desk: &Desk<'_>, viewer: &Viewer<'_>, number: u64) -> Result<Ticket> {
    match desk.support.tickets.get(number)? {
        Some(t) if viewer.sees_ticket(desk, &t)? => Ok(t),
        _ => Err(Error::not_found(format!("No ticket #{number}"))),
    }
}

/// A page of the tickets the viewer sees, newest first, below number `before`, and where the
/// next page starts.
pub(crate) fn tickets(
    desk: &Desk<'_>,
    viewer: &Viewer<'_>,
    filter: &TicketFilter,
    limit: usize,
    before: Option<u64>,
) -> Result<(Vec<Ticket>, Option<u64>)> {
    desk.support
        .tickets
        .list(filter, limit, before, |t| viewer.sees_ticket(desk, t))
}
