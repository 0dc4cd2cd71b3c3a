//! The bridge's own durable state, in its own sled database (never charla's store):
//!
//! - `inbox`: accepted webhook bodies, by arrival number, until they are processed;
//! - `outbox`: agent actions to send to WhatsApp, by arrival number, until sent or refused;
//! - `portals`, `rooms`, `bsuids`: customer ↔ puppet ↔ portal room;
//! - `messages`, `events`: WhatsApp message id ↔ Matrix event (also the wamid dedupe);
//! - `deliveries`: the delivery state of each agent message (for the support API);
//! - `early_statuses`: statuses that arrived before their send was recorded;
//! - `reactions`: reaction events, to remove them again;
//! - `last_inbound`: each portal's latest customer message (what an agent's receipt marks read).
//!
//! Values are JSON. Writes that must survive a crash are flushed before they are acknowledged.

use std::path::Path;

use appservice::GroupFlush;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::cloud::Status;
use crate::outbox::Job;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bridge store: {0}")]
    Sled(#[from] sled::Error),
    #[error("bridge store: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A customer and their portal room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Portal {
    /// The key of the customer: the wa_id, or `bsuid:<user_id>` when no phone is known.
    pub key: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub name: String,
    pub puppet: OwnedUserId,
    pub room_id: OwnedRoomId,
}

/// A WhatsApp message and the Matrix event it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageLink {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    /// From the customer (true) or from an agent (false).
    pub inbound: bool,
    pub portal: String,
}

/// The delivery state of an agent's message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub wamid: Option<String>,
    /// `queued`, `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    /// Milliseconds since the epoch of the last change.
    pub updated_ts: u64,
    /// WhatsApp's error code and reason, for `failed`.
    pub error_code: Option<i64>,
    pub error: Option<String>,
}

/// The bridge's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Durability waits go through this, never sled's `flush_async` (see [`GroupFlush`]).
    flusher: GroupFlush,
    inbox: sled::Tree,
    outbox: sled::Tree,
    portals: sled::Tree,
    rooms: sled::Tree,
    bsuids: sled::Tree,
    messages: sled::Tree,
    events: sled::Tree,
    deliveries: sled::Tree,
    early_statuses: sled::Tree,
    reactions: sled::Tree,
    last_inbound: sled::Tree,
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: impl AsRef<[u8]>) -> Result<Option<T>> {
    match tree.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
        None => Ok(None),
    }
}

