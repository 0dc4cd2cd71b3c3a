//! The outbox worker: agents' answers to the relay, in order per conversation, retried.
//!
//! Each round takes the oldest job of every conversation (a conversation's next answer waits
//! for the one before it, so the customer reads them in the order they were written) and
//! sends them concurrently, at most `send_concurrency` at a time. The relay's answer decides:
//!
//! - accepted: the job leaves the outbox in the write that marks its delivery `sent` and makes
//!   its Message-ID the thread's newest; the bridge bot's read receipt on the agent's message
//!   shows it in the room;
//! - refused for now (`4xx`) or unreachable: the job stays, its conversation waits a doubling
//!   pause (at most `max_retry_secs`), the others go on; after `give_up_after_secs` it fails;
//! - refused for good (`5xx`), or a mail that cannot be built (an attachment gone or too
//!   big): the job leaves the outbox as `failed` with the reason, and the agents are told in
//!   reply to their message.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use charla_storage::Batch;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bridge::Bridge;
use crate::compose::{Answer, compose};
use crate::relay::RelayError;
use crate::store::{Delivery, Job, Table};

/// Jobs looked at per round.
const SCAN: usize = 4096;

/// Answers with attachments built at the same time: each holds its files (up to
/// `max_message_bytes`, twice while encoded) until the relay has it.
pub(crate) const ATTACHMENT_SENDS: usize = 4;

/// What became of one attempt.
enum Outcome {
    /// Sent or failed for good: the conversation's next job may go.
    Done,
    /// Try the conversation again after this long.
    Retry(Duration),
}

/// Runs until `stopped` turns true.
pub async fn run(bridge: Arc<Bridge>, mut stopped: watch::Receiver<bool>) {
    let mut waits: HashMap<String, Instant> = HashMap::new();
    loop {
        if *stopped.borrow() {
            return;
        }
        let jobs = match bridge.store.jobs(SCAN) {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::error!(%error, "cannot read the email outbox");
                Vec::new()
            }
        };
        let now = Instant::now();
        let mut seen = HashSet::new();
        let mut ready = Vec::new();
        for (seq, job) in jobs {
            if seen.insert(job.portal.clone()) && waits.get(&job.portal).is_none_or(|t| *t <= now) {
                ready.push((seq, job));
            }
        }
        if ready.is_empty() {
            let next = waits
                .values()
                .filter(|t| **t > now)
                .min()
                .copied()
                .unwrap_or(now + Duration::from_secs(1))
                .min(now + Duration::from_secs(1));
            tokio::select! {
                _ = bridge.outbox_wake.notified() => {}
                _ = stopped.changed() => {}
                _ = tokio::time::sleep_until(next) => {}
            }
            continue;
        }
        let results: Vec<(String, Outcome)> = futures_util::stream::iter(ready)
            .map(|(seq, job)| {
                let bridge = &bridge;
                async move { (job.portal.clone(), bridge.attempt(seq, job).await) }
            })
            .buffer_unordered(bridge.config.send_concurrency)
            .collect()
            .await;
        for (portal, outcome) in results {
            match outcome {
                Outcome::Done => waits.remove(&portal),
                Outcome::Retry(pause) => waits.insert(portal, Instant::now() + pause),
            };
        }
    }
}

impl Bridge {
    /// One attempt at one job.
    async fn attempt(&self, seq: u64, mut job: Job) -> Outcome {
        // Held until the relay has the mail: its files are in memory until then.
        let _slot = match job.attachments.is_empty() {
            true => None,
            false => self.attachment_sends.acquire().await.ok(),
        };
        let result = match self.build(&job).await {
            Ok((to, message)) => self.relay.send(&self.config.address, &to, &message).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(answer) => {
                tracing::debug!(event = %job.event_id, %answer, "answer accepted by the relay");
                self.finish(seq, &job, "sent", None).await;
                Outcome::Done
            }
            Err(RelayError::Permanent(reason)) => {
                tracing::warn!(event = %job.event_id, %reason, "the relay refused an answer");
                self.finish(seq, &job, "failed", Some(reason)).await;
                Outcome::Done
            }
            Err(RelayError::Transient(reason)) => {
                job.attempts += 1;
                let waited = crate::now_ms().saturating_sub(job.queued_ms) / 1000;
                if waited >= self.config.give_up_after_secs {
                    let reason = format!("gave up after {} attempts: {reason}", job.attempts);
                    self.finish(seq, &job, "failed", Some(reason)).await;
                    return Outcome::Done;
                }
                tracing::warn!(event = %job.event_id, attempts = job.attempts, %reason, "the relay cannot take an answer now; retried");
                if let Err(error) = self.store.update_job(seq, &job) {
                    tracing::error!(%error, "cannot count an outbox attempt");
                }
                let pause =
                    Duration::from_secs(1u64 << job.attempts.min(16)).min(self.config.max_retry());
                Outcome::Retry(pause)
            }
        }
    }

