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
use ruma::{EventId, OwnedEventId, RoomId, UserId};
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
        let Some(portal) = self.store.portal_by_room(&room_id)? else {
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
        let room_id = event["room_id"]
            .as_str()
            .and_then(|r| RoomId::parse(r).ok());
        let (Some(sender), Some(room_id), Some(kind)) =
            (str_of(&event["sender"]), room_id, str_of(&event["type"]))
        else {
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
        let Some(event_id) = event_id_at(&event["event_id"]) else {
            return Ok(());
        };
        let content = &event["content"];
        match kind.as_str() {
            "m.room.message" | "m.sticker" => {
                self.agent_message(&portal, event_id, &kind, content).await
            }
            "m.reaction" => self.agent_reaction(&portal, &event_id, content).await,
            "m.room.redaction" => {
                let redacts =
                    event_id_at(&event["redacts"]).or_else(|| event_id_at(&content["redacts"]));
                self.agent_redaction(&portal, redacts.as_deref()).await
            }
            _ => Ok(()),
        }
    }

    /// An agent's message: a `!` command, or something to send to the customer (or to tell
    /// the agents WhatsApp cannot carry).
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
        if content["m.relates_to"]["rel_type"] == "m.replace" {
            return self.unsupported(portal, &event_id, "edits".into()).await;
        }
        let reply_to = self.reply_target(content)?;
        match message_action(kind, content, reply_to) {
            Outgoing::Send(action) => {
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
            Outgoing::Unsupported(what) => self.unsupported(portal, &event_id, what).await,
            Outgoing::Nothing => Ok(()),
        }
    }

    /// The wamid of the message an agent's message replies to, if the bridge knows it.
    fn reply_target(&self, content: &Value) -> Result<Option<String>, HandlerError> {
        match event_id_at(&content["m.relates_to"]["m.in_reply_to"]["event_id"]) {
            Some(target) => Ok(self.store.wamid_of(&target)?),
            None => Ok(None),
        }
    }

    /// Tells the agents, in reply to their message, that WhatsApp cannot carry `what`.
    async fn unsupported(
        &self,
        portal: &Portal,
        event_id: &OwnedEventId,
        what: String,
    ) -> Result<(), HandlerError> {
        let notice = Notice::Unsupported { what };
        self.notice(&portal.room_id, &notice, Some(event_id.as_str()))
            .await
    }

    /// An agent's reaction to a customer's message, sent as a WhatsApp reaction.
    async fn agent_reaction(
        &self,
        portal: &Portal,
        event_id: &OwnedEventId,
        content: &Value,
    ) -> Result<(), HandlerError> {
        let relation = &content["m.relates_to"];
        let (Some(target), Some(key)) =
            (event_id_at(&relation["event_id"]), relation["key"].as_str())
        else {
            return Ok(());
        };
        let Some(wamid) = self.store.wamid_of(&target)? else {
            return Ok(());
        };
        self.store.set_agent_reaction_target(event_id, &wamid)?;
        let body = MessageBody::Reaction {
            reaction: ReactionBody {
                message_id: wamid,
                emoji: key.to_owned(),
            },
        };
        self.queue(portal, None, body, None).await
    }

    /// The redaction of an agent's reaction: WhatsApp removes a reaction sent with no emoji.
    async fn agent_redaction(
        &self,
        portal: &Portal,
        redacts: Option<&EventId>,
    ) -> Result<(), HandlerError> {
        let Some(target) = redacts.and_then(|r| self.store.agent_reaction_target(r).ok().flatten())
        else {
            return Ok(());
        };
        let body = MessageBody::Reaction {
            reaction: ReactionBody {
                message_id: target,
                emoji: String::new(),
            },
        };
        self.queue(portal, None, body, None).await
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
        let wamid = match self.store.wamid_of(event_id)? {
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

/// The event id a JSON value holds, if it is one.
fn event_id_at(value: &Value) -> Option<OwnedEventId> {
    value.as_str().and_then(|e| EventId::parse(e).ok())
}

/// What an agent's message (not a command, not an edit) becomes on WhatsApp.
#[derive(Debug, PartialEq)]
enum Outgoing {
    /// A job for the outbox.
    Send(Action),
    /// Nothing WhatsApp can carry: the agents are told `what` is not supported.
    Unsupported(String),
    /// Nothing to send and nothing to say (a location without coordinates).
    Nothing,
}

/// The action for an agent's message of event type `kind` (`m.room.message`, `m.sticker`),
/// replying to the WhatsApp message `reply_to`.
fn message_action(kind: &str, content: &Value, reply_to: Option<String>) -> Outgoing {
    let body = content["body"].as_str().unwrap_or_default();
    let msgtype = if kind == "m.sticker" {
        "m.sticker"
    } else {
        content["msgtype"].as_str().unwrap_or_default()
    };
    match msgtype {
        "m.text" | "m.notice" | "m.emote" => Outgoing::Send(text_action(msgtype, body, reply_to)),
        "m.image" | "m.video" | "m.audio" | "m.file" | "m.sticker" => {
            media_action(msgtype, body, content, reply_to)
        }
        "m.location" => location_action(body, content, reply_to),
        other => Outgoing::Unsupported(format!("messages of type {other}")),
    }
}

/// A text, notice or emote (`* text`, as WhatsApp has no emotes), without the reply fallback;
/// a link in it asks WhatsApp for a preview.
fn text_action(msgtype: &str, body: &str, reply_to: Option<String>) -> Action {
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

/// A file, uploaded to WhatsApp when sent; an encrypted one (no `url`) cannot be.
fn media_action(msgtype: &str, body: &str, content: &Value, reply_to: Option<String>) -> Outgoing {
    let Some(url) = content["url"].as_str() else {
        return Outgoing::Unsupported("encrypted files".into());
    };
    let filename = content["filename"]
        .as_str()
        .filter(|f| !f.is_empty())
        .unwrap_or(body)
        .to_owned();
    // Matrix 1.10 captions: a `filename` that differs from `body` makes `body` the caption.
    let caption = content["filename"]
        .as_str()
        .filter(|f| !f.is_empty() && *f != body && !body.is_empty())
        .map(|_| body.to_owned());
    Outgoing::Send(Action::Media {
        msgtype: msgtype.to_owned(),
        url: url.to_owned(),
        mimetype: content["info"]["mimetype"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_owned(),
        filename,
        caption,
        reply_to,
    })
}

/// A location from its `geo:` URI, named by the body unless the body is a generated one.
fn location_action(body: &str, content: &Value, reply_to: Option<String>) -> Outgoing {
    let Some((latitude, longitude)) = content["geo_uri"].as_str().and_then(parse_geo_uri) else {
        return Outgoing::Nothing;
    };
    let name = Some(body.to_owned())
        .filter(|b| !b.is_empty() && !b.starts_with("geo:") && !b.starts_with("Location"));
    Outgoing::Send(Action::Message {
        body: MessageBody::Location {
            location: LocationBody {
                latitude,
                longitude,
                name,
                address: None,
            },
        },
        reply_to,
    })
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
    use serde_json::json;

    use super::*;

    fn text(body: &str, preview_url: bool, reply_to: Option<&str>) -> Outgoing {
        Outgoing::Send(Action::Message {
            body: MessageBody::Text {
                text: TextBody {
                    preview_url,
                    body: body.into(),
                },
            },
            reply_to: reply_to.map(str::to_owned),
        })
    }

    #[test]
    fn texts_lose_their_reply_fallback_and_emotes_become_starred() {
        let reply = json!({"msgtype": "m.text", "body": "> <@a:x> hola\n\nsee https://x.test"});
        assert_eq!(
            message_action("m.room.message", &reply, Some("wamid.1".into())),
            text("see https://x.test", true, Some("wamid.1"))
        );
        let emote = json!({"msgtype": "m.emote", "body": "waves"});
        assert_eq!(
            message_action("m.room.message", &emote, None),
            text("* waves", false, None)
        );
        let notice = json!({"msgtype": "m.notice", "body": "http only in words"});
        assert_eq!(
            message_action("m.room.message", &notice, None),
            text("http only in words", false, None)
        );
    }

    #[test]
    fn files_keep_their_name_and_caption_and_encrypted_ones_are_unsupported() {
        let captioned = json!({
            "msgtype": "m.image", "body": "the invoice", "filename": "invoice.png",
            "url": "mxc://x/abc", "info": {"mimetype": "image/png"},
        });
        assert_eq!(
            message_action("m.room.message", &captioned, None),
            Outgoing::Send(Action::Media {
                msgtype: "m.image".into(),
                url: "mxc://x/abc".into(),
                mimetype: "image/png".into(),
                filename: "invoice.png".into(),
                caption: Some("the invoice".into()),
                reply_to: None,
            })
        );
        // A sticker is sent as an image whatever its msgtype says; the body names the file.
        let sticker = json!({"body": "cat.webp", "url": "mxc://x/cat"});
        assert_eq!(
            message_action("m.sticker", &sticker, Some("wamid.2".into())),
            Outgoing::Send(Action::Media {
                msgtype: "m.sticker".into(),
                url: "mxc://x/cat".into(),
                mimetype: "application/octet-stream".into(),
                filename: "cat.webp".into(),
                caption: None,
                reply_to: Some("wamid.2".into()),
            })
        );
        // A `filename` equal to the body is no caption.
        let plain = json!({
            "msgtype": "m.file", "body": "report.pdf", "filename": "report.pdf",
            "url": "mxc://x/pdf", "info": {"mimetype": "application/pdf"},
        });
        assert_eq!(
            message_action("m.room.message", &plain, None),
            Outgoing::Send(Action::Media {
                msgtype: "m.file".into(),
                url: "mxc://x/pdf".into(),
                mimetype: "application/pdf".into(),
                filename: "report.pdf".into(),
                caption: None,
                reply_to: None,
            })
        );
        let encrypted = json!({"msgtype": "m.file", "body": "secret.pdf", "file": {}});
        assert_eq!(
            message_action("m.room.message", &encrypted, None),
            Outgoing::Unsupported("encrypted files".into())
        );
    }

    #[test]
    fn locations_need_coordinates_and_keep_only_a_real_name() {
        let named = json!({"msgtype": "m.location", "body": "Oficina", "geo_uri": "geo:40.4,-3.7"});
        let generated =
            json!({"msgtype": "m.location", "body": "geo:40.4,-3.7", "geo_uri": "geo:40.4,-3.7"});
        let location = |name: Option<&str>| {
            Outgoing::Send(Action::Message {
                body: MessageBody::Location {
                    location: LocationBody {
                        latitude: 40.4,
                        longitude: -3.7,
                        name: name.map(str::to_owned),
                        address: None,
                    },
                },
                reply_to: None,
            })
        };
        assert_eq!(
            message_action("m.room.message", &named, None),
            location(Some("Oficina"))
        );
        assert_eq!(
            message_action("m.room.message", &generated, None),
            location(None)
        );
        let nowhere = json!({"msgtype": "m.location", "body": "somewhere", "geo_uri": "x"});
        assert_eq!(
            message_action("m.room.message", &nowhere, None),
            Outgoing::Nothing
        );
    }

    #[test]
    fn other_message_types_are_unsupported_by_name() {
        let poll = json!({"msgtype": "m.poll", "body": "?"});
        assert_eq!(
            message_action("m.room.message", &poll, None),
            Outgoing::Unsupported("messages of type m.poll".into())
        );
    }

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
