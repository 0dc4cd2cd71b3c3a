//! The bridge's own durable state, in a `charla-storage` store of its own (never charla's
//! store: the bridge also runs standalone), one table per kind of record:
//!
//! - `inbox`: accepted webhook bodies, by arrival number, until they are processed;
//! - `outbox`: agent actions to send to WhatsApp, by arrival number, until sent or refused;
//! - `portals`, `rooms`, `bsuids`: customer ↔ puppet ↔ portal room;
//! - `messages`, `events`: WhatsApp message id ↔ Matrix event (also the wamid dedupe);
//! - `deliveries`: the delivery state of each agent message (for the support API);
//! - `early_statuses`: statuses that arrived before their send was recorded, by wamid and
//!   arrival number (one entry per inbox round, so keeping more never rewrites what is there);
//! - `reactions`: reaction events, to remove them again;
//! - `last_inbound`: each portal's latest customer message (what an agent's receipt marks read);
//! - `portal_intents`: portals being created, written and synced before the room is asked for
//!   (see [`crate::portal_setup`]);
//! - `held`, `dead_letters`: customer messages the homeserver refused, waiting for a retry or
//!   kept aside for an operator (see [`crate::backlog`]);
//! - `shows`: send outcomes whose Matrix side (statuses that came early, a refusal's notice) is
//!   not shown yet, written with the job's removal (see [`crate::outbox`]; the outbox's
//!   records are read and written in [`crate::outbox_store`]).
//!
//! Values are JSON. A write is seen by readers at once; writes that must survive a crash are
//! waited for ([`Store::durable`]) before they are acknowledged. Waiting is a group commit of the
//! store's write-ahead log: it never flushes sled, whose every flush woke its seven I/O threads
//! (the bridge's main CPU cost besides its own work, see `docs/performance.md`, issue #5).
//!
//! The log is one sequence: a write on disk means every write before it is too. So a step may
//! leave its records unwaited when the only thing that depends on them is a later write of the
//! bridge (the inbox removal after a round, say); it must wait when something outside the
//! bridge (the homeserver, WhatsApp) acts on them next, or when it is the answer to that
//! outside action that would otherwise be lost: the portal intent before the room is created,
//! the job's removal together with its message link after WhatsApp's answer.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use charla_storage::{Batch, IVec, StorageError, TableSet, WriteTicket};
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::cloud::Status;

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
    PortalIntents,
    Held,
    DeadLetters,
    Shows,
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
        Table::PortalIntents,
        Table::Held,
        Table::DeadLetters,
        Table::Shows,
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
            Table::PortalIntents => "portal_intents",
            Table::Held => "held",
            Table::DeadLetters => "dead_letters",
            Table::Shows => "shows",
        }
    }
}

/// The counter that numbers inbox and outbox entries, in [`Table::Global`].
const SEQUENCE: &[u8] = b"seq";

/// The key prefix of a message's early statuses: the wamid and a separator no wamid contains.
fn early_prefix(wamid: &str) -> Vec<u8> {
    let mut key = wamid.as_bytes().to_vec();
    key.push(0);
    key
}

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
    /// Saved before the invitees (agents, the support bot) are invited: until they are, a
    /// replay of the customer's message invites them again (see [`crate::portal_setup`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setting_up: bool,
}

/// A portal being created: on disk before the room is asked for, so that a replay after a
/// crash looks for the room created before instead of creating a second one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortalIntent {
    /// The room, once the homeserver named it.
    pub room_id: Option<OwnedRoomId>,
    /// Milliseconds since the epoch of the first attempt.
    pub since_ms: u64,
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
    pub(crate) db: charla_storage::Store<Table>,
    /// Webhook bodies in the inbox (a gauge for operators, kept without scanning).
    inbox_waiting: Arc<AtomicU64>,
}

