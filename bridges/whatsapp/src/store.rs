//! The bridge's own durable state, in a `charla-storage` store of its own (never charla's
//! store: the bridge also runs standalone), one table per kind of record:
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
//! Values are JSON. A write is seen by readers at once; writes that must survive a crash are
//! waited for ([`Store::durable`]) before they are acknowledged. Waiting is a group commit of the
//! store's write-ahead log: it never flushes sled, whose every flush woke its seven I/O threads
//! (the bridge's main CPU cost besides its own work, see `docs/performance.md`, issue #5).

use std::path::Path;

use charla_storage::{Batch, IVec, StorageError, TableSet, WriteTicket};
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::cloud::Status;
use crate::outbox::{Job, OutboxKey};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bridge store: {0}")]
    Storage(#[from] StorageError),
    #[error("bridge store: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The bridge's tables (see the module documentation). Append only: a table's place in
/// [`TableSet::ALL`] is its key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Counters: the arrival number of inbox and outbox entries.
    Global,
    Inbox,
    Outbox,
    Portals,
    Rooms,
    Bsuids,
    Messages,
    Events,
    Deliveries,
    EarlyStatuses,
    Reactions,
    LastInbound,
}

impl TableSet for Table {
    const STORE: &'static str = "whatsapp";
    const ALL: &'static [Self] = &[
        Table::Global,
        Table::Inbox,
        Table::Outbox,
        Table::Portals,
        Table::Rooms,
        Table::Bsuids,
        Table::Messages,
        Table::Events,
        Table::Deliveries,
        Table::EarlyStatuses,
        Table::Reactions,
        Table::LastInbound,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Global => "global",
            Table::Inbox => "inbox",
            Table::Outbox => "outbox",
            Table::Portals => "portals",
            Table::Rooms => "rooms",
            Table::Bsuids => "bsuids",
            Table::Messages => "messages",
            Table::Events => "events",
            Table::Deliveries => "deliveries",
            Table::EarlyStatuses => "early_statuses",
            Table::Reactions => "reactions",
            Table::LastInbound => "last_inbound",
        }
    }
}

/// The counter that numbers inbox and outbox entries, in [`Table::Global`].
const SEQUENCE: &[u8] = b"seq";

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
    /// The language of the room's conversation (`io.charla.conversation`), if one was set.
    #[serde(default)]
    pub language: Option<String>,
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

impl Delivery {
    /// An agent's message not sent (or not known to be sent) yet.
    pub fn queued(room_id: &RoomId, event_id: &EventId, wamid: Option<&str>) -> Self {
        Self {
            room_id: room_id.to_owned(),
            event_id: event_id.to_owned(),
            wamid: wamid.map(str::to_owned),
            status: "queued".into(),
            updated_ts: crate::now_ms(),
            error_code: None,
            error: None,
        }
    }
}

/// The bridge's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: charla_storage::Store<Table>,
}

