//! The audit log: every administrative action (through the API or a chat command), in order.
//! The bot's own changes are not in it: the rooms' history shows them.

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::actor::{Actor, Via};
use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Store, Table, keys},
};

const COUNTER: &[u8] = b"support_audit_seq";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AuditEntry {
    pub(crate) id: u64,
    pub(crate) ts: u64,
    pub(crate) actor: OwnedUserId,
    /// What was done: `conversation.update`, `conversation.assign`, `ticket.create`, …
    pub(crate) action: String,
    /// What it was done to: a room id or `#<ticket>`.
    pub(crate) target: String,
    pub(crate) via: Via,
    pub(crate) details: Value,
}

#[derive(Clone)]
pub(crate) struct AuditLog {
    store: Store,
}

impl AuditLog {
    pub(crate) fn new(store: Store) -> Self {
        AuditLog { store }
    }

    /// Adds an entry to `batch`, so it is written with the change it records; nothing for the
    /// bot's own changes.
    pub(crate) fn record(
        &self,
        batch: &mut Batch,
        actor: &Actor<'_>,
        action: &str,
        target: &str,
        details: Value,
    ) -> Result<Option<u64>> {
        let Some((user, via)) = actor.audited() else {
            return Ok(None);
        };
        let id = self.store.increment(Table::Global, COUNTER, 1)?;
        let entry = AuditEntry {
            id,
            ts: super::now_ms(),
            actor: user.to_owned(),
            action: action.into(),
            target: target.into(),
            via,
            details,
        };
        batch.put(
            Table::SupportAudit,
            Key::new().u64(id),
            serde_json::to_vec(&entry).expect("audit serializes"),
        );
        Ok(Some(id))
    }

    /// Records an entry on its own, and waits for the disk: for changes whose own writes are
    /// elsewhere (room events).
    pub(crate) async fn write(
        &self,
        actor: &Actor<'_>,
        action: &str,
        target: &str,
        details: Value,
    ) -> Result<()> {
        if actor.audited().is_none() {
            return Ok(());
        }
        let mut batch = Batch::new();
        self.record(&mut batch, actor, action, target, details)?;
        self.store.write_durable(batch).await?;
        Ok(())
    }

    /// [`AuditLog::write`], answering the entry's id (`None` for the bot): for changes that
    /// are looked up later by it (a room deletion's `delete_id`).
    pub(crate) async fn write_numbered(
        &self,
        actor: &Actor<'_>,
        action: &str,
        target: &str,
        details: Value,
    ) -> Result<Option<u64>> {
        let mut batch = Batch::new();
        let id = self.record(&mut batch, actor, action, target, details)?;
        self.store.write_durable(batch).await?;
        Ok(id)
    }

    /// The entry with this id.
    pub(crate) fn get(&self, id: u64) -> Result<Option<AuditEntry>> {
        let Some(bytes) = self
            .store
            .get(Table::SupportAudit, &Key::new().u64(id).into_vec())?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal(format!("corrupt audit entry: {e}")))
    }

    /// Newest first, below id `before` when given.
    pub(crate) fn list(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stored_before_typed_actors_read_and_write_the_same() {
        for via in ["api", "command"] {
            let stored = serde_json::json!({
                "id": 3, "ts": 4, "actor": "@boss:x", "action": "conversation.assign",
                "target": "!a:x", "via": via, "details": {"assignee": "@ana:x"},
            });
            let entry: AuditEntry = serde_json::from_value(stored.clone()).unwrap();
            assert_eq!(entry.actor, "@boss:x");
            assert_eq!(serde_json::to_value(&entry).unwrap(), stored);
        }
    }
}
