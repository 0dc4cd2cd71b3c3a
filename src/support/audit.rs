//! The audit log: every administrative action (through the API or a chat command), in order.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Store, Table, keys},
};

const COUNTER: &[u8] = b"support_audit_seq";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    pub ts: u64,
    pub actor: String,
    /// What was done: `conversation.update`, `conversation.assign`, `ticket.create`, …
    pub action: String,
    /// What it was done to: a room id or `#<ticket>`.
    pub target: String,
    /// `api` or `command`.
    pub via: String,
    pub details: Value,
}

#[derive(Clone)]
pub struct AuditLog {
    store: Store,
}

impl AuditLog {
    pub fn new(store: Store) -> Self {
        AuditLog { store }
    }

    /// Adds an entry to `batch`, so it is written with the change it records.
    pub fn record(
        &self,
        batch: &mut Batch,
        actor: &str,
        action: &str,
        target: &str,
        via: &str,
        details: Value,
    ) -> Result<()> {
        let id = self.store.increment(Table::Global, COUNTER, 1)?;
        let entry = AuditEntry {
            id,
            ts: super::now_ms(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            via: via.into(),
            details,
        };
        batch.put(
            Table::SupportAudit,
            Key::new().u64(id),
            serde_json::to_vec(&entry).expect("audit serializes"),
        );
        Ok(())
    }

    /// Newest first, below id `before` when given.
    pub fn list(
        &self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<(Vec<AuditEntry>, Option<u64>)> {
        let to = Key::new().u64(before.unwrap_or(u64::MAX)).into_vec();
        let mut out = Vec::new();
        for entry in self.store.range(Table::SupportAudit, &[], &to).rev() {
            let (k, v) = entry?;
            let e: AuditEntry = serde_json::from_slice(&v)
                .map_err(|e| Error::internal(format!("corrupt audit entry: {e}")))?;
            debug_assert_eq!(keys::decode_u64(&k), e.id);
            out.push(e);
            if out.len() == limit {
                let next = out.last().map(|e| e.id);
                return Ok((out, next));
            }
        }
        Ok((out, None))
    }
}
