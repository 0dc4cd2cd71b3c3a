//! The outbox's records: queued jobs (`outbox`), and what WhatsApp's answer to a job leaves
//! to show in Matrix (`shows`), written with the job's removal. The `outbox` module says how
//! they are sent.

use charla_storage::{Batch, WriteTicket};
use ruma::{EventId, OwnedEventId, OwnedRoomId};
use serde::{Deserialize, Serialize};

use super::{Delivery, MessageLink, Result, Seq, Store, Table, json};
use crate::cloud::send::MessageBody;

/// One thing to do on WhatsApp for a portal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub portal: String,
    pub room_id: OwnedRoomId,
    /// The agent's event, for messages (not for read marks).
    pub event_id: Option<OwnedEventId>,
    pub action: Action,
    #[serde(default)]
    pub attempts: u32,
    /// Whether the agents were told this message is pending.
    #[serde(default)]
    pub told_pending: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A message whose body is complete (text, location, reaction, template).
    Message {
        body: MessageBody,
        reply_to: Option<String>,
    },
    /// A file on the homeserver, uploaded to WhatsApp when sent.
    Media {
        msgtype: String,
        url: String,
        mimetype: String,
        filename: String,
        caption: Option<String>,
        reply_to: Option<String>,
    },
    /// Marks a customer's message (and the ones before it) read.
    MarkRead { wamid: String },
}

/// The key of a job in the outbox: its arrival number.
pub type OutboxKey = Seq;

/// A send outcome whose Matrix side is still to show. Written with the job's removal and
/// forgotten once shown, so a crash in between shows it at the next start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shown {
    /// An agent's message WhatsApp accepted as `wamid`: the statuses that came before the
    /// answer are applied, the acceptance shown unless `sent` overtakes it.
    Accepted { job: Job, wamid: String },
    /// An agent's message WhatsApp refused for good: the failure, in the room.
    Refused {
        job: Job,
        code: Option<i64>,
        reason: String,
    },
}

impl Shown {
    /// The job the outcome is of.
    pub(crate) fn job(&self) -> &Job {
        match self {
            Shown::Accepted { job, .. } | Shown::Refused { job, .. } => job,
        }
    }
}

/// What WhatsApp's answer to a job records, with the job's removal ([`Store::finish_job`]).
pub enum Answer<'a> {
    /// An agent's message accepted as `wamid`.
    Accepted {
        wamid: &'a str,
        link: &'a MessageLink,
    },
    /// An agent's message refused for good.
    Refused {
        event_id: &'a EventId,
        code: Option<i64>,
        reason: &'a str,
    },
    /// Nothing to record (a read mark, a reaction).
    Nothing,
}

impl Store {
    /// Queues a job, and with it the delivery record of its message, in one write. The job is
    /// durable once [`Store::durable`] returned for the ticket.
    pub(crate) fn push_outbox(
        &self,
        job: &Job,
        delivery: Option<&Delivery>,
    ) -> Result<(OutboxKey, WriteTicket)> {
        let key = self.next_seq()?;
        let mut batch = Batch::new();
        if let Some(delivery) = delivery {
            Store::delivery_into(&mut batch, delivery)?;
        }
        batch.put(Table::Outbox, key, json(job)?);
        Ok((key, self.db.write(batch)?))
    }

    /// Every queued job, oldest first.
    pub(crate) fn outbox_jobs(&self) -> Result<Vec<(OutboxKey, Job)>> {
        self.numbered(Table::Outbox)
    }

    pub(crate) fn update_outbox(&self, key: &OutboxKey, job: &Job) -> Result<()> {
        self.put(Table::Outbox, key, job)
    }

    /// Whether a job is still queued.
    pub(crate) fn outbox_has(&self, key: &OutboxKey) -> bool {
        self.db.contains(Table::Outbox, key).unwrap_or(true)
    }

    /// Removes a job WhatsApp answered for good, and in the same write records what the answer
    /// means: the message's link and wamid (accepted) or its failure (refused), and `show`, the
    /// outcome still to show in Matrix. It is all gone or all there after a crash, so a status
    /// for the wamid always finds the link once the job is gone. Durable once [`Store::durable`]
    /// returned for the ticket.
    pub(crate) fn finish_job(
        &self,
        key: &OutboxKey,
        answer: Answer<'_>,
        show: Option<&Shown>,
    ) -> Result<WriteTicket> {
        let mut batch = Batch::new();
        batch.delete(Table::Outbox, key.as_slice());
        match answer {
            Answer::Accepted { wamid, link } => {
                let mut delivery = self
                    .delivery(&link.event_id)?
                    .unwrap_or_else(|| Delivery::queued(&link.room_id, &link.event_id, None));
                delivery.wamid = Some(wamid.to_owned());
                delivery.updated_ts = crate::now_ms();
                Store::delivery_into(&mut batch, &delivery)?;
                Store::link_into(&mut batch, wamid, link)?;
            }
            Answer::Refused {
                event_id,
                code,
                reason,
            } => {
                if let Some(mut delivery) = self.delivery(event_id)? {
                    delivery.status = "failed".into();
                    delivery.error_code = code;
                    delivery.error = Some(reason.to_owned());
                    delivery.updated_ts = crate::now_ms();
                    Store::delivery_into(&mut batch, &delivery)?;
                }
            }
            Answer::Nothing => {}
        }
        if let Some(show) = show {
            batch.put(Table::Shows, key.as_slice(), json(show)?);
        }
        Ok(self.db.write(batch)?)
    }

    /// Send outcomes not shown in Matrix yet, oldest first.
    pub(crate) fn shows(&self) -> Result<Vec<(OutboxKey, Shown)>> {
        self.numbered(Table::Shows)
    }

    /// Forgets an outcome once shown. Not waited for: a crash before it is on disk shows it
    /// again, which changes nothing (every event it sends has a fixed txnId).
    pub(crate) fn forget_show(&self, key: &OutboxKey) -> Result<()> {
        let mut batch = Batch::new();
        batch.delete(Table::Shows, key.as_slice());
        let _ = self.db.write(batch)?;
        Ok(())
    }

    /// Counts the queued jobs (a scan: for tests and reports).
    pub fn outbox_len(&self) -> usize {
        self.db.scan_prefix(Table::Outbox, b"").count()
    }

    /// Whether no job is queued (cheap, unlike [`Store::outbox_len`]).
    pub fn outbox_is_empty(&self) -> bool {
        self.is_empty(Table::Outbox)
    }
}
