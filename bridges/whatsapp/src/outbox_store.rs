//! The outbox's records in the bridge's store: queued jobs, and what WhatsApp's answer to a
//! job leaves behind (see [`crate::outbox`]).

use charla_storage::{Batch, WriteTicket};
use ruma::EventId;
use serde::de::DeserializeOwned;

use crate::outbox::{Job, OutboxKey, Shown};
use crate::store::{Delivery, MessageLink, Result, Store, Table, json};

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
    pub fn push_outbox(
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
    pub fn outbox_jobs(&self) -> Result<Vec<(OutboxKey, Job)>> {
        self.numbered(Table::Outbox)
    }

    /// The records of a table keyed by arrival number, oldest first.
    fn numbered<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(OutboxKey, T)>> {
        let mut records = Vec::new();
        for item in self.db.scan_prefix(table, b"") {
            let (k, v) = item?;
            let mut key = [0u8; 8];
            key.copy_from_slice(&k);
            records.push((key, serde_json::from_slice(&v)?));
        }
        Ok(records)
    }

    pub fn update_outbox(&self, key: &OutboxKey, job: &Job) -> Result<()> {
        self.put(Table::Outbox, key, job)
    }

    /// Whether a job is still queued.
    pub fn outbox_has(&self, key: &OutboxKey) -> bool {
        self.db.contains(Table::Outbox, key).unwrap_or(true)
    }

    /// Removes a job WhatsApp answered for good, and in the same write records what the answer
    /// means: the message's link and wamid (accepted) or its failure (refused), and `show`, the
    /// outcome still to show in Matrix. It is all gone or all there after a crash, so a status
    /// for the wamid always finds the link once the job is gone. Durable once [`Store::durable`]
    /// returned for the ticket.
    pub fn finish_job(
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
                    .delivery(link.event_id.as_str())?
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
                if let Some(mut delivery) = self.delivery(event_id.as_str())? {
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
    pub fn shows(&self) -> Result<Vec<(OutboxKey, Shown)>> {
        self.numbered(Table::Shows)
    }

    /// Forgets an outcome once shown. Not waited for: a crash before it is on disk shows it
    /// again, which changes nothing (every event it sends has a fixed txnId).
    pub fn forget_show(&self, key: &OutboxKey) -> Result<()> {
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