    /// The recipient and the whole mail of a job.
    async fn build(&self, job: &Job) -> Result<(String, Vec<u8>), RelayError> {
        let portal = self
            .store
            .portal(&job.portal)
            .map_err(|e| RelayError::Transient(e.to_string()))?
            .ok_or_else(|| RelayError::Permanent("the conversation is gone".into()))?;
        let mut attachments = Vec::new();
        let mut total = 0usize;
        for attachment in &job.attachments {
            let uri: &ruma::MxcUri = attachment.mxc.as_str().into();
            let (data, _) = match self.bot.download(uri).await {
                Ok(found) => found,
                Err(error)
                    if matches!(error.status(), Some(400..500)) && error.status() != Some(429) =>
                {
                    return Err(RelayError::Permanent(format!(
                        "{}: {error}",
                        attachment.filename
                    )));
                }
                Err(error) => return Err(RelayError::Transient(error.to_string())),
            };
            total += data.len();
            if total > self.config.max_message_bytes {
                return Err(RelayError::Permanent(format!(
                    "attachments over bridges.email.max_message_bytes ({} bytes)",
                    self.config.max_message_bytes
                )));
            }
            attachments.push((
                attachment.filename.clone(),
                attachment.content_type.clone(),
                data.to_vec(),
            ));
        }
        let answer = Answer {
            from_name: &job.from_name,
            from_address: &self.config.address,
            to_name: &portal.name,
            to_address: &portal.address,
            subject: &portal.subject,
            message_id: &job.message_id,
            in_reply_to: portal.last_message_id.as_deref(),
            references: &portal.references,
            text: &job.text,
            html: job.html.as_deref(),
            automatic: job.automatic,
            attachments,
        };
        let message = compose(&answer).map_err(RelayError::Permanent)?;
        if message.len() > self.config.max_message_bytes.saturating_mul(4) / 3 + 65_536 {
            return Err(RelayError::Permanent(format!(
                "the mail is over bridges.email.max_message_bytes ({} bytes)",
                self.config.max_message_bytes
            )));
        }
        Ok((portal.address, message))
    }

    /// Ends a job: out of the outbox with its delivery state, in one write; then the room.
    async fn finish(&self, seq: u64, job: &Job, status: &str, error: Option<String>) {
        let mut batch = Batch::<Table>::new();
        self.store.remove_job(&mut batch, seq);
        let delivery = Delivery {
            room_id: job.room_id.clone(),
            status: status.to_owned(),
            message_id: job.message_id.clone(),
            updated_ts: crate::now_ms(),
            error: error.clone(),
        };
        let written = self
            .store
            .put_delivery(&mut batch, &job.event_id, &delivery)
            .and_then(|()| {
                if status == "sent"
                    && let Some(mut portal) = self.store.portal(&job.portal)?
                {
                    portal.references.push(job.message_id.clone());
                    crate::inbox::bound_references(&mut portal.references);
                    portal.last_message_id = Some(job.message_id.clone());
                    self.store.save_portal(&mut batch, &portal)?;
                }
                self.store.write(batch)
            });
        if let Err(error) = written {
            // The job stays and is sent again: at least once.
            tracing::error!(%error, "cannot record an answer's delivery");
            return;
        }
        let shown = match &error {
            None => self
                .bot
                .send_read_receipt(&job.room_id, &job.event_id)
                .await
                .map_err(Into::into),
            Some(reason) => self.tell_failed(&job.room_id, &job.event_id, reason).await,
        };
        if let Err(error) = shown {
            tracing::warn!(%error, event = %job.event_id, "cannot show an answer's delivery in its room");
        }
    }
}