fn json(value: &impl Serialize) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            db: charla_storage::Store::open(dir, 16)?,
        })
    }

    fn get<T: DeserializeOwned>(&self, table: Table, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        match self.db.get(table, key.as_ref())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    fn get_string(&self, table: Table, key: &str) -> Result<Option<String>> {
        Ok(self
            .db
            .get(table, key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn put(&self, table: Table, key: impl AsRef<[u8]>, value: &impl Serialize) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(table, key.as_ref(), json(value)?);
        let _ = self.db.write(batch)?;
        Ok(())
    }

    /// Returns once the write behind `ticket`, and every write before it, is on disk.
    pub async fn durable(&self, ticket: WriteTicket) -> Result<()> {
        Ok(self.db.durable(ticket).await?)
    }

    /// Returns once everything written before the call is on disk; concurrent callers share
    /// one sync.
    pub async fn flush(&self) -> Result<()> {
        self.durable(self.db.latest_ticket()).await
    }

    fn next_seq(&self) -> Result<OutboxKey> {
        Ok(self.db.increment(Table::Global, SEQUENCE, 1)?.to_be_bytes())
    }

    fn is_empty(&self, table: Table) -> bool {
        self.db.scan_prefix(table, b"").next().is_none()
    }

    // --- inbox -----------------------------------------------------------------------------

    /// Records an accepted webhook body durably; returns once it is on disk.
    pub async fn push_inbox(&self, body: &[u8]) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(Table::Inbox, self.next_seq()?, body);
        Ok(self.db.write_durable(batch).await?)
    }

    /// Up to `limit` webhook bodies, oldest first, with their keys.
    pub fn inbox_batch(&self, limit: usize) -> Result<Vec<(IVec, IVec)>> {
        Ok(self
            .db
            .scan_prefix(Table::Inbox, b"")
            .take(limit)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Removes processed webhooks, in one write. Not waited for: a crash before it reaches the
    /// disk only means processing them again, and wamids are deduplicated.
    pub fn remove_inbox<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        let mut batch = Batch::new();
        for key in keys {
            batch.delete(Table::Inbox, key);
        }
        let _ = self.db.write(batch)?;
        Ok(())
    }

    /// Counts the waiting webhooks (a scan: for tests and reports).
    pub fn inbox_len(&self) -> usize {
        self.db.scan_prefix(Table::Inbox, b"").count()
    }

    /// Whether no webhook waits (cheap, unlike [`Store::inbox_len`]).
    pub fn inbox_is_empty(&self) -> bool {
        self.is_empty(Table::Inbox)
    }

    // --- outbox ----------------------------------------------------------------------------

    /// Queues a job, and with it the delivery record of its message, in one write. The job is
    /// durable once [`Store::durable`] returned for the ticket.
    pub fn push_outbox(
        &self,
        job: &Job,
        delivery: Option<&Delivery>,
    ) -> Result<(OutboxKey, WriteTicket)> {
        let key = self.next_seq()?;
        let mut batch = Batch::new();
        if let Some(delivery) = delivery {
            batch.put(
                Table::Deliveries,
                delivery.event_id.as_str(),
                json(delivery)?,
            );
        }
        batch.put(Table::Outbox, key, json(job)?);
        Ok((key, self.db.write(batch)?))
    }

    /// Every queued job, oldest first.
    pub fn outbox_jobs(&self) -> Result<Vec<(OutboxKey, Job)>> {
        let mut jobs = Vec::new();
        for item in self.db.scan_prefix(Table::Outbox, b"") {
            let (k, v) = item?;
            let mut key = [0u8; 8];
            key.copy_from_slice(&k);
            jobs.push((key, serde_json::from_slice(&v)?));
        }
        Ok(jobs)
    }

    pub fn update_outbox(&self, key: &OutboxKey, job: &Job) -> Result<()> {
        self.put(Table::Outbox, key, job)
    }

    /// Whether a job is still queued.
    pub fn outbox_has(&self, key: &OutboxKey) -> bool {
        self.db.contains(Table::Outbox, key).unwrap_or(true)
    }

    /// Removes a job; it is gone for good once [`Store::durable`] returned for the ticket.
    pub fn remove_outbox(&self, key: &OutboxKey) -> Result<WriteTicket> {
        let mut batch = Batch::new();
        batch.delete(Table::Outbox, key.as_slice());
        Ok(self.db.write(batch)?)
    }

    /// Counts the queued jobs (a scan: for tests and reports).
    pub fn outbox_len(&self) -> usize {
        self.db.scan_prefix(Table::Outbox, b"").count()
    }

    /// Whether no job is queued (cheap, unlike [`Store::outbox_len`]).
    pub fn outbox_is_empty(&self) -> bool {
        self.is_empty(Table::Outbox)
    }

    // --- portals ---------------------------------------------------------------------------

    pub fn portal(&self, key: &str) -> Result<Option<Portal>> {
        self.get(Table::Portals, key)
    }

    pub fn portal_by_room(&self, room_id: &str) -> Result<Option<Portal>> {
        match self.db.get(Table::Rooms, room_id.as_bytes())? {
            Some(key) => self.get(Table::Portals, key),
            None => Ok(None),
        }
    }

    /// The portal key a business-scoped user id was seen with.
    pub fn key_of_bsuid(&self, user_id: &str) -> Result<Option<String>> {
        self.get_string(Table::Bsuids, user_id)
    }

    pub fn save_portal(&self, portal: &Portal) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(Table::Portals, portal.key.as_bytes(), json(portal)?);
        batch.put(
            Table::Rooms,
            portal.room_id.as_bytes(),
            portal.key.as_bytes(),
        );
        if let Some(user_id) = &portal.user_id {
            batch.put(Table::Bsuids, user_id.as_bytes(), portal.key.as_bytes());
        }
        let _ = self.db.write(batch)?;
        Ok(())
    }

    // --- messages --------------------------------------------------------------------------

    pub fn message(&self, wamid: &str) -> Result<Option<MessageLink>> {
        self.get(Table::Messages, wamid)
    }

    pub fn wamid_of(&self, event_id: &str) -> Result<Option<String>> {
        self.get_string(Table::Events, event_id)
    }

    pub fn link_message(&self, wamid: &str, link: &MessageLink) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(Table::Messages, wamid.as_bytes(), json(link)?);
        batch.put(Table::Events, link.event_id.as_bytes(), wamid.as_bytes());
        if link.inbound {
            batch.put(Table::LastInbound, link.portal.as_bytes(), wamid.as_bytes());
        }
        let _ = self.db.write(batch)?;
        Ok(())
    }

    /// The customer's latest message in a portal.
    pub fn last_inbound(&self, portal: &str) -> Result<Option<String>> {
        self.get_string(Table::LastInbound, portal)
    }

    // --- deliveries ------------------------------------------------------------------------

    pub fn delivery(&self, event_id: &str) -> Result<Option<Delivery>> {
        self.get(Table::Deliveries, event_id)
    }

    pub fn save_delivery(&self, delivery: &Delivery) -> Result<()> {
        self.put(Table::Deliveries, delivery.event_id.as_str(), delivery)
    }

    /// Keeps statuses of one message that is not linked yet; returns them all once it is.
    pub fn keep_early_statuses(&self, statuses: &[Status]) -> Result<()> {
        let Some(wamid) = statuses.first().map(|s| s.id.as_str()) else {
            return Ok(());
        };
        let mut list: Vec<Status> = self.get(Table::EarlyStatuses, wamid)?.unwrap_or_default();
        list.extend_from_slice(statuses);
        self.put(Table::EarlyStatuses, wamid, &list)
    }

    pub fn take_early_statuses(&self, wamid: &str) -> Result<Vec<Status>> {
        match self.db.take(Table::EarlyStatuses, wamid.as_bytes())? {
            Some((v, _ticket)) => Ok(serde_json::from_slice(&v)?),
            None => Ok(Vec::new()),
        }
    }

    // --- reactions -------------------------------------------------------------------------

    /// The Matrix reaction event of a customer's reaction to `target` (a wamid).
    pub fn customer_reaction(&self, portal: &str, target: &str) -> Result<Option<OwnedEventId>> {
        self.get(Table::Reactions, format!("in\0{portal}\0{target}"))
    }

    pub fn set_customer_reaction(
        &self,
        portal: &str,
        target: &str,
        event: Option<&OwnedEventId>,
    ) -> Result<()> {
        let key = format!("in\0{portal}\0{target}");
        match event {
            Some(event) => self.put(Table::Reactions, key, event),
            None => {
                let mut batch = Batch::new();
                batch.delete(Table::Reactions, key);
                let _ = self.db.write(batch)?;
                Ok(())
            }
        }
    }

    /// The wamid an agent's reaction event reacted to.
    pub fn agent_reaction_target(&self, reaction_event: &str) -> Result<Option<String>> {
        self.get(Table::Reactions, format!("out\0{reaction_event}"))
    }

    pub fn set_agent_reaction_target(&self, reaction_event: &str, target: &str) -> Result<()> {
        self.put(Table::Reactions, format!("out\0{reaction_event}"), &target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of webhooks, each made durable before its 200, alongside agent actions queued
    /// the same way: with sled's `flush_async` this deadlocked the whole process
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
        let store = Store::open(dir.path()).unwrap();
        // Numbered in the order the writers got there, not the order they were spawned in.
        let mut bodies = inbox_bodies(&store);
        bodies.sort();
        assert_eq!(bodies, (0..256).collect::<Vec<_>>());
    }

    /// What `kill -9` leaves behind (the folder of the running store): every webhook answered
    /// 200 and every job waited for is there, a removal waited for is gone, and the arrival
    /// numbers go on after the last one used.
    #[tokio::test]
    async fn acknowledged_webhooks_and_jobs_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let live = Store::open(&dir.path().join("live")).unwrap();
        for i in 0..3u32 {
            live.push_inbox(format!("body {i}").as_bytes())
                .await
                .unwrap();
        }
        let job = |text: &str| Job {
            portal: "15551234567".into(),
            room_id: ruma::owned_room_id!("!portal:localhost"),
            event_id: None,
            action: crate::outbox::Action::MarkRead { wamid: text.into() },
            attempts: 0,
            told_pending: false,
        };
        let (sent, _) = live.push_outbox(&job("wamid.1"), None).unwrap();
        let (_, queued) = live.push_outbox(&job("wamid.2"), None).unwrap();
        live.durable(queued).await.unwrap();
        let removed = live.remove_outbox(&sent).unwrap();
        live.durable(removed).await.unwrap();

        charla_storage::copy_crash_image(&dir.path().join("live"), &dir.path().join("crash"))
            .unwrap();
        let recovered = Store::open(&dir.path().join("crash")).unwrap();
        assert_eq!(inbox_bodies(&recovered), vec![0, 1, 2]);
        let jobs = recovered.outbox_jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].1, job("wamid.2"));
        let (next, _) = recovered.push_outbox(&job("wamid.3"), None).unwrap();
        assert!(next > jobs[0].0, "arrival numbers are not reused");
    }

    /// The numbers in the inbox's bodies, oldest first.
    fn inbox_bodies(store: &Store) -> Vec<u32> {
        store
            .inbox_batch(1000)
            .unwrap()
            .into_iter()
            .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap()[5..].parse().unwrap())
            .collect()
    }
}
