//! The outbox: agent actions waiting to reach WhatsApp, on disk before anything is sent.
//!
//! The worker sends the oldest job of every customer at once (up to `send_concurrency`), so one
//! customer's messages go out one after the other, in order, while customers do not wait for
//! each other. A job leaves the outbox only when WhatsApp accepted it or refused it for good:
//!
//! - unreachable, timeout, 5xx, `131000`: kept; the agents are told it is pending; retried with
//!   a doubling pause (at most `max_retry_secs`);
//! - `130429`, `80007`, `131056`, `4` (rate limits): kept; retried after a longer pause;
//! - `131047` (24-hour window closed): reported with the `!template` hint;
//! - anything else (`131026`, `131051`, …): reported with WhatsApp's reason, not retried.
//!
//! A job is removed right after WhatsApp's answer and the removal flushed before the round
//! ends; a crash between the two is the only way a message could go out twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use appservice::HandlerError;
use futures_util::StreamExt;
use futures_util::future::join_all;
use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bridge::Bridge;
use crate::cloud::error::ErrorClass;
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

/// Runs until `stopped` turns true.
pub async fn run(bridge: Arc<Bridge>, mut stopped: watch::Receiver<bool>) {
    // Rooms told before a restart that their messages are pending are told when they leave.
    if let Ok(jobs) = bridge.store.outbox_jobs() {
        let mut pending = bridge
            .pending_rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pending.extend(
            jobs.into_iter()
                .filter(|(_, job)| job.told_pending)
                .map(|(_, job)| job.room_id),
        );
    }
    let mut failures = 0u32;
    loop {
        if *stopped.borrow() {
            return;
        }
        let jobs = match bridge.store.outbox_jobs() {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::error!(%error, "cannot read the outbox");
                Vec::new()
            }
        };
        let mut seen = HashSet::new();
        let heads: Vec<_> = jobs
            .into_iter()
            .filter(|(_, job)| seen.insert(job.portal.clone()))
            .collect();
        if heads.is_empty() {
            tokio::select! {
                _ = bridge.outbox_wake.notified() => {}
                _ = stopped.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let outcomes: Vec<_> = futures_util::stream::iter(heads)
            .map(|(key, job)| {
                let bridge = &bridge;
                async move {
                    let outcome = bridge.attempt(&job).await;
                    (key, job, outcome)
                }
            })
            .buffer_unordered(bridge.config.send_concurrency)
            .collect()
            .await;
        let mut retry: Option<ErrorClass> = None;
        let mut effects = Vec::new();
        for (key, mut job, outcome) in outcomes {
            match outcome {
                Ok(wamid) => {
                    if let Err(error) = bridge.store.remove_outbox_unflushed(&key) {
                        tracing::error!(%error, "cannot remove a sent job");
                    }
                    effects.push(Effect::Sent(job, wamid));
                }
                Err(error) => match error.class() {
                    class @ (ErrorClass::Transient | ErrorClass::RateLimited) => {
                        tracing::info!(%error, attempts = job.attempts + 1, "WhatsApp send postponed");
                        retry = Some(match retry {
                            Some(ErrorClass::RateLimited) => ErrorClass::RateLimited,
                            _ => class,
                        });
                        job.attempts += 1;
                        if !job.told_pending && job.event_id.is_some() {
                            job.told_pending = true;
                            effects.push(Effect::Pending(job.clone(), error.reason()));
                        }
                        if let Err(error) = bridge.store.update_outbox(&key, &job) {
                            tracing::error!(%error, "cannot update a queued job");
                        }
                    }
                    ErrorClass::ReEngagement | ErrorClass::Permanent => {
                        tracing::warn!(%error, "WhatsApp refused a message");
                        if let Err(error) = bridge.store.remove_outbox_unflushed(&key) {
                            tracing::error!(%error, "cannot remove a refused job");
                        }
                        effects.push(Effect::Refused(job, error));
                    }
                },
            }
        }
        if let Err(error) = bridge.store.flush().await {
            tracing::error!(%error, "cannot flush the outbox");
        }
        for result in join_all(effects.into_iter().map(|e| bridge.show(e))).await {
            if let Err(error) = result {
                tracing::warn!(%error, "cannot show a delivery state in Matrix");
            }
        }
        match retry {
            None => failures = 0,
            Some(class) => {
                failures += 1;
                let base = match class {
                    ErrorClass::RateLimited => Duration::from_secs(2),
                    _ => Duration::from_millis(250),
                };
                let pause = base
                    .saturating_mul(1 << failures.min(10))
                    .min(bridge.config.max_retry());
                let until = Instant::now() + pause;
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
    }
}

/// What a round's outcome shows in Matrix, once the outbox is flushed.
enum Effect {
    Sent(Job, Option<String>),
    Pending(Job, String),
    Refused(Job, SendError),
}

impl Bridge {
    /// Queues a job durably and wakes the worker.
    pub(crate) async fn enqueue(&self, job: Job) -> Result<(), HandlerError> {
        if let Some(event_id) = &job.event_id {
            self.store.save_delivery(&crate::store::Delivery {
                room_id: job.room_id.clone(),
                event_id: event_id.clone(),
                wamid: None,
                status: "queued".into(),
                updated_ts: crate::now_ms(),
                error_code: None,
                error: None,
            })?;
        }
        self.store.push_outbox(&job).await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Sends one job.
    async fn attempt(&self, job: &Job) -> Attempt {
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

    async fn show(&self, effect: Effect) -> Result<(), HandlerError> {
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
                        "message": Notice::Pending.text(&self.config.language),
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
