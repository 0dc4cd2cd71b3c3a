//! The outbox: agent actions waiting to reach WhatsApp, on disk before anything is sent.
//!
//! The worker ([`crate::outbox_worker`]) sends each customer's jobs one after the other, in
//! order, customers side by side, paced to the number's throughput ceiling. A job leaves the
//! outbox only when WhatsApp accepted it or refused it for good:
//!
//! - unreachable, timeout, 5xx, `131000`: kept; the agents are told it is pending; retried with
//!   a doubling pause (at most `max_retry_secs`);
//! - `130429`, `80007`, `131056`, `4` (rate limits): kept; retried after a longer pause;
//! - `131047` (24-hour window closed): reported with the `!template` hint;
//! - anything else (`131026`, `131051`, …): reported with WhatsApp's reason, not retried.
//!
//! A job is removed right after WhatsApp's answer, and the removal is on disk before the
//! customer's next job starts. The same write records what the answer means (the message's
//! wamid link, or its failure) and what is left to show in Matrix ([`Shown`]), so the
//! statuses WhatsApp sends later always find their message, and a refusal is shown even if
//! the bridge dies right after it.
//!
//! Delivery to WhatsApp is at least once: the Cloud API takes no idempotency key, so a crash
//! while a send is in flight, from the moment WhatsApp has it until that write is on disk (the
//! rest of the API's answer time, then one `fdatasync` of the bridge's log), sends the job
//! again at the next start, with a new wamid. It is the only way a message goes out twice, and
//! it can only be the one job per customer that was in flight.

use std::cell::RefCell;
use std::sync::Arc;

use appservice::HandlerError;
use charla_storage::WriteTicket;
use ruma::{OwnedMxcUri, OwnedRoomId};
use serde_json::json;

use crate::bridge::Bridge;
use crate::cloud::send::{MediaBody, MessageBody, OutgoingMessage};
use crate::graph::SendError;
use crate::notices::Notice;
use crate::store::{Action, Answer, Delivery, Job, MessageLink, OutboxKey, Shown};

/// The result of one attempt: the wamid WhatsApp gave the message, if any.
pub(crate) type Attempt = Result<Option<String>, SendError>;

tokio::task_local! {
    /// Jobs the transaction being handled queued, written but not waited for yet.
    static UNFLUSHED: RefCell<Staged>;
}

/// Jobs written but not yet known to be on disk, and the ticket that covers them all.
#[derive(Default)]
struct Staged {
    jobs: Vec<(OutboxKey, Job)>,
    ticket: Option<WriteTicket>,
}

/// What an answer to `job` leaves to show: only an agent's message has a Matrix side.
fn shown_of(job: &Job, outcome: &Attempt) -> Option<Shown> {
    job.event_id.as_ref()?;
    match outcome {
        Ok(Some(wamid)) => Some(Shown::Accepted {
            job: job.clone(),
            wamid: wamid.clone(),
        }),
        Ok(None) => None,
        Err(error) => Some(Shown::Refused {
            job: job.clone(),
            code: error.code(),
            reason: error.reason(),
        }),
    }
}

/// What a send changes in Matrix, shown once its job left the outbox (or was kept).
pub(crate) enum Effect {
    /// Accepted: rooms told that WhatsApp was unreachable hear it is back; the record is what
    /// the answer left to show (with its key in the `shows` table).
    Sent(Job, Option<(OutboxKey, Box<Shown>)>),
    /// Refused for good, or found at start after a crash: shown from its record.
    Show(OutboxKey, Shown),
    Pending(Job, String),
}

impl Effect {
    /// The outcome of a job WhatsApp answered for good, with the record its removal wrote.
    pub(crate) fn answered(key: OutboxKey, job: Job, outcome: &Attempt) -> Option<Self> {
        let shown = shown_of(&job, outcome);
        match outcome {
            Ok(_) => Some(Effect::Sent(job, shown.map(|s| (key, Box::new(s))))),
            Err(_) => shown.map(|s| Effect::Show(key, s)),
        }
    }

    pub(crate) fn room_id(&self) -> &OwnedRoomId {
        match self {
            Effect::Sent(job, _) | Effect::Pending(job, _) => &job.room_id,
            Effect::Show(_, shown) => &shown.job().room_id,
        }
    }

