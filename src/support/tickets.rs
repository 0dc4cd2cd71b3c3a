//! Tickets: escalations with sequential numbers, stored durably and listed by filter.
//!
//! Numbers come from one counter, so they are sequential across the server. A ticket made from
//! a chat command remembers the event that asked for it, so a replayed command (the bot starting
//! again after a crash) finds its ticket instead of making a second one.

use serde::{Deserialize, Serialize};

use super::conversation::Priority;
use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Store, Table, keys},
};

const COUNTER: &[u8] = b"support_ticket_seq";

/// Index entries one listing page reads at most.
pub const SCAN_BUDGET: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
}

impl TicketStatus {
    pub const NAMES: &'static [&'static str] = &["open", "in_progress", "resolved", "closed"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Self::Open,
            "in_progress" => Self::InProgress,
            "resolved" => Self::Resolved,
            "closed" => Self::Closed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::InProgress => "in_progress",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub number: u64,
    pub title: String,
    pub status: TicketStatus,
    pub priority: Priority,
    pub assignee: Option<String>,
    pub room_id: String,
    pub created_by: String,
    pub created_ts: u64,
    pub updated_ts: u64,
}

impl Ticket {
    fn keys(&self) -> Vec<Vec<u8>> {
        let mut out = vec![
            Key::new().str("all").str("").u64(self.number).into_vec(),
            Key::new()
                .str("status")
                .str(self.status.as_str())
                .u64(self.number)
                .into_vec(),
            Key::new()
                .str("room")
                .str(&self.room_id)
                .u64(self.number)
                .into_vec(),
        ];
        out.push(
            Key::new()
                .str("assignee")
                .str(self.assignee.as_deref().unwrap_or(""))
                .u64(self.number)
                .into_vec(),
        );
        out
    }
}

/// Ticket filters; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub status: Option<TicketStatus>,
    pub assignee: Option<String>,
    pub room_id: Option<String>,
    pub priority: Option<Priority>,
}

#[derive(Clone)]
pub struct TicketStore {
    store: Store,
    first_number: u64,
}

impl TicketStore {
    pub fn new(store: Store, first_number: u64) -> Self {
        TicketStore {
            store,
            first_number: first_number.max(1),
        }
    }

    pub fn get(&self, number: u64) -> Result<Option<Ticket>> {
        self.store
            .get(Table::SupportTickets, &number.to_be_bytes())?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt ticket: {e}")))
            })
            .transpose()
    }

    /// The ticket an earlier request (`source`: an event id) already created.
    pub fn by_source(&self, source: &str) -> Result<Option<Ticket>> {
        let key = Key::new().str("source").str(source).into_vec();
        match self.store.get(Table::SupportTicketIndex, &key)? {
            Some(v) => self.get(keys::decode_u64(&v)),
            None => Ok(None),
        }
    }

    /// The next number. Taken numbers are never reused, even if the ticket's write fails.
    pub fn next_number(&self) -> Result<u64> {
        let n = self.store.increment(Table::Global, COUNTER, 1)?;
        Ok(self.first_number - 1 + n)
    }

    /// Writes the ticket (new or changed) and its index keys into `batch`.
    pub fn put(&self, batch: &mut Batch, old: Option<&Ticket>, new: &Ticket, source: Option<&str>) {
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
                Key::new().str("source").str(source),
                new.number.to_be_bytes().to_vec(),
            );
        }
        batch.put(
            Table::SupportTickets,
            new.number.to_be_bytes().to_vec(),
            serde_json::to_vec(new).expect("ticket serializes"),
        );
    }

    /// Newest first, below `before` (a ticket number) when given: those `filter` and
    /// `visible` (the caller's view) keep, and where the next page starts. One page reads at
    /// most [`SCAN_BUDGET`] index entries, so a caller who sees few tickets gets a short page
    /// (maybe empty) with a `next`, never a scan of every ticket.
    pub fn list(
        &self,
        filter: &TicketFilter,
        limit: usize,
        before: Option<u64>,
        visible: impl Fn(&Ticket) -> Result<bool>,
    ) -> Result<(Vec<Ticket>, Option<u64>)> {
        let prefix = match (&filter.room_id, &filter.assignee, filter.status) {
            (Some(room), _, _) => Key::new().str("room").str(room),
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
            if let Some(t) = self.get(number)? {
                let ok = filter.status.is_none_or(|s| t.status == s)
                    && filter
                        .assignee
                        .as_deref()
                        .is_none_or(|a| t.assignee.as_deref().unwrap_or("") == a)
                    && filter.room_id.as_ref().is_none_or(|r| &t.room_id == r)
                    && filter.priority.is_none_or(|p| t.priority == p);
                if ok && visible(&t)? {
                    out.push(t);
                    if out.len() == limit {
                        return Ok((out, Some(number)));
                    }
                }
            }
            if scanned + 1 == SCAN_BUDGET {
                return Ok((out, Some(number)));
            }
        }
        Ok((out, None))
    }
}
