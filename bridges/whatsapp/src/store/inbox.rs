//! The inbox: accepted webhook bodies, by arrival number, until the inbox worker processed
//! them.

use std::sync::atomic::Ordering;

use charla_storage::{Batch, Slice};

use super::{Result, Seq, Store, Table, seq_of};

/// The key of a webhook body in the inbox: its arrival number.
pub type InboxKey = Seq;

impl Store {
    /// Records an accepted webhook body durably; returns once it is on disk.
    pub(crate) async fn push_inbox(&self, body: &[u8]) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(Table::Inbox, self.next_seq()?, body);
        // Counted first: the worker may take (and count out) the body before the sync returns.
        self.inbox_waiting.fetch_add(1, Ordering::Relaxed);
        let written = self.db.write_durable(batch).await;
        if written.is_err() {
            self.inbox_waiting.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(written?)
    }

    /// Up to `limit` webhook bodies, oldest first, with their keys.
    pub(crate) fn inbox_batch(&self, limit: usize) -> Result<Vec<(InboxKey, Slice)>> {
        let mut bodies = Vec::new();
        for entry in self.db.scan_prefix(Table::Inbox, b"").take(limit) {
            let (key, body) = entry?;
            bodies.push((seq_of(&key), body));
        }
        Ok(bodies)
    }

    /// Adds the removal of processed webhooks to `batch` (written by the inbox worker with
    /// what the round held or set aside); returns how many. Not waited for: a crash before it
    /// reaches the disk only means processing them again, and wamids are deduplicated.
    pub(crate) fn remove_inbox(&self, batch: &mut Batch<Table>, keys: &[InboxKey]) -> u64 {
        for key in keys {
            batch.delete(Table::Inbox, key.as_slice());
        }
        keys.len() as u64
    }

    /// Counts `removed` webhooks out of the gauge, once their removal is written.
    pub(crate) fn inbox_removed(&self, removed: u64) {
        self.inbox_waiting.fetch_sub(removed, Ordering::Relaxed);
    }

    /// Counts the waiting webhooks (a scan: for tests and reports).
    pub fn inbox_len(&self) -> usize {
        self.db.scan_prefix(Table::Inbox, b"").count()
    }

    /// The waiting webhooks, from a gauge (cheap: for metrics).
    pub(crate) fn inbox_waiting(&self) -> u64 {
        self.inbox_waiting.load(Ordering::Relaxed)
    }

    /// Whether no webhook waits (cheap, unlike [`Store::inbox_len`]).
    pub fn inbox_is_empty(&self) -> bool {
        self.is_empty(Table::Inbox)
    }
}