    /// The key of the record to forget once shown.
    pub(crate) fn record(&self) -> Option<&OutboxKey> {
        match self {
            Effect::Sent(_, Some((key, _))) | Effect::Show(key, _) => Some(key),
            _ => None,
        }
    }
}

impl Bridge {
    /// Queues a job durably and wakes the worker. Inside [`Bridge::with_one_flush`] the job is
    /// on disk (and handed to the worker) once the whole transaction's work is.
    pub(crate) async fn enqueue(&self, job: Job) -> Result<(), HandlerError> {
        let delivery = job
            .event_id
            .as_ref()
            .map(|event_id| Delivery::queued(&job.room_id, event_id, None));
        let (key, ticket) = self.store.push_outbox(&job, delivery.as_ref())?;
        let mut job = Some((key, job));
        let deferred = UNFLUSHED
            .try_with(|staged| {
                let mut staged = staged.borrow_mut();
                staged.jobs.extend(job.take());
                // Tickets grow, and a ticket covers every write before it.
                staged.ticket = staged.ticket.max(Some(ticket));
            })
            .is_ok();
        if !deferred {
            self.store.durable(ticket).await?;
            self.hand_over(job.into_iter().collect());
        }
        Ok(())
    }

    /// Runs `work` (one appservice transaction) so that the jobs it queues share one wait for
    /// the disk, at the end, instead of one each; the jobs reach the worker only once they are
    /// on disk, and the transaction is acknowledged only after that.
    pub(crate) async fn with_one_flush<T>(
        &self,
        work: impl Future<Output = Result<T, HandlerError>>,
    ) -> Result<T, HandlerError> {
        let (result, staged) = UNFLUSHED
            .scope(RefCell::new(Staged::default()), async {
                let result = work.await;
                (result, UNFLUSHED.with(|staged| staged.take()))
            })
            .await;
        if let Some(ticket) = staged.ticket {
            // Also after a failure: what was written is queued, and read again at a restart.
            self.store.durable(ticket).await?;
            self.hand_over(staged.jobs);
        }
        result
    }

    fn hand_over(&self, jobs: Vec<(OutboxKey, Job)>) {
        self.fresh_jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(jobs);
        self.outbox_wake.notify_one();
    }

