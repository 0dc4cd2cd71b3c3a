//! `charla admin stats`: the server at a glance.

use serde::Serialize;

use super::Admin;
use crate::{
    error::Result,
    support::{conversation::Status, queries, tickets::TicketStatus},
    users::admin::UserQuery,
};

/// Events looked at to count today's messages: past it the count says it is partial.
const MESSAGE_BUDGET: usize = 2_000_000;

#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    /// Active local accounts.
    pub(crate) users: u64,
    /// Rooms not deleted.
    pub(crate) rooms: u64,
    /// Support conversations by status.
    pub(crate) conversations: std::collections::BTreeMap<&'static str, u64>,
    /// Messages since midnight UTC.
    pub(crate) messages_today: u64,
    /// Whether `messages_today` counted every event of the day ([`MESSAGE_BUDGET`]).
    pub(crate) messages_today_complete: bool,
    /// Agents whose presence is `online`.
    pub(crate) agents_online: u64,
    /// Tickets neither resolved nor closed.
    pub(crate) open_tickets: u64,
}

impl Admin<'_> {
    pub(crate) fn stats(&self) -> Result<Stats> {
        let users = self
            .users
            .list(&UserQuery {
                limit: 0,
                ..UserQuery::default()
            })?
            .total as u64;
        let rooms = self.rooms.list_rooms()?.len() as u64;
        let support = self.desk.support;
        let mut conversations = std::collections::BTreeMap::new();
        for name in Status::NAMES {
            if let Some(status) = Status::parse(name) {
                conversations.insert(*name, support.index.count_status(status)? as u64);
            }
        }
        let now = crate::support::now_ms();
        let midnight = now - now % 86_400_000;
        let (messages_today, complete) = self.rooms.messages_since(midnight, MESSAGE_BUDGET)?;
        let agents_online = queries::agents(&self.desk)?
            .iter()
            .filter(|(_, status)| status.presence == "online")
            .count() as u64;
        let open_tickets = (support.tickets.count_status(TicketStatus::Open)?
            + support.tickets.count_status(TicketStatus::InProgress)?)
            as u64;
        Ok(Stats {
            users,
            rooms,
            conversations,
            messages_today,
            messages_today_complete: complete,
            agents_online,
            open_tickets,
        })
    }
}
