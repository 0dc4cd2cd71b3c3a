//! Tickets: escalations with sequential numbers, stored durably and listed by filter.
//!
//! Numbers come from one counter, so they are sequential across the server. A ticket made from
//! a chat command remembers the event that asked for it, so a replayed command (the bot starting
//! again after a crash) finds its ticket instead of making a second one.

use ruma::{EventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use super::{
    changes::ChangeGuard,
    conversation::{Priority, string_enum},
    filter::{Assignee, assignee_value},
};
use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Store, Table, keys},
};

const COUNTER: &[u8] = b"support_ticket_seq";

/// Index entries one listing page reads at most.
pub(crate) const SCAN_BUDGET: usize = 2_000;

string_enum!(
    /// Where a ticket stands.
    TicketStatus { Open = "open", InProgress = "in_progress", Resolved = "resolved", Closed = "closed" }
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ticket {
    pub(crate) number: u64,
    pub(crate) title: String,
    pub(crate) status: TicketStatus,
    pub(crate) priority: Priority,
    pub(crate) assignee: Option<OwnedUserId>,
    /// The conversation it escalates.
    pub(crate) room_id: OwnedRoomId,
    pub(crate) created_by: OwnedUserId,
    pub(crate) created_ts: u64,
    pub(crate) updated_ts: u64,
}

impl Ticket {
    fn keys(&self) -> Vec<Vec<u8>> {
        vec![
            Key::new().str("all").str("").u64(self.number).into_vec(),
            Key::new()
                .str("status")
                .str(self.status.as_str())
                .u64(self.number)
                .into_vec(),
            Key::new()
                .str("room")
                .str(self.room_id.as_str())
                .u64(self.number)
                .into_vec(),
            Key::new()
                .str("assignee")
                .str(assignee_value(self.assignee.as_deref()))
                .u64(self.number)
                .into_vec(),
        ]
    }

    fn matches(&self, filter: &TicketFilter) -> bool {
        filter.status.is_none_or(|s| self.status == s)
            && filter.assignee.matches(self.assignee.as_deref())
            && filter.room_id.as_ref().is_none_or(|r| self.room_id == *r)
            && filter.priority.is_none_or(|p| self.priority == p)
    }
}

/// Ticket filters; `None` means any.
#[derive(Debug, Clone, Default)]
pub(crate) struct TicketFilter {
    pub(crate) status: Option<TicketStatus>,
    pub(crate) assignee: Assignee,
    pub(crate) room_id: Option<OwnedRoomId>,
    pub(crate) priority: Option<Priority>,
}

#[derive(Clone)]
pub(crate) struct TicketStore {
    store: Store,
    first_number: u64,
}

impl TicketStore {
    pub(crate) fn new(store: Store, first_number: u64) -> Self {
        TicketStore {
            store,
            first_number: first_number.max(1),
        }
    }

    pub(crate) fn get(&self, number: u64) -> Result<Option<Ticket>> {
        self.store
            .get(Table::SupportTickets, &number.to_be_bytes())?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt ticket: {e}")))
            })
            .transpose()
    }

    /// The ticket an earlier request (`source`: an event id) already created.
    pub(crate) fn by_source(&self, source: &EventId) -> Result<Option<Ticket>> {
        let key = Key::new().str("source").str(source.as_str()).into_vec();
        match self.store.get(Table::SupportTicketIndex, &key)? {
            Some(v) => self.get(keys::decode_u64(&v)),
            None => Ok(None),
        }
    }

    /// The next number. Taken numbers are never reused, even if the ticket's write fails.
    pub(crate) fn next_number(&self) -> Result<u64> {
        let n = self.store.increment(Table::Global, COUNTER, 1)?;
        Ok(self.first_number - 1 + n)
    }

    /// Writes the ticket (new or changed) and its index keys into `batch`. `old` must be what
    /// is stored: the caller read it under the change lock it still holds, so no other change
    /// came in between and left keys behind.
    pub(crate) fn put(
        &self,
        _held: &ChangeGuard<'_>,
        batch: &mut Batch,
        old: Option<&Ticket>,
        new: &Ticket,
        source: Option<&EventId>,
    ) {
        let new_keys = new.keys();
        if let Some(old) = old {
            for k in old.keys() {
                if !new_keys.contains(&k) {
                    batch.delete(Table::SupportTicketIndex, k);
                }
            }
        }
        for k in new_keys {
            batch.put(Table::SupportTicketIndex, k, Vec::new());
        }
        if let Some(source) = source {
            batch.put(
                Table::SupportTicketIndex,
                Key::new().str("source").str(source.as_str()),
                new.number.to_be_bytes().to_vec(),
            );
        }
        batch.put(
            Table::SupportTickets,
            new.number.to_be_bytes().to_vec(),
            serde_json::to_vec(new).expect("ticket serializes"),
        );
    }

    /// How many tickets have this status (an admin-rate scan of one index facet).
    pub(crate) fn count_status(&self, status: TicketStatus) -> Result<usize> {
        let prefix = Key::new().str("status").str(status.as_str()).into_vec();
        let mut count = 0;
        for entry in self.store.scan_prefix(Table::SupportTicketIndex, &prefix) {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    /// Newest first, below `before` (a ticket number) when given: those `filter` and
    /// `visible` (the caller's view) keep, and where the next page starts. One page reads at
    /// most [`SCAN_BUDGET`] index entries, so a caller who sees few tickets gets a short page
    /// (maybe empty) with a `next`, never a scan of every ticket.
    pub(crate) fn list(
        &self,
        filter: &TicketFilter,
        limit: usize,
        before: Option<u64>,
        visible: impl Fn(&Ticket) -> Result<bool>,
    ) -> Result<(Vec<Ticket>, Option<u64>)> {
        let prefix = match (&filter.room_id, filter.assignee.value(), filter.status) {
            (Some(room), _, _) => Key::new().str("room").str(room.as_str()),
            (None, Some(a), _) => Key::new().str("assignee").str(a),
            (None, None, Some(s)) => Key::new().str("status").str(s.as_str()),
            _ => Key::new().str("all").str(""),
        }
        .into_vec();
        let to = match before {
            Some(b) => Key::from_vec(prefix.clone()).u64(b).into_vec(),
            None => Key::from_vec(prefix.clone()).u64(u64::MAX).into_vec(),
        };
        let mut out = Vec::new();
        let entries = self.store.range(Table::SupportTicketIndex, &prefix, &to);
        for (scanned, entry) in entries.rev().enumerate() {
            let (k, _) = entry?;
            let number = keys::trailing_u64(&k);
            if let Some(t) = self.get(number)?
                && t.matches(filter)
                && visible(&t)?
            {
                out.push(t);
                if out.len() == limit {
                    return Ok((out, Some(number)));
                }
            }
            if scanned + 1 == SCAN_BUDGET {
                return Ok((out, Some(number)));
            }
        }
        Ok((out, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_stored_before_typed_ids_read_and_write_the_same() {
        let stored = serde_json::json!({
            "number": 7, "title": "Broken screen", "status": "in_progress", "priority": "high",
            "assignee": "@ana:x", "room_id": "!a:x", "created_by": "@bob:x",
            "created_ts": 1, "updated_ts": 2,
        });
        let ticket: Ticket = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(ticket.status, TicketStatus::InProgress);
        assert_eq!(ticket.assignee.as_ref().map(|a| a.as_str()), Some("@ana:x"));
        assert_eq!(serde_json::to_value(&ticket).unwrap(), stored);
        let unassigned = serde_json::json!({
            "number": 8, "title": "t", "status": "open", "priority": "low", "assignee": null,
            "room_id": "!a:x", "created_by": "@bob:x", "created_ts": 1, "updated_ts": 1,
        });
        let ticket: Ticket = serde_json::from_value(unassigned.clone()).unwrap();
        assert_eq!(serde_json::to_value(&ticket).unwrap(), unassigned);
    }
}
