//! The appservice handler: what agents write in conversation rooms, into outbox jobs.
//!
//! Sent by mail: every `m.room.message` in a conversation room by anyone but the bridge's own
//! users (agents, and the support bot's greeting and FAQ answers), except messages whose body
//! starts with `!` (commands for the support bot) and messages marked
//! `"io.charla.internal": true` (private notes). Edits cannot be taken back from a mailbox:
//! the agents are told so instead. A job is on disk before the transaction is acknowledged.

use appservice::{Handler, HandlerError, Transaction};
use ruma::{OwnedEventId, RoomId, UserId};
use serde_json::Value;

use crate::bridge::Bridge;
use crate::store::{Job, JobAttachment, Portal};

impl Handler for Bridge {
    /// Every event of the transaction (typed or not: a message ruma's types refuse may still
    /// be one a mail can carry), then one wait for the disk for all the jobs it queued.
    async fn on_transaction(&self, txn: &Transaction) -> Result<(), HandlerError> {
        let mut queued = false;
        for raw in &txn.events {
            if let Ok(event) = raw.deserialize_as_unchecked::<Value>() {
                queued |= self.on_agent_event(&event).await?;
            }
        }
        if queued {
            self.store.flush().await?;
            self.outbox_wake.notify_one();
        }
        Ok(())
    }

    async fn query_user(&self, _user_id: &UserId) -> Result<bool, HandlerError> {
        // Puppets exist once their customer wrote; the bridge cannot start conversations.
        Ok(false)
    }
}

impl Bridge {
    /// An event in a room; true when it queued a mail (not yet waited for).
    async fn on_agent_event(&self, event: &Value) -> Result<bool, HandlerError> {
        let room_id = event["room_id"]
            .as_str()
            .and_then(|r| RoomId::parse(r).ok());
        let (Some(sender), Some(room_id)) = (event["sender"].as_str(), room_id) else {
            return Ok(false);
        };
        if event["type"] != "m.room.message"
            || event.get("state_key").is_some()
            || self.is_own_user(sender)
        {
            return Ok(false);
        }
        let Some(portal) = self.store.portal_by_room(&room_id)? else {
            return Ok(false);
        };
        let Some(event_id) = event["event_id"]
            .as_str()
            .and_then(|e| OwnedEventId::try_from(e).ok())
        else {
            return Ok(false);
        };
        if self.store.delivery(&event_id)?.is_some() {
            return Ok(false); // a transaction sent again
        }
        let content = &event["content"];
        let body = content["body"].as_str().unwrap_or_default();
        if content["io.charla.internal"] == Value::Bool(true) || body.starts_with('!') {
            return Ok(false);
        }
        if content["m.relates_to"]["rel_type"] == "m.replace" {
            self.edits_not_sent(&room_id, &event_id).await?;
            return Ok(false);
        }
        let sender = UserId::parse(sender)?;
        let job = self.job(&portal, event_id, &sender, content).await;
        let _ = self.store.enqueue(&job)?;
        Ok(true)
    }

    /// The mail of an agent's message.
    async fn job(
        &self,
        portal: &Portal,
        event_id: OwnedEventId,
        sender: &UserId,
        content: &Value,
    ) -> Job {
        let body = content["body"].as_str().unwrap_or_default().to_owned();
        let msgtype = content["msgtype"].as_str().unwrap_or("m.text");
        let html = (content["format"] == "org.matrix.custom.html")
            .then(|| content["formatted_body"].as_str().map(str::to_owned))
            .flatten();
        let mut attachments = Vec::new();
        let mut text = body.clone();
        if matches!(msgtype, "m.image" | "m.file" | "m.video" | "m.audio")
            && let Some(mxc) = content["url"].as_str()
        {
            let filename = content["filename"].as_str().unwrap_or(&body).to_owned();
            // A caption is the body when a filename is given apart (Matrix v1.10).
            text = if content["filename"].is_string() && body != filename {
                body.clone()
            } else {
                String::new()
            };
            attachments.push(JobAttachment {
                mxc: mxc.to_owned(),
                filename,
                content_type: content["info"]["mimetype"]
                    .as_str()
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
            });
        }
        if msgtype == "m.emote" {
            text = format!("* {text}");
        }
        Job {
            portal: portal.key.clone(),
            room_id: portal.room_id.clone(),
            event_id,
            message_id: self.new_message_id(),
            from_name: self.sender_name(sender).await,
            text,
            html: if attachments.is_empty() { html } else { None },
            attachments,
            automatic: msgtype == "m.notice"
                || self
                    .config
                    .automatic_senders
                    .iter()
                    .any(|user| user == sender.as_str()),
            queued_ms: crate::now_ms(),
            attempts: 0,
        }
    }

    /// `<random@desk-domain>`: unguessable, so nobody outside the thread can name it to write
    /// into the conversation.
    fn new_message_id(&self) -> String {
        let random: [u8; 16] = rand::random();
        format!("{}@{}", hex::encode(random), self.config.domain())
    }

    /// "Ana (Support)": the agent's display name and the desk's. An agent without one, or the
    /// support bot named as the desk, is the desk's name alone.
    async fn sender_name(&self, sender: &UserId) -> String {
        let desk = &self.config.display_name;
        if let Some(name) = self.names.lock().get(sender) {
            return name.clone();
        }
        let name = match self.bot.displayname_of(sender).await {
            Ok(Some(name)) if name != *desk && !desk.is_empty() => format!("{name} ({desk})"),
            Ok(Some(name)) if desk.is_empty() => name,
            Ok(_) => desk.clone(),
            Err(error) => {
                tracing::debug!(%error, "cannot read an agent's display name");
                return desk.clone();
            }
        };
        let mut names = self.names.lock();
        if names.len() > 10_000 {
            names.clear();
        }
        names.insert(sender.to_owned(), name.clone());
        name
    }

    /// Tells the agents that their edit stays in Matrix.
    async fn edits_not_sent(
        &self,
        room_id: &RoomId,
        event_id: &OwnedEventId,
    ) -> Result<(), HandlerError> {
        let body = "Edits are not sent by email: the customer has the first version. Send a \
                    new message to correct it.";
        self.notice_to(room_id, event_id, body, "edit").await
    }
}
