//! The web chat sessions' records: the seed's `chat_sessions` table, over the store.
//!
//! A session is a conversation room seen from the widget: its record holds what the room does
//! not (the customer's id at the website, the session's own status and timestamps), and indexes
//! find it by customer (newest first) and by room. Messages are not copied here: they are the
//! room's events (`messages.rs`), so what agents see and what the customer sees never differ.
//!
//! Sessions are never deleted: a closed one keeps its record and its room (the seed's soft
//! delete), so the customer's history stays readable.
//!
//! One customer's records change under that customer's lock ([`Sessions::lock`]): creating a
//! session checks "no open session" and writes in one step, and the feed's status changes and
//! the API's message times do not overwrite each other.

use ruma::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Store, Table},
};

/// Where a session stands, as the widget sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SessionStatus {
    Pending,
    Active,
    Closed,
}

impl SessionStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Active => "active",
            SessionStatus::Closed => "closed",
        }
    }

    /// A session the customer writes to: at most one per customer.
    pub(crate) fn is_open(self) -> bool {
        self != SessionStatus::Closed
    }
}

/// A session's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub(crate) id: Uuid,
    /// The customer's id at the website (the token's `sub`).
    pub(crate) customer: String,
    /// The conversation room; `None` only between the record's first write and the room's
    /// creation (finished by whoever reads it next: see `service.rs`).
    pub(crate) room_id: Option<OwnedRoomId>,
    pub(crate) status: SessionStatus,
    pub(crate) created_ms: u64,
    pub(crate) last_message_ms: u64,
    pub(crate) updated_ms: u64,
    /// Stream position of the event that last changed `status` (0: none yet): a resuming
    /// WebSocket that saw less is told the status again.
    pub(crate) status_pos: u64,
    /// When it was closed: the seed's soft delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) closed_ms: Option<u64>,
}

/// Whether a change waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Wait,
    /// Derived from the stream and replayed after a crash.
    Replayed,
}

/// Stripes of the per-customer lock: enough that customers rarely wait for each other.
const LOCK_STRIPES: usize = 64;