pub(crate) fn json(value: &impl Serialize) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        let db = charla_storage::Store::open(dir, 16)?;
        let waiting = db.scan_prefix(Table::Inbox, b"").count() as u64;
        Ok(Self {
            db,
            inbox_waiting: Arc::new(AtomicU64::new(waiting)),
        })
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>> {
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

    pub(crate) fn put(
        &self,
        table: Table,
        key: impl AsRef<[u8]>,
        value: &impl Serialize,
    ) -> Result<()> {
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

    pub(crate) fn next_seq(&self) -> Result<[u8; 8]> {
        Ok(self.db.increment(Table::Global, SEQUENCE, 1)?.to_be_bytes())
    }

    pub(crate) fn is_empty(&self, table: Table) -> bool {
        self.db.scan_prefix(table, b"").next().is_none()
    }

    // --- inbox -----------------------------------------------------------------------------

    /// Records an accepted webhook body durably; returns once it is on disk.
    pub async fn push_inbox(&self, body: &[u8]) -> Result<()> {
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
    pub fn inbox_batch(&self, limit: usize) -> Result<Vec<(IVec, IVec)>> {
        Ok(self
            .db
            .scan_prefix(Table::Inbox, b"")
            .take(limit)
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Adds the removal of processed webhooks to `batch` (written by the inbox worker with
    /// what the round held or set aside). Not waited for: a crash before it reaches the disk
    /// only means processing them again, and wamids are deduplicated.
    pub(crate) fn remove_inbox<'a>(
        &self,
        batch: &mut Batch<Table>,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> u64 {
        let mut removed = 0;
        for key in keys {
            batch.delete(Table::Inbox, key);
            removed += 1;
        }
        removed
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
    pub fn inbox_waiting(&self) -> u64 {
        self.inbox_waiting.load(Ordering::Relaxed)
    }

    /// Whether no webhook waits (cheap, unlike [`Store::inbox_len`]).
    pub fn inbox_is_empty(&self) -> bool {
        self.is_empty(Table::Inbox)
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
        let _ = self.db.write(Self::portal_batch(portal)?)?;
        Ok(())
    }

    fn portal_batch(portal: &Portal) -> Result<Batch<Table>> {
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
        Ok(batch)
    }

    /// The creation of the portal `key` that was started and not finished, if any.
    pub fn portal_intent(&self, key: &str) -> Result<Option<PortalIntent>> {
        self.get(Table::PortalIntents, key)
    }

    /// Records that the portal `key` is about to be created (or, with `room_id`, that its room
    /// exists). Durable once [`Store::durable`] returned for the ticket.
    pub fn record_portal_intent(&self, key: &str, intent: &PortalIntent) -> Result<WriteTicket> {
        let mut batch = Batch::new();
        batch.put(Table::PortalIntents, key, json(intent)?);
        Ok(self.db.write(batch)?)
    }

    /// Saves a newly created portal and ends its intent, in one write; durable once
    /// [`Store::durable`] returned for the ticket.
    pub fn save_new_portal(&self, portal: &Portal) -> Result<WriteTicket> {
        let mut batch = Self::portal_batch(portal)?;
        batch.delete(Table::PortalIntents, portal.key.as_bytes());
        Ok(self.db.write(batch)?)
    }

    // --- messages --------------------------------------------------------------------------

    pub fn message(&self, wamid: &str) -> Result<Option<MessageLink>> {
        self.get(Table::Messages, wamid)
    }

    pub fn wamid_of(&self, event_id: &str) -> Result<Option<String>> {
        self.get_string(Table::Events, event_id)
    }

    /// Links a customer's message to its event. Not waited for: the inbox removal of the
    /// webhook comes after it in the log, so a crash loses the link only with the removal, and
    /// the replay posts the same events again (wamid-derived txnIds) and links them.
    pub fn link_message(&self, wamid: &str, link: &MessageLink) -> Result<()> {
        let mut batch = Batch::new();
        Self::link_into(&mut batch, wamid, link)?;
        let _ = self.db.write(batch)?;
        Ok(())
    }

    pub(crate) fn link_into(
        batch: &mut Batch<Table>,
        wamid: &str,
        link: &MessageLink,
    ) -> Result<()> {
        batch.put(Table::Messages, wamid.as_bytes(), json(link)?);
        batch.put(Table::Events, link.event_id.as_bytes(), wamid.as_bytes());
        if link.inbound {
            batch.put(Table::LastInbound, link.portal.as_bytes(), wamid.as_bytes());
        }
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

    pub(crate) fn delivery_into(batch: &mut Batch<Table>, delivery: &Delivery) -> Result<()> {
        batch.put(
            Table::Deliveries,
            delivery.event_id.as_str(),
            json(delivery)?,
        );
        Ok(())
    }

    /// Keeps statuses of one message that is not linked yet, under a key of their own: a
    /// concurrent reader applying the ones kept before deletes only those it read.
    pub fn keep_early_statuses(&self, statuses: &[Status]) -> Result<()> {
        let Some(wamid) = statuses.first().map(|s| s.id.as_str()) else {
            return Ok(());
        };
        let mut key = early_prefix(wamid);
        key.extend_from_slice(&self.next_seq()?);
        self.put(Table::EarlyStatuses, key, &statuses)
    }

    /// The statuses kept for `wamid`, oldest first, with the keys to delete once applied
    /// ([`Store::statuses_applied`]). Also reads the one list per wamid of older versions.
    pub fn early_statuses(&self, wamid: &str) -> Result<(Vec<IVec>, Vec<Status>)> {
        let (mut keys, mut statuses) = (Vec::new(), Vec::new());
        if let Some(list) = self.db.get(Table::EarlyStatuses, wamid.as_bytes())? {
            statuses.extend(serde_json::from_slice::<Vec<Status>>(&list)?);
            keys.push(IVec::from(wamid.as_bytes()));
        }
        for item in self
            .db
            .scan_prefix(Table::EarlyStatuses, &early_prefix(wamid))
        {
            let (key, list) = item?;
            statuses.extend(serde_json::from_slice::<Vec<Status>>(&list)?);
            keys.push(key);
        }
        Ok((keys, statuses))
    }

    /// Saves the state statuses led to (if it changed) and deletes the early statuses among
    /// them, in one write: a crash in between cannot lose statuses that were not applied.
    pub fn statuses_applied(&self, delivery: Option<&Delivery>, early: &[IVec]) -> Result<()> {
        let mut batch = Batch::new();
        if let Some(delivery) = delivery {
            Self::delivery_into(&mut batch, delivery)?;
        }
        for key in early {
            batch.delete(Table::EarlyStatuses, key.as_ref());
        }
        if !batch.is_empty() {
            let _ = self.db.write(batch)?;
        }
        Ok(())
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
    use crate::outbox::Job;
    use crate::outbox_store::Answer;

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
        let removed = live.finish_job(&sent, Answer::Nothing, None).unwrap();
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
