//! The bridge's durable state, in a `charla-storage` store of its own (never charla's store:
//! the bridge also runs standalone), one table per kind of record:
//!
//! - `inbox`: mails the SMTP listener answered `250` for, by arrival number, until they are
//!   events in Matrix (or judged not to be: a bounce, an auto-reply);
//! - `portals`, `rooms`: conversation (thread) ↔ room, with what answers need to thread;
//! - `messages`: every Message-ID of a thread, inbound and outbound, to the conversation and
//!   event it belongs to (threading, the inbound dedupe, bounces);
//! - `outbox`: agents' messages to send, by arrival number, until the relay answered;
//! - `deliveries`: the delivery state of each agent message (for the room and the support API);
//! - `dead_letters`: mails the homeserver refused again and again, with its reason, kept for an
//!   operator instead of blocking the mails behind them.
//!
//! Values are JSON but for the inbox's mail, which is kept as it came (a 25 MB mail as a JSON
//! array of numbers would be four times as big). The log is one sequence: a write on disk means
//! every write before it is too (see `charla_storage`), so only the writes something outside
//! the bridge acts on next are waited for: a mail before the SMTP `250`, a job before the
//! appservice transaction is acknowledged.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use charla_storage::{Batch, StorageError, TableSet, WriteTicket};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::smtp::Envelope;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email bridge store: {0}")]
    Storage(#[from] StorageError),
    #[error("email bridge store: corrupt record: {0}")]
    Corrupt(String),
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        Self::Corrupt(error.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The bridge's tables. Append only: a table's place in [`TableSet::ALL`] is its key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Global,
    Inbox,
    Portals,
    Rooms,
    Messages,
    Outbox,
    Deliveries,
    DeadLetters,
}

impl TableSet for Table {
    const STORE: &'static str = "email";
    const ALL: &'static [Self] = &[
        Table::Global,
        Table::Inbox,
        Table::Portals,
        Table::Rooms,
        Table::Messages,
        Table::Outbox,
        Table::Deliveries,
        Table::DeadLetters,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Global => "global",
            Table::Inbox => "inbox",
            Table::Portals => "portals",
            Table::Rooms => "rooms",
            Table::Messages => "messages",
            Table::Outbox => "outbox",
            Table::Deliveries => "deliveries",
            Table::DeadLetters => "dead_letters",
        }
    }
}

const SEQUENCE: &[u8] = b"seq";

/// A mail taken in and not yet brought into Matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxMeta {
    pub envelope: Envelope,
    pub received_ms: u64,
}

/// One conversation: an email thread with one customer, and its room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Portal {
    /// The thread's key: derived from the Message-ID that opened it.
    pub key: String,
    pub room_id: OwnedRoomId,
    /// The customer's puppet (one per address, shared by their threads).
    pub puppet: OwnedUserId,
    /// Where answers go: the customer's `Reply-To`, else `From`.
    pub address: String,
    pub name: String,
    /// The thread's subject without `Re:`: answers say `Re: <subject>`.
    pub subject: String,
    /// The newest Message-ID of the thread (inbound or an answer): answers reply to it.
    pub last_message_id: Option<String>,
    /// The thread's `References`, oldest first, bounded (the first and the newest ones).
    pub references: Vec<String>,
    /// Saved before the invitees are invited, cleared once they are (`portal`).
    #[serde(default)]
    pub setting_up: bool,
}

/// Where a Message-ID belongs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageLink {
    pub portal: String,
    /// The Matrix event of the mail (the customer's message, or the agent's answer).
    pub event_id: Option<OwnedEventId>,
    /// Whether the desk sent it (an answer; a bounce of it marks it failed).
    pub outbound: bool,
}

/// An agent's message to send by mail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub portal: String,
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    /// Fixed when queued, so every attempt (and a resend after a crash) carries the same one.
    pub message_id: String,
    /// "Ana (Support)".
    pub from_name: String,
    pub text: String,
    pub html: Option<String>,
    pub attachments: Vec<JobAttachment>,
    /// A Matrix notice (the support bot's greeting): sent with `Auto-Submitted`.
    #[serde(default)]
    pub automatic: bool,
    pub queued_ms: u64,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobAttachment {
    pub mxc: String,
    pub filename: String,
    pub content_type: String,
}