    /// The jobs queued since the worker last looked.
    pub(crate) fn take_fresh_jobs(&self) -> Vec<(OutboxKey, Job)> {
        std::mem::take(&mut *self.fresh_jobs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Removes a job WhatsApp answered for good, with what the answer records and what it
    /// leaves to show ([`crate::store::Store::finish_job`]); returns once that is on disk, so a
    /// crash cannot send the job again after the customer's next message, nor lose the link
    /// its statuses need.
    pub(crate) async fn finish_job(&self, key: &OutboxKey, job: &Job, outcome: &Attempt) {
        let shown = shown_of(job, outcome);
        let link = job.event_id.as_ref().map(|event_id| MessageLink {
            room_id: job.room_id.clone(),
            event_id: event_id.clone(),
            inbound: false,
            portal: job.portal.clone(),
        });
        let reason = outcome.as_ref().err().map(SendError::reason);
        let answer = match (outcome, &link, &reason) {
            (Ok(Some(wamid)), Some(link), _) => Answer::Accepted { wamid, link },
            (Err(error), Some(link), Some(reason)) => Answer::Refused {
                event_id: &link.event_id,
                code: error.code(),
                reason,
            },
            _ => Answer::Nothing,
        };
        let written = self
            .store
            .finish_job(key, answer, shown.as_ref())
            .map(|ticket| self.store.durable(ticket));
        let result = match written {
            Ok(durable) => durable.await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::error!(%error, "cannot record WhatsApp's answer to a job; it may be sent again");
        }
    }

    /// Sends one job.
    pub(crate) async fn attempt(&self, job: &Job) -> Attempt {
        let portal = self
            .store
            .portal(&job.portal)
            .map_err(|e| SendError::Unreachable(e.to_string()))?
            .ok_or_else(|| local_refusal(format!("unknown portal {}", job.portal)))?;
        let (to, recipient) = (portal.wa_id.clone(), portal.user_id.clone());
        let (body, reply_to) = match &job.action {
            Action::MarkRead { wamid } => return self.graph.mark_read(wamid).await.map(|_| None),
            Action::Message { body, reply_to } => (body.clone(), reply_to.clone()),
            Action::Media {
                msgtype,
                url,
                mimetype,
                filename,
                caption,
                reply_to,
            } => {
                let uri = OwnedMxcUri::from(url.as_str());
                let (data, _) = self
                    .bot
                    .download(&uri)
                    .await
                    .map_err(|e| match e.status() {
                        Some(status) if (400..500).contains(&status) && status != 429 => {
                            local_refusal(format!(
                                "the file is not available on the homeserver: {e}"
                            ))
                        }
                        _ => SendError::Unreachable(e.to_string()),
                    })?;
                let id = self.graph.upload(data, mimetype, filename).await?;
                let media = |filename: Option<String>| MediaBody {
                    id: id.clone(),
                    caption: caption.clone(),
                    filename,
                };
                let body = match msgtype.as_str() {
                    "m.image" | "m.sticker" => MessageBody::Image { image: media(None) },
                    "m.video" => MessageBody::Video { video: media(None) },
                    // WhatsApp takes no caption on audio.
                    "m.audio" => MessageBody::Audio {
                        audio: MediaBody {
                            id: id.clone(),
                            caption: None,
                            filename: None,
                        },
                    },
                    _ => MessageBody::Document {
                        document: media(Some(filename.clone())),
                    },
                };
                (body, reply_to.clone())
            }
        };
        let message = OutgoingMessage::new(to, recipient, body).replying_to(reply_to);
        let answer = self.graph.send(&message).await?;
        Ok(answer.messages.first().map(|m| m.id.clone()))
    }

    pub(crate) async fn show(self: &Arc<Self>, effect: &Effect) -> Result<(), HandlerError> {
        match effect {
            Effect::Sent(job, shown) => {
                let resumed = self
                    .pending_rooms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&job.room_id);
                if resumed {
                    self.notice(&job.room_id, &Notice::Resumed, None).await?;
                }
                match shown {
                    Some((_, shown)) => self.show_outcome(shown).await,
                    None => Ok(()),
                }
            }
            Effect::Show(_, shown) => self.show_outcome(shown).await,
            Effect::Pending(job, reason) => {
                let Some(event_id) = &job.event_id else {
                    return Ok(());
                };
                let first_in_room = self
                    .pending_rooms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(job.room_id.clone());
                self.send_status_event(
                    &job.room_id,
                    event_id,
                    "pending",
                    json!({
                        "status": "PENDING",
                        "reason": "m.foreign_network_error",
                        "error": reason,
                        "message": Notice::Pending.text(&self.language_of(&job.room_id)),
                    }),
                )
                .await?;
                if first_in_room {
                    self.notice(&job.room_id, &Notice::Pending, None).await?;
                }
                Ok(())
            }
        }
    }

    /// Shows a recorded outcome; every event it sends has a fixed txnId, so showing it twice
    /// (a crash before the record was forgotten) changes nothing.
    async fn show_outcome(self: &Arc<Self>, shown: &Shown) -> Result<(), HandlerError> {
        let job = shown.job();
        let Some(event_id) = &job.event_id else {
            return Ok(());
        };
        match shown {
            Shown::Accepted { wamid, .. } => {
                let link = MessageLink {
                    room_id: job.room_id.clone(),
                    event_id: event_id.clone(),
                    inbound: false,
                    portal: job.portal.clone(),
                };
                self.accepted(link, wamid).await
            }
            Shown::Refused { code, reason, .. } => {
                self.report_failure(&job.room_id, event_id, *code, reason)
                    .await
            }
        }
    }
}

/// A refusal that happens before WhatsApp is asked (a file the homeserver no longer has).
fn local_refusal(message: String) -> SendError {
    SendError::Api {
        status: 400,
        error: crate::cloud::GraphError {
            message,
            kind: "Bridge".into(),
            code: 0,
            error_data: None,
            error_subcode: None,
            fbtrace_id: String::new(),
        },
    }
}
