//! The appservice handler: what agents do in portal rooms, into outbox jobs.
//!
//! Forwarded (contract.md): every `m.room.message`, `m.sticker`, `m.reaction` and redaction of
//! a forwarded reaction sent in a portal by anyone but the bridge's own users, except messages
//! whose body starts with `!` and messages marked `"io.charla.internal": true`.
//! `!template NAME [params…]` sends a WhatsApp template unless NAME is one of the support bot's
//! (`bot_templates`). Agents' read receipts mark the customer's messages read.

use appservice::{EphemeralEvent, Handler, HandlerError, Transaction};
use ruma::events::receipt::ReceiptType;
use ruma::events::{AnySyncEphemeralRoomEvent, AnyTimelineEvent};
use ruma::serde::Raw;
use ruma::{OwnedEventId, UserId};
use serde_json::Value;

use crate::bridge::Bridge;
use crate::cloud::send::{LocationBody, MessageBody, ReactionBody, TemplateBody, TextBody};
use crate::notices::{CONVERSATION_EVENT, Notice};
use crate::store::{Action, Job, Portal};

impl Handler for Bridge {
    /// As the toolkit's default (events in order, then EDUs), with one flush for all the jobs
    /// the transaction queues.
    async fn on_transaction(&self, txn: &Transaction) -> Result<(), HandlerError> {
        self.with_one_flush(async {
            for raw in &txn.events {
                match raw.deserialize() {
                    Ok(event) => self.on_event(event, raw).await?,
                    Err(error) => self.on_invalid_event(raw, error).await?,
                }
            }
            for raw in &txn.ephemeral {
                match raw.deserialize() {
                    Ok(edu) => self.on_ephemeral(edu).await?,
                    Err(error) => {
                        tracing::warn!(txn_id = %txn.id, %error, "skipping an EDU that does not parse")
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn on_event(
        &self,
        _event: AnyTimelineEvent,
        raw: &Raw<AnyTimelineEvent>,
    ) -> Result<(), HandlerError> {
        let event: Value = raw.deserialize_as_unchecked()?;
        self.on_agent_event(&event).await
    }

    async fn on_invalid_event(
        &self,
        raw: &Raw<AnyTimelineEvent>,
        _error: serde_json::Error,
    ) -> Result<(), HandlerError> {
        // Lenient: a message ruma's types refuse may still be one WhatsApp can carry.
        match raw.deserialize_as_unchecked::<Value>() {
            Ok(event) => self.on_agent_event(&event).await,
            Err(_) => Ok(()),
        }
    }

    async fn on_ephemeral(&self, edu: EphemeralEvent) -> Result<(), HandlerError> {
        let EphemeralEvent::Room {
            room_id,
            event: AnySyncEphemeralRoomEvent::Receipt(receipt),
        } = edu
        else {
            return Ok(());
        };
        let Some(portal) = self.store.portal_by_room(room_id.as_str())? else {
            return Ok(());
        };
        for (event_id, receipts) in &receipt.content.0 {
            let by_agent = receipts
                .get(&ReceiptType::Read)
                .is_some_and(|users| users.keys().any(|u| !self.is_own_user(u.as_str())));
            if by_agent {
                self.mark_read(&portal, event_id).await?;
            }
        }
        Ok(())
    }

    async fn query_user(&self, _user_id: &UserId) -> Result<bool, HandlerError> {
        // Puppets exist once their customer wrote; the bridge cannot start conversations.
        Ok(false)
    }
}

impl Bridge {
    async fn on_agent_event(&self, event: &Value) -> Result<(), HandlerError> {
        let str_of = |v: &Value| v.as_str().map(str::to_owned);
        let (Some(sender), Some(room_id), Some(kind)) = (
            str_of(&event["sender"]),
            str_of(&event["room_id"]),
            str_of(&event["type"]),
        ) else {
            return Ok(());
        };
        if kind == CONVERSATION_EVENT && event["state_key"] == "" {
            return self.conversation_changed(&room_id, &event["content"]).await;
        }
        if self.is_own_user(&sender) || event.get("state_key").is_some() {
            return Ok(());
        }
        let Some(portal) = self.store.portal_by_room(&room_id)? else {
            return Ok(());
        };
        let Some(event_id) = event["event_id"]
            .as_str()
            .and_then(|e| OwnedEventId::try_from(e).ok())
        else {
            return Ok(());
        };
        let content = &event["content"];
        match kind.as_str() {
            "m.room.message" | "m.sticker" => {
                self.agent_message(&portal, event_id, &kind, content).await
            }
            "m.reaction" => {
                let relation = &content["m.relates_to"];
                let (Some(target), Some(key)) =
                    (relation["event_id"].as_str(), relation["key"].as_str())
                else {
                    return Ok(());
                };
                let Some(wamid) = self.store.wamid_of(target)? else {
                    return Ok(());
                };
                self.store
                    .set_agent_reaction_target(event_id.as_str(), &wamid)?;
                let body = MessageBody::Reaction {
                    reaction: ReactionBody {
                        message_id: wamid,
                        emoji: key.to_owned(),
                    },
                };
                self.queue(&portal, None, body, None).await
            }
            "m.room.redaction" => {
                let redacts = event["redacts"]
                    .as_str()
                    .or_else(|| content["redacts"].as_str());
                let Some(target) =
                    redacts.and_then(|r| self.store.agent_reaction_target(r).ok().flatten())
                else {
                    return Ok(());
                };
                let body = MessageBody::Reaction {
                    reaction: ReactionBody {
                        message_id: target,
                        emoji: String::new(),
                    },
                };
                self.queue(&portal, None, body, None).await
            }
            _ => Ok(()),
        }
    }

    async fn agent_message(
        &self,
        portal: &Portal,
        event_id: OwnedEventId,
        kind: &str,
        content: &Value,
    ) -> Result<(), HandlerError> {
        if content["io.charla.internal"] == Value::Bool(true) {
            return Ok(());
        }
        let body = content["body"].as_str().unwrap_or_default();
        if body.starts_with('!') {
            return self.command(portal, event_id, body).await;
        }
        let relation = &content["m.relates_to"];
        if relation["rel_type"] == "m.replace" {
            let notice = Notice::Unsupported {
                what: "edits".into(),
            };
            return self
                .notice(&portal.room_id, &notice, Some(event_id.as_str()))
                .await;
        }
        let reply_to = match relation["m.in_reply_to"]["event_id"].as_str() {
            Some(target) => self.store.wamid_of(target)?,
            None => None,
        };
        let msgtype = if kind == "m.sticker" {
            "m.sticker"
        } else {
            content["msgtype"].as_str().unwrap_or_default()
        };
        let action = match msgtype {
            "m.text" | "m.notice" | "m.emote" => {
                let text = strip_reply_fallback(body);
                let text = if msgtype == "m.emote" {
                    format!("* {text}")
                } else {
                    text
                };
                Action::Message {
                    body: MessageBody::Text {
                        text: TextBody {
                            preview_url: text.contains("http://") || text.contains("https://"),
                            body: text,
                        },
                    },
                    reply_to,
                }
            }
            "m.image" | "m.video" | "m.audio" | "m.file" | "m.sticker" => {
                let Some(url) = content["url"].as_str() else {
                    let notice = Notice::Unsupported {
                        what: "encrypted files".into(),
                    };
                    return self
                        .notice(&portal.room_id, &notice, Some(event_id.as_str()))
                        .await;
                };
                let filename = content["filename"]
                    .as_str()
                    .filter(|f| !f.is_empty())
                    .unwrap_or(body)
                    .to_owned();
                // Matrix 1.10 captions: a `filename` that differs from `body` makes `body` the
                // caption.
                let caption = content["filename"]
                    .as_str()
                    .filter(|f| !f.is_empty() && *f != body && !body.is_empty())
                    .map(|_| body.to_owned());
                Action::Media {
                    msgtype: msgtype.to_owned(),
                    url: url.to_owned(),
                    mimetype: content["info"]["mimetype"]
                        .as_str()
                        .unwrap_or("application/octet-stream")
                        .to_owned(),
                    filename,
                    caption,
                    reply_to,
                }
            }
            "m.location" => {
                let Some((latitude, longitude)) =
                    content["geo_uri"].as_str().and_then(parse_geo_uri)
                else {
                    return Ok(());
                };
                let name = Some(body.to_owned()).filter(|b| {
                    !b.is_empty() && !b.starts_with("geo:") && !b.starts_with("Location")
                });
                Action::Message {
                    body: MessageBody::Location {
                        location: LocationBody {
                            latitude,
                            longitude,
                            name,
                            address: None,
                        },
                    },
                    reply_to,
                }
            }
            other => {
                let notice = Notice::Unsupported {
                    what: format!("messages of type {other}"),
                };
                return self
                    .notice(&portal.room_id, &notice, Some(event_id.as_str()))
                    .await;
            }
        };
        self.enqueue(Job {
            portal: portal.key.clone(),
            room_id: portal.room_id.clone(),
            event_id: Some(event_id),
            action,
            attempts: 0,
            told_pending: false,
        })
        .await
    }

    /// `!template NAME [params…]`, unless NAME is the support bot's; other commands stay in
    /// Matrix.
    async fn command(
        &self,
        portal: &Portal,
        event_id: OwnedEventId,
        body: &str,
    ) -> Result<(), HandlerError> {
        let mut words = body.split_whitespace();
        if words.next() != Some("!template") {
            return Ok(());
        }
        let Some(name) = words.next() else {
            return Ok(());
        };
        if self.config.bot_templates.iter().any(|t| t == name) {
            return Ok(());
        }
        let params: Vec<String> = words.map(str::to_owned).collect();
        let body = MessageBody::Template {
            template: TemplateBody::with_text_params(name, &self.config.template_language, &params),
        };
        self.queue(portal, Some(event_id), body, None).await
    }

    async fn queue(
        &self,
        portal: &Portal,
        event_id: Option<OwnedEventId>,
        body: MessageBody,
        reply_to: Option<String>,
    ) -> Result<(), HandlerError> {
        self.enqueue(Job {
            portal: portal.key.clone(),
            room_id: portal.room_id.clone(),
            event_id,
            action: Action::Message { body, reply_to },
            attempts: 0,
            told_pending: false,
        })
        .await
    }

    /// An agent read up to `event_id`: marks that customer message read, or (for a later event
    /// of the room) the customer's last message.
    async fn mark_read(
        &self,
        portal: &Portal,
        event_id: &ruma::EventId,
    ) -> Result<(), HandlerError> {
        let wamid = match self.store.wamid_of(event_id.as_str())? {
            Some(wamid) if self.store.message(&wamid)?.is_some_and(|l| l.inbound) => Some(wamid),
            _ => self.store.last_inbound(&portal.key)?,
        };
        let Some(wamid) = wamid else {
            return Ok(());
        };
        {
            let mut marks = self.read_marks.lock().unwrap_or_else(|e| e.into_inner());
            if marks.get(&portal.key) == Some(&wamid) {
                return Ok(());
            }
            marks.insert(portal.key.clone(), wamid.clone());
        }
        self.enqueue(Job {
            portal: portal.key.clone(),
            room_id: portal.room_id.clone(),
            event_id: None,
            action: Action::MarkRead { wamid },
            attempts: 0,
            told_pending: false,
        })
        .await
    }
}

/// The text without a rich reply's fallback (`> ` lines and the blank line after them).
pub fn strip_reply_fallback(body: &str) -> String {
    if !body.starts_with("> ") {
        return body.to_owned();
    }
    let mut lines = body.lines().skip_while(|l| l.starts_with('>'));
    let rest: Vec<&str> = lines.by_ref().collect();
    let rest = rest.join("\n");
    rest.strip_prefix('\n')
        .unwrap_or(&rest)
        .trim_start_matches('\n')
        .to_owned()
}

/// `geo:LAT,LON` (with optional `;u=…` and altitude) into coordinates.
pub fn parse_geo_uri(uri: &str) -> Option<(f64, f64)> {
    let coords = uri.strip_prefix("geo:")?.split(';').next()?;
    let mut parts = coords.split(',');
    let lat = parts.next()?.trim().parse().ok()?;
    let lon = parts.next()?.trim().parse().ok()?;
    Some((lat, lon))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_fallbacks_are_stripped() {
        assert_eq!(
            strip_reply_fallback("> <@a:x> hola\n> más\n\nrespuesta"),
            "respuesta"
        );
        assert_eq!(strip_reply_fallback("sin cita"), "sin cita");
    }

    #[test]
    fn geo_uris_parse() {
        assert_eq!(
            parse_geo_uri("geo:40.4168,-3.7038"),
            Some((40.4168, -3.7038))
        );
        assert_eq!(parse_geo_uri("geo:40.4,-3.7;u=35"), Some((40.4, -3.7)));
        assert_eq!(parse_geo_uri("http://x"), None);
    }
}