fn put(tree: &sled::Tree, key: impl AsRef<[u8]>, value: &impl Serialize) -> Result<()> {
    tree.insert(key.as_ref(), serde_json::to_vec(value)?)?;
    Ok(())
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 * 1024 * 1024)
            .open()?;
        let tree = |name: &str| db.open_tree(name);
        Ok(Self {
            inbox: tree("inbox")?,
            outbox: tree("outbox")?,
            portals: tree("portals")?,
            rooms: tree("rooms")?,
            bsuids: tree("bsuids")?,
            messages: tree("messages")?,
            events: tree("events")?,
            deliveries: tree("deliveries")?,
            early_statuses: tree("early_statuses")?,
            reactions: tree("reactions")?,
            last_inbound: tree("last_inbound")?,
            flusher: GroupFlush::new(db.clone(), "whatsapp-flusher").map_err(sled::Error::Io)?,
            db,
        })
    }

    /// Returns once everything written before the call is on disk; concurrent callers share
    /// one flush.
    pub async fn flush(&self) -> Result<()> {
        self.flusher.flush().await?;
        Ok(())
    }

    fn next_seq(&self) -> Result<[u8; 8]> {
        Ok(self.db.generate_id()?.to_be_bytes())
    }

    // --- inbox -----------------------------------------------------------------------------

    /// Records an accepted webhook body durably; returns once it is on disk.
    pub async fn push_inbox(&self, body: &[u8]) -> Result<()> {
        self.inbox.insert(self.next_seq()?, body)?;
        self.flush().await
    }

    /// Up to `limit` webhook bodies, oldest first, with their keys.
    pub fn inbox_batch(&self, limit: usize) -> Result<Vec<(sled::IVec, sled::IVec)>> {
        Ok(self
            .inbox
            .iter()
            .take(limit)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub fn remove_inbox(&self, key: &[u8]) -> Result<()> {
        self.inbox.remove(key)?;
        Ok(())
    }

    /// Counts the waiting webhooks (a scan: for tests and reports).
    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    /// Whether no webhook waits (cheap, unlike [`Store::inbox_len`]).
    pub fn inbox_is_empty(&self) -> bool {
        self.inbox.is_empty()
    }

    // --- outbox ----------------------------------------------------------------------------

    /// Queues a job; returns its key. Durable once the caller flushed.
    pub fn push_outbox_unflushed(&self, job: &Job) -> Result<[u8; 8]> {
        let key = self.next_seq()?;
        put(&self.outbox, key, job)?;
        Ok(key)
    }

    /// Every queued job, oldest first.
    pub fn outbox_jobs(&self) -> Result<Vec<([u8; 8], Job)>> {
        let mut jobs = Vec::new();
        for item in self.outbox.iter() {
            let (k, v) = item?;
            let mut key = [0u8; 8];
            key.copy_from_slice(&k);
            jobs.push((key, serde_json::from_slice(&v)?));
        }
        Ok(jobs)
    }

    pub fn update_outbox(&self, key: &[u8; 8], job: &Job) -> Result<()> {
        put(&self.outbox, key, job)
    }

    /// Whether a job is still queued.
    pub fn outbox_has(&self, key: &[u8; 8]) -> bool {
        self.outbox.contains_key(key).unwrap_or(true)
    }

    /// Removes a job; the caller flushes.
    pub fn remove_outbox_unflushed(&self, key: &[u8; 8]) -> Result<()> {
        self.outbox.remove(key)?;
        Ok(())
    }

    /// Counts the queued jobs (a scan: for tests and reports).
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether no job is queued (cheap, unlike [`Store::outbox_len`]).
    pub fn outbox_is_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    // --- portals ---------------------------------------------------------------------------

    pub fn portal(&self, key: &str) -> Result<Option<Portal>> {
        get(&self.portals, key)
    }

    pub fn portal_by_room(&self, room_id: &str) -> Result<Option<Portal>> {
        match self.rooms.get(room_id)? {
            Some(key) => get(&self.portals, key),
            None => Ok(None),
        }
    }

    /// The portal key a business-scoped user id was seen with.
    pub fn key_of_bsuid(&self, user_id: &str) -> Result<Option<String>> {
        Ok(self
            .bsuids
            .get(user_id)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn save_portal(&self, portal: &Portal) -> Result<()> {
        put(&self.portals, &portal.key, portal)?;
        self.rooms
            .insert(portal.room_id.as_str(), portal.key.as_bytes())?;
        if let Some(user_id) = &portal.user_id {
            self.bsuids
                .insert(user_id.as_str(), portal.key.as_bytes())?;
        }
        Ok(())
    }

    // --- messages --------------------------------------------------------------------------

    pub fn message(&self, wamid: &str) -> Result<Option<MessageLink>> {
        get(&self.messages, wamid)
    }

    pub fn wamid_of(&self, event_id: &str) -> Result<Option<String>> {
        Ok(self
            .events
            .get(event_id)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn link_message(&self, wamid: &str, link: &MessageLink) -> Result<()> {
        put(&self.messages, wamid, link)?;
        self.events
            .insert(link.event_id.as_str(), wamid.as_bytes())?;
        if link.inbound {
            self.last_inbound
                .insert(link.portal.as_str(), wamid.as_bytes())?;
        }
        Ok(())
    }

    /// The customer's latest message in a portal.
    pub fn last_inbound(&self, portal: &str) -> Result<Option<String>> {
        Ok(self
            .last_inbound
            .get(portal)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    // --- deliveries ------------------------------------------------------------------------

    pub fn delivery(&self, event_id: &str) -> Result<Option<Delivery>> {
        get(&self.deliveries, event_id)
    }

    pub fn save_delivery(&self, delivery: &Delivery) -> Result<()> {
        put(&self.deliveries, delivery.event_id.as_str(), delivery)
    }

    /// Keeps a status whose message is not linked yet; returns them all once it is.
    pub fn keep_early_status(&self, status: &Status) -> Result<()> {
        let mut list: Vec<Status> = get(&self.early_statuses, &status.id)?.unwrap_or_default();
        list.push(status.clone());
        put(&self.early_statuses, &status.id, &list)
    }

    pub fn take_early_statuses(&self, wamid: &str) -> Result<Vec<Status>> {
        match self.early_statuses.remove(wamid)? {
            Some(v) => Ok(serde_json::from_slice(&v)?),
            None => Ok(Vec::new()),
        }
    }

    // --- reactions -------------------------------------------------------------------------

    /// The Matrix reaction event of a customer's reaction to `target` (a wamid).
    pub fn customer_reaction(&self, portal: &str, target: &str) -> Result<Option<OwnedEventId>> {
        get(&self.reactions, format!("in\0{portal}\0{target}"))
    }

    pub fn set_customer_reaction(
        &self,
        portal: &str,
        target: &str,
        event: Option<&OwnedEventId>,
    ) -> Result<()> {
        let key = format!("in\0{portal}\0{target}");
        match event {
            Some(event) => put(&self.reactions, key, event),
            None => self.reactions.remove(key).map(drop).map_err(Into::into),
        }
    }

    /// The wamid an agent's reaction event reacted to.
    pub fn agent_reaction_target(&self, reaction_event: &str) -> Result<Option<String>> {
        get(&self.reactions, format!("out\0{reaction_event}"))
    }

    pub fn set_agent_reaction_target(&self, reaction_event: &str, target: &str) -> Result<()> {
        put(&self.reactions, format!("out\0{reaction_event}"), &target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of webhooks, each stored and flushed before its 200, alongside agent actions
    /// queued the same way: with sled's `flush_async` this deadlocked the whole process
    /// (spacejam/sled#1308) and the `whatsapp` bench scenario hung. Every body must be in the
    /// inbox, and still there after reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_durable_writes_completes_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut writers = tokio::task::JoinSet::new();
            for i in 0..256u32 {
                let store = store.clone();
                writers
                    .spawn(async move { store.push_inbox(format!("body {i}").as_bytes()).await });
            }
            // A liveness bound, not a speed one: the deadlock never ends.
            let all = tokio::time::timeout(std::time::Duration::from_secs(120), writers.join_all())
                .await
                .expect("durable writes deadlocked");
            assert!(all.iter().all(|r| r.is_ok()));
            assert_eq!(store.inbox_len(), 256);
        }
        let store = reopen(dir.path());
        let mut bodies: Vec<String> = store
            .inbox_batch(1000)
            .unwrap()
            .into_iter()
            .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
            .collect();
        bodies.sort_by_key(|b| b[5..].parse::<u32>().unwrap());
        let expected: Vec<String> = (0..256).map(|i| format!("body {i}")).collect();
        assert_eq!(bodies, expected);
    }

    /// Reopens once the dropped store's file lock is free.
    fn reopen(dir: &Path) -> Store {
        for _ in 0..300 {
            if let Ok(store) = Store::open(dir) {
                return store;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the bridge store stayed locked after it was dropped");
    }
}
