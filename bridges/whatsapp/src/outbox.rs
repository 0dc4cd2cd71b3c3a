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
//! A job is removed right after WhatsApp's answer and the removal is on disk before the
//! customer's next job starts; a crash between the two is the only way a message could go out
//! twice.

use std::cell::RefCell;
use std::sync::Arc;

use appservice::HandlerError;
use charla_storage::WriteTicket;
use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bridge::Bridge;
use crate::cloud::send::{MediaBody, MessageBody, OutgoingMessage};
use crate::graph::SendError;
use crate::notices::Notice;
use crate::store::MessageLink;

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

/// The result of one attempt: the wamid WhatsApp gave the message, if any.
type Attempt = Result<Option<String>, SendError>;

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

/// The key of a job in the outbox: its arrival number.
pub type OutboxKey = [u8; 8];

/// What a send changes in Matrix, shown once its job left the outbox (or was kept).
pub(crate) enum Effect {
    Sent(Job, Option<String>),
    Pending(Job, String),
    Refused(Job, SendError),
}

impl Effect {
    pub(crate) fn room_id(&self) -> &OwnedRoomId {
        match self {
            Effect::Sent(job, _) | Effect::Pending(job, _) | Effect::Refused(job, _) => {
                &job.room_id
            }
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
            .map(|event_id| crate::store::Delivery::queued(&job.room_id, event_id, None));
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

    /// Removes a job WhatsApp answered for good; returns once the removal is on disk, so a
    /// crash cannot send it again after the customer's next message.
    pub(crate) async fn remove_sent(&self, key: &OutboxKey) {
        let removed = match self.store.remove_outbox(key) {
            Ok(ticket) => ticket,
            Err(error) => {
                tracing::error!(%error, "cannot remove a sent job");
                return;
            }
        };
        if let Err(error) = self.store.durable(removed).await {
            tracing::error!(%error, "cannot make the outbox removal durable");
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

    pub(crate) async fn show(self: &Arc<Self>, effect: Effect) -> Result<(), HandlerError> {
        match effect {
            Effect::Sent(job, wamid) => {
                let resumed = self
                    .pending_rooms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&job.room_id);
                if resumed {
                    self.notice(&job.room_id, &Notice::Resumed, None).await?;
                }
                if let (Some(event_id), Some(wamid)) = (job.event_id, wamid) {
                    let link = MessageLink {
                        room_id: job.room_id,
                        event_id,
                        inbound: false,
                        portal: job.portal,
                    };
                    self.accepted(link, &wamid).await?;
                }
                Ok(())
            }
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
            Effect::Refused(job, error) => {
                let Some(event_id) = &job.event_id else {
                    return Ok(());
                };
                if let Some(mut delivery) = self.store.delivery(event_id.as_str())? {
                    delivery.status = "failed".into();
                    delivery.error_code = error.code();
                    delivery.error = Some(error.reason());
                    delivery.updated_ts = crate::now_ms();
                    self.store.save_delivery(&delivery)?;
                }
                self.report_failure(&job.room_id, event_id, error.code(), &error.reason())
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