/// The delivery state of an agent's message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    pub room_id: OwnedRoomId,
    /// `queued`, `sent` or `failed`.
    pub status: String,
    pub message_id: String,
    pub updated_ts: u64,
    /// The relay's (or the bounce's) reason, for `failed`.
    pub error: Option<String>,
}

/// The bridge's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: charla_storage::Store<Table>,
    /// Mails in the inbox: counted once at open, then kept, so that `/metrics` does not read
    /// every waiting mail (25 MB each, at worst) to count them.
    inbox_waiting: Arc<AtomicU64>,
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

    fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        match self.db.get(table, key.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Returns once the write behind `ticket`, and every write before it, is on disk.
    pub async fn durable(&self, ticket: WriteTicket) -> Result<()> {
        Ok(self.db.durable(ticket).await?)
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(&self) -> Result<()> {
        self.durable(self.db.latest_ticket()).await
    }

    /// What a backup of the process the bridge runs in takes this store through.
    pub fn backup_source(&self) -> charla_storage::BackupSource {
        self.db.backup_source()
    }

    fn next_seq(&self) -> Result<u64> {
        Ok(self.db.increment(Table::Global, SEQUENCE, 1)?)
    }

    // --- inbox ---

    /// Keeps a mail; durable once the ticket is.
    pub fn add_mail(&self, meta: &InboxMeta, raw: &[u8]) -> Result<WriteTicket> {
        let header = serde_json::to_vec(meta)?;
        let mut value = Vec::with_capacity(4 + header.len() + raw.len());
        value.extend_from_slice(&(header.len() as u32).to_be_bytes());
        value.extend_from_slice(&header);
        value.extend_from_slice(raw);
        let mut batch = Batch::new();
        batch.put(Table::Inbox, self.next_seq()?.to_be_bytes(), value);
        let ticket = self.db.write(batch)?;
        self.inbox_waiting.fetch_add(1, Ordering::Relaxed);
        Ok(ticket)
    }

    /// Up to `limit` mails, oldest first, and no more once `max_bytes` are read (the first
    /// mail always): (arrival number, meta, mail).
    pub fn inbox(&self, limit: usize, max_bytes: usize) -> Result<Vec<(u64, InboxMeta, Vec<u8>)>> {
        let mut mails = Vec::new();
        let mut bytes = 0;
        for item in self.db.scan_prefix(Table::Inbox, b"").take(limit) {
            if bytes >= max_bytes {
                break;
            }
            let (key, value) = item?;
            bytes += value.len();
            let seq = charla_storage::keys::trailing_u64(&key);
            let corrupt = || StoreError::Corrupt(format!("inbox mail {seq}"));
            let len = value
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(corrupt)?;
            let header = value.get(4..4 + len).ok_or_else(corrupt)?;
            let meta: InboxMeta = serde_json::from_slice(header)?;
            mails.push((seq, meta, value[4 + len..].to_vec()));
        }
        Ok(mails)
    }

    /// Mails taken in and not yet brought into Matrix (or set aside).
    pub fn inbox_len(&self) -> usize {
        self.inbox_waiting.load(Ordering::Relaxed) as usize
    }

    /// Removes a mail with `batch`; call [`Store::mail_removed`] once it is written.
    pub fn remove_mail(&self, batch: &mut Batch<Table>, seq: u64) {
        batch.delete(Table::Inbox, seq.to_be_bytes());
    }

    pub fn mail_removed(&self) {
        let _ = self
            .inbox_waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Moves a mail the homeserver keeps refusing out of the inbox, kept whole for an operator.
    pub fn set_aside(&self, seq: u64, error: &str) -> Result<()> {
        let Some(value) = self.db.get(Table::Inbox, &seq.to_be_bytes())? else {
            return Ok(());
        };
        let mut batch = Batch::new();
        let mut kept = Vec::with_capacity(value.len() + error.len() + 4);
        kept.extend_from_slice(&(error.len() as u32).to_be_bytes());
        kept.extend_from_slice(error.as_bytes());
        kept.extend_from_slice(&value);
        batch.put(Table::DeadLetters, seq.to_be_bytes(), kept);
        batch.delete(Table::Inbox, seq.to_be_bytes());
        let _ = self.db.write(batch)?;
        self.mail_removed();
        Ok(())
    }

    pub fn dead_letters(&self) -> usize {
        self.db.scan_prefix(Table::DeadLetters, b"").count()
    }

    // --- portals and threads ---

    pub fn portal(&self, key: &str) -> Result<Option<Portal>> {
        self.get(Table::Portals, key)
    }

    pub fn portal_by_room(&self, room_id: &ruma::RoomId) -> Result<Option<Portal>> {
        match self.db.get(Table::Rooms, room_id.as_bytes())? {
            Some(key) => self.portal(&String::from_utf8_lossy(&key)),
            None => Ok(None),
        }
    }

    pub fn save_portal(&self, batch: &mut Batch<Table>, portal: &Portal) -> Result<()> {
        batch.put(
            Table::Portals,
            portal.key.as_bytes(),
            serde_json::to_vec(portal)?,
        );
        batch.put(
            Table::Rooms,
            portal.room_id.as_bytes(),
            portal.key.as_bytes(),
        );
        Ok(())
    }

    pub fn message(&self, message_id: &str) -> Result<Option<MessageLink>> {
        self.get(Table::Messages, message_id)
    }

    pub fn link_message(
        &self,
        batch: &mut Batch<Table>,
        message_id: &str,
        link: &MessageLink,
    ) -> Result<()> {
        batch.put(
            Table::Messages,
            message_id.as_bytes(),
            serde_json::to_vec(link)?,
        );
        Ok(())
    }

    pub fn write(&self, batch: Batch<Table>) -> Result<WriteTicket> {
        Ok(self.db.write(batch)?)
    }

    // --- outbox ---

    /// Queues a job with its `queued` delivery state; durable once the ticket is.
    pub fn enqueue(&self, job: &Job) -> Result<WriteTicket> {
        let mut batch = Batch::new();
        batch.put(
            Table::Outbox,
            self.next_seq()?.to_be_bytes(),
            serde_json::to_vec(job)?,
        );
        let delivery = Delivery {
            room_id: job.room_id.clone(),
            status: "queued".into(),
            message_id: job.message_id.clone(),
            updated_ts: job.queued_ms,
            error: None,
        };
        self.put_delivery(&mut batch, &job.event_id, &delivery)?;
        self.link_message(
            &mut batch,
            &job.message_id,
            &MessageLink {
                portal: job.portal.clone(),
                event_id: Some(job.event_id.clone()),
                outbound: true,
            },
        )?;
        self.write(batch)
    }

    /// Up to `limit` queued jobs, oldest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<(u64, Job)>> {
        let mut jobs = Vec::new();
        for item in self.db.scan_prefix(Table::Outbox, b"").take(limit) {
            let (key, value) = item?;
            jobs.push((
                charla_storage::keys::trailing_u64(&key),
                serde_json::from_slice(&value)?,
            ));
        }
        Ok(jobs)
    }

    pub fn outbox_len(&self) -> usize {
        self.db.scan_prefix(Table::Outbox, b"").count()
    }

    pub fn update_job(&self, seq: u64, job: &Job) -> Result<WriteTicket> {
        let mut batch = Batch::new();
        batch.put(Table::Outbox, seq.to_be_bytes(), serde_json::to_vec(job)?);
        self.write(batch)
    }

    pub fn remove_job(&self, batch: &mut Batch<Table>, seq: u64) {
        batch.delete(Table::Outbox, seq.to_be_bytes());
    }

    // --- deliveries ---

    pub fn delivery(&self, event_id: &ruma::EventId) -> Result<Option<Delivery>> {
        self.get(Table::Deliveries, event_id.as_str())
    }

    pub fn put_delivery(
        &self,
        batch: &mut Batch<Table>,
        event_id: &ruma::EventId,
        delivery: &Delivery,
    ) -> Result<()> {
        batch.put(
            Table::Deliveries,
            event_id.as_bytes(),
            serde_json::to_vec(delivery)?,
        );
        Ok(())
    }
}
