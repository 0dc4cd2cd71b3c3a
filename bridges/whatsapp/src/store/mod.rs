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
//!   (the `portal_setup` module says why);
//! - `held`, `dead_letters`: customer messages the homeserver refused, waiting for a retry or
//!   kept aside for an operator (the inbox's `backlog`);
//! - `shows`: send outcomes whose Matrix side (statuses that came early, a refusal's notice) is
//!   not shown yet, written with the job's removal (the `outbox` module says why).
//!
//! One file per kind of record, with its types and the store's methods for it: [`inbox`],
//! [`portals`], [`messages`] (links, deliveries, early statuses, reactions), [`outbox`] (jobs
//! and what WhatsApp's answers leave to show) and [`held`]. This module is the bottom of the
//! bridge: it knows the Cloud API's wire types (`crate::cloud`) and nothing else of the bridge,
//! so the workers that use it can change without touching what is on disk.
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

mod held;
mod inbox;
mod messages;
mod outbox;
mod portals;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use charla_storage::{Batch, StorageError, TableSet, WriteTicket};
use serde::{Serialize, de::DeserializeOwned};

pub use held::{DeadLetter, HeldItem, HeldKey};
pub use inbox::InboxKey;
pub use messages::{Delivery, EarlyStatusKey, MessageLink};
pub use outbox::{Action, Answer, Job, OutboxKey, Shown};
pub use portals::{Portal, PortalIntent};

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

/// An arrival number: the key of the queue tables (inbox, outbox, shows, dead letters), big
/// endian so that keys sort in arrival order.
pub type Seq = [u8; 8];

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

    /// What a backup of the process the bridge runs in takes this store through.
    pub fn backup_source(&self) -> charla_storage::BackupSource {
        self.db.backup_source()
    }

    /// Returns once the write behind `ticket`, and every write before it, is on disk.
    pub async fn durable(&self, ticket: WriteTicket) -> Result<()> {
        Ok(self.db.durable(ticket).await?)
    }

    /// Returns once everything written before the call is on disk; concurrent callers share
    /// one sync.
    pub(crate) async fn flush(&self) -> Result<()> {
        self.durable(self.db.latest_ticket()).await
    }

    pub(crate) fn next_seq(&self) -> Result<Seq> {
        Ok(self.db.increment(Table::Global, SEQUENCE, 1)?.to_be_bytes())
    }

    pub(crate) fn is_empty(&self, table: Table) -> bool {
        self.db.scan_prefix(table, b"").next().is_none()
    }

    /// The records of a table keyed by arrival number, oldest first.
    fn numbered<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(Seq, T)>> {
        let mut records = Vec::new();
        for item in self.db.scan_prefix(table, b"") {
            let (k, v) = item?;
            records.push((seq_of(&k), serde_json::from_slice(&v)?));
        }
        Ok(records)
    }
}

/// The arrival number a queue table's key holds (zero-padded if a damaged key is short).
fn seq_of(key: &[u8]) -> Seq {
    let mut seq = [0u8; 8];
    let n = key.len().min(8);
    seq[..n].copy_from_slice(&key[..n]);
    seq
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
            action: Action::MarkRead { wamid: text.into() },
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