pub(crate) struct Sessions {
    store: Store,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Sessions {
    pub(crate) fn new(store: Store) -> Self {
        Sessions {
            store,
            locks: (0..LOCK_STRIPES).map(|_| Default::default()).collect(),
        }
    }

    /// The lock under which `customer`'s records change.
    pub(crate) async fn lock(&self, customer: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(customer);
        self.locks[hash as usize % LOCK_STRIPES].lock().await
    }

    pub(crate) fn get(&self, id: &Uuid) -> Result<Option<SessionRecord>> {
        self.store
            .get(Table::WebchatSessions, id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// The session whose conversation is `room_id`.
    pub(crate) fn by_room(&self, room_id: &RoomId) -> Result<Option<Uuid>> {
        Ok(self
            .store
            .get(Table::WebchatRooms, room_id.as_bytes())?
            .and_then(|v| Uuid::from_slice(&v).ok()))
    }

    /// The customer's newest session: the only one that can be open.
    pub(crate) fn newest(&self, customer: &str) -> Result<Option<SessionRecord>> {
        self.list(customer, 1).map(|mut v| v.pop())
    }

    /// The customer's sessions, newest first, at most `limit`.
    pub(crate) fn list(&self, customer: &str, limit: usize) -> Result<Vec<SessionRecord>> {
        let prefix = Key::new().str(customer).into_vec();
        let mut sessions = Vec::new();
        for entry in self
            .store
            .scan_prefix(Table::WebchatCustomers, &prefix)
            .rev()
            .take(limit)
        {
            let (key, _) = entry?;
            let id = Uuid::from_slice(&key[key.len().saturating_sub(16)..])
                .map_err(|_| corrupt("a customer index key without a session id"))?;
            match self.get(&id)? {
                Some(record) => sessions.push(record),
                None => return Err(corrupt("a customer index entry without its session")),
            }
        }
        Ok(sessions)
    }

    /// Adds a new session's record and its indexes to `batch` (under the customer's lock).
    pub(crate) fn insert(&self, batch: &mut Batch, record: &SessionRecord) {
        let mut key = Key::new()
            .str(&record.customer)
            .u64(record.created_ms)
            .into_vec();
        key.extend_from_slice(record.id.as_bytes());
        batch.put(Table::WebchatCustomers, key, Vec::new());
        self.put(batch, record);
    }

    /// Adds the record's new value (and its room's index entry) to `batch`.
    pub(crate) fn put(&self, batch: &mut Batch, record: &SessionRecord) {
        if let Some(room_id) = &record.room_id {
            batch.put(
                Table::WebchatRooms,
                room_id.as_bytes().to_vec(),
                record.id.as_bytes().to_vec(),
            );
        }
        batch.put(
            Table::WebchatSessions,
            record.id.as_bytes().to_vec(),
            serde_json::to_vec(record).expect("a session record serializes"),
        );
    }

    /// Changes a record under its customer's lock and writes it durably; returns the new
    /// record, or `None` when there is no such session. `change` returns whether it changed
    /// anything (nothing is written otherwise).
    pub(crate) async fn update(
        &self,
        id: &Uuid,
        extra: Batch,
        change: impl FnOnce(&mut SessionRecord) -> bool,
    ) -> Result<Option<SessionRecord>> {
        self.change(id, extra, change, Durability::Wait).await
    }

    /// As [`Sessions::update`], without waiting for the disk: for changes derived from the
    /// stream, which a consumer whose cursor is saved after them replays if a crash loses them
    /// (writes reach the disk in order, so the cursor never lands without them).
    pub(crate) async fn update_derived(
        &self,
        id: &Uuid,
        change: impl FnOnce(&mut SessionRecord) -> bool,
    ) -> Result<Option<SessionRecord>> {
        self.change(id, Batch::new(), change, Durability::Replayed)
            .await
    }

    async fn change(
        &self,
        id: &Uuid,
        extra: Batch,
        change: impl FnOnce(&mut SessionRecord) -> bool,
        durability: Durability,
    ) -> Result<Option<SessionRecord>> {
        let Some(record) = self.get(id)? else {
            return Ok(None);
        };
        let _held = self.lock(&record.customer).await;
        // Read again under the lock: another writer may have been first.
        let Some(mut record) = self.get(id)? else {
            return Ok(None);
        };
        let mut batch = extra;
        if change(&mut record) {
            record.updated_ms = crate::support::now_ms();
            self.put(&mut batch, &record);
        }
        if !batch.is_empty() {
            let ticket = self.store.write(batch)?;
            if durability == Durability::Wait {
                self.store.durable(ticket).await?;
            }
        }
        Ok(Some(record))
    }

    pub(crate) async fn write(&self, batch: Batch) -> Result<()> {
        Ok(self.store.write_durable(batch).await?)
    }
}

fn decode(bytes: &[u8]) -> Result<SessionRecord> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(&format!("a session record: {e}")))
}

fn corrupt(what: &str) -> Error {
    Error::internal(format!("corrupt web chat store: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(customer: &str, created_ms: u64) -> SessionRecord {
        SessionRecord {
            id: Uuid::new_v4(),
            customer: customer.into(),
            room_id: None,
            status: SessionStatus::Pending,
            created_ms,
            last_message_ms: created_ms,
            updated_ms: created_ms,
            status_pos: 0,
            closed_ms: None,
        }
    }

    #[tokio::test]
    async fn a_customers_sessions_come_newest_first_and_apart_from_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let sessions = Sessions::new(store);
        let (old, new) = (record("ana", 1_000), record("ana", 2_000));
        // A customer whose id extends ana's must not show up among hers.
        let other = record("ana2", 3_000);
        let mut batch = Batch::new();
        for r in [&old, &new, &other] {
            sessions.insert(&mut batch, r);
        }
        sessions.write(batch).await.unwrap();
        assert_eq!(
            sessions.list("ana", 10).unwrap(),
            vec![new.clone(), old.clone()]
        );
        assert_eq!(sessions.newest("ana").unwrap(), Some(new.clone()));
        assert_eq!(sessions.newest("nobody").unwrap(), None);

        let room: OwnedRoomId = "!r:x".try_into().unwrap();
        let updated = sessions
            .update(&old.id, Batch::new(), |r| {
                r.room_id = Some(room.clone());
                r.status = SessionStatus::Closed;
                true
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.status, SessionStatus::Closed);
        assert_eq!(sessions.by_room(&room).unwrap(), Some(old.id));
        assert_eq!(sessions.get(&old.id).unwrap(), Some(updated));
        assert!(
            sessions
                .update(&Uuid::new_v4(), Batch::new(), |_| true)
                .await
                .unwrap()
                .is_none()
        );
    }
}
