//! One customer message into Matrix events, sent by the customer's puppet.
//!
//! `text` → `m.text`; `image`/`video`/`audio`/`document`/`sticker` → downloaded from WhatsApp,
//! uploaded to the homeserver, `m.image`/`m.video`/`m.audio`/`m.file`/`m.sticker` with caption,
//! mimetype, size and filename; `location` → `m.location` with a `geo:` URI; `contacts` → a
//! readable text plus one vCard file per contact; `interactive` and `button` → their text;
//! `reaction` → `m.reaction` (an empty emoji redacts it); `context.id` → a Matrix reply;
//! `unsupported`, `system` and unknown types → `m.notice`.
//!
//! Every event is sent with a txnId derived from the wamid, so a message processed twice (a
//! crash between sending and recording) is still one event.

use appservice::{HandlerError, SendOptions};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, UInt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::bridge::Bridge;
use crate::cloud::error::ErrorClass;
use crate::cloud::webhook::{InboundMessage, MediaRef, SharedContact};
use crate::store::{MessageLink, Portal};

/// A stable txnId for the `index`-th event of a WhatsApp message.
pub fn txn_id(wamid: &str, index: usize) -> String {
    let digest = Sha256::digest(wamid.as_bytes());
    format!("wa{}-{index}", hex::encode(&digest[..12]))
}

impl Bridge {
    /// Posts a customer's message in their portal, once.
    pub(crate) async fn bridge_message(
        &self,
        portal: &Portal,
        msg: &InboundMessage,
    ) -> Result<(), HandlerError> {
        if self.store.message(&msg.id)?.is_some() {
            tracing::debug!(wamid = %msg.id, "message seen before");
            return Ok(());
        }
        if msg.kind == "reaction" {
            return self.bridge_reaction(portal, msg).await;
        }
        let mut events = self.convert(msg).await?;
        if let Some(context) = &msg.context
            && let Some(target) = self.store.message(&context.id)?
            && let Some((_, content)) = events.first_mut()
        {
            content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": target.event_id}});
        }
        let puppet = self.puppet(&portal.puppet);
        let ts = UInt::new(msg.timestamp_secs().saturating_mul(1000))
            .filter(|ts| *ts > UInt::MIN)
            .map(MilliSecondsSinceUnixEpoch);
        let mut first: Option<OwnedEventId> = None;
        for (index, (event_type, content)) in events.iter().enumerate() {
            let options = SendOptions {
                txn_id: Some(txn_id(&msg.id, index)),
                ts,
            };
            let event_id = puppet
                .send_event(&portal.room_id, event_type, content, options)
                .await?;
            first.get_or_insert(event_id);
        }
        if let Some(event_id) = first {
            self.store.link_message(
                &msg.id,
                &MessageLink {
                    room_id: portal.room_id.clone(),
                    event_id,
                    inbound: true,
                    portal: portal.key.clone(),
                },
            )?;
        }
        Ok(())
    }

    /// A reaction, or its removal (empty emoji), on a message of the portal.
    async fn bridge_reaction(
        &self,
        portal: &Portal,
        msg: &InboundMessage,
    ) -> Result<(), HandlerError> {
        let Some(reaction) = &msg.reaction else {
            return Ok(());
        };
        let Some(target) = self.store.message(&reaction.message_id)? else {
            tracing::debug!(target = %reaction.message_id, "reaction to a message the bridge does not know");
            return Ok(());
        };
        let puppet = self.puppet(&portal.puppet);
        let previous = self
            .store
            .customer_reaction(&portal.key, &reaction.message_id)?;
        let mut last = None;
        if let Some(previous) = &previous {
            last = Some(
                puppet
                    .redact(&portal.room_id, previous, None, Some(txn_id(&msg.id, 0)))
                    .await?,
            );
        }
        let emoji = reaction.emoji.as_deref().unwrap_or_default();
        let current = if emoji.is_empty() {
            None
        } else {
            let options = SendOptions {
                txn_id: Some(txn_id(&msg.id, 1)),
                ts: None,
            };
            let event_id = puppet
                .react(&portal.room_id, &target.event_id, emoji, options)
                .await?;
            last = Some(event_id.clone());
            Some(event_id)
        };
        self.store
            .set_customer_reaction(&portal.key, &reaction.message_id, current.as_ref())?;
        if let Some(event_id) = last {
            self.store.link_message(
                &msg.id,
                &MessageLink {
                    room_id: portal.room_id.clone(),
                    event_id,
                    inbound: true,
                    portal: portal.key.clone(),
                },
            )?;
        }
        Ok(())
    }

    /// The Matrix events (type, content) of a message.
    async fn convert(&self, msg: &InboundMessage) -> Result<Vec<(String, Value)>, HandlerError> {
        let message = |msgtype: &str, body: String| {
            (
                "m.room.message".to_owned(),
                json!({"msgtype": msgtype, "body": body}),
            )
        };
        let media = |m: &Option<MediaRef>| m.clone().unwrap_or_default();
        Ok(match msg.kind.as_str() {
            "text" => vec![message(
                "m.text",
                msg.text
                    .as_ref()
                    .map(|t| t.body.clone())
                    .unwrap_or_default(),
            )],
            "image" => vec![self.media_event("m.image", &media(&msg.image)).await?],
            "video" => vec![self.media_event("m.video", &media(&msg.video)).await?],
            "audio" => vec![self.media_event("m.audio", &media(&msg.audio)).await?],
            "document" => vec![self.media_event("m.file", &media(&msg.document)).await?],
            "sticker" => vec![self.media_event("m.sticker", &media(&msg.sticker)).await?],
            "location" => {
                let l = msg.location.clone().unwrap_or_default();
                let described: Vec<&str> = [l.name.as_deref(), l.address.as_deref()]
                    .into_iter()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .collect();
                let body = if described.is_empty() {
                    format!("Location: {},{}", l.latitude, l.longitude)
                } else {
                    described.join(", ")
                };
                vec![(
                    "m.room.message".to_owned(),
                    json!({
                        "msgtype": "m.location",
                        "body": body,
                        "geo_uri": format!("geo:{},{}", l.latitude, l.longitude),
                    }),
                )]
            }
            "contacts" => {
                self.contact_events(msg.contacts.as_deref().unwrap_or_default())
                    .await?
            }
            "interactive" => {
                let i = msg.interactive.clone().unwrap_or_default();
                let reply = i.button_reply.or(i.list_reply).unwrap_or_default();
                let body = match reply.description.filter(|d| !d.is_empty()) {
                    Some(d) => format!("{} ({d})", reply.title),
                    None => reply.title,
                };
                vec![message("m.text", body)]
            }
            "button" => vec![message(
                "m.text",
                msg.button
                    .as_ref()
                    .map(|b| b.text.clone())
                    .unwrap_or_default(),
            )],
            "system" => vec![message(
                "m.notice",
                msg.system
                    .as_ref()
                    .map(|s| s.body.clone())
                    .unwrap_or_default(),
            )],
            "unsupported" => {
                let why: Vec<String> = msg.errors.iter().map(|e| e.reason()).collect();
                let mut body =
                    "The customer sent a message that WhatsApp does not deliver to businesses"
                        .to_owned();
                if !why.is_empty() {
                    body = format!("{body}: {}", why.join("; "));
                }
                vec![message("m.notice", body)]
            }
            other => vec![message(
                "m.notice",
                format!(
                    "The customer sent a WhatsApp message of type \"{other}\", which the bridge does not show"
                ),
            )],
        })
    }

    /// Downloads a customer's media and uploads it to the homeserver. WhatsApp being
    /// unreachable is an error (the webhook is retried); media WhatsApp refuses becomes a notice.
    async fn media_event(
        &self,
        msgtype: &str,
        media: &MediaRef,
    ) -> Result<(String, Value), HandlerError> {
        let (info, bytes) = match self.graph.download(&media.id).await {
            Ok(downloaded) => downloaded,
            Err(error) if error.class() == ErrorClass::Permanent => {
                return Ok((
                    "m.room.message".into(),
                    json!({"msgtype": "m.notice", "body": format!("The customer sent a file that could not be fetched from WhatsApp: {}", error.reason())}),
                ));
            }
            Err(error) => return Err(error.into()),
        };
        let mimetype = media
            .mime_type
            .clone()
            .filter(|m| !m.is_empty())
            .or(Some(info.mime_type).filter(|m| !m.is_empty()))
            .unwrap_or_else(|| "application/octet-stream".into());
        let filename = media
            .filename
            .clone()
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| default_filename(msgtype, &mimetype));
        let size = bytes.len();
        let url = self.bot.upload(bytes, &mimetype, Some(&filename)).await?;
        let caption = media.caption.clone().filter(|c| !c.is_empty());
        let mut content = json!({
            "body": caption.clone().unwrap_or_else(|| filename.clone()),
            "filename": filename,
            "url": url,
            "info": {"mimetype": mimetype, "size": size},
        });
        if msgtype == "m.sticker" {
            return Ok(("m.sticker".into(), content));
        }
        content["msgtype"] = json!(msgtype);
        if media.voice == Some(true) {
            content["org.matrix.msc3245.voice"] = json!({});
            content["org.matrix.msc1767.audio"] = json!({});
        }
        Ok(("m.room.message".into(), content))
    }

    /// A shared contact card: a readable text, then one vCard file per contact.
    async fn contact_events(
        &self,
        contacts: &[SharedContact],
    ) -> Result<Vec<(String, Value)>, HandlerError> {
        let mut text = Vec::new();
        let mut files = Vec::new();
        for c in contacts {
            text.push(describe_contact(c));
            let vcard = vcard(c);
            let name = if c.name.formatted_name.is_empty() {
                "contact"
            } else {
                &c.name.formatted_name
            };
            let filename = format!("{name}.vcf");
            let size = vcard.len();
            let url = self
                .bot
                .upload(vcard.into_bytes(), "text/vcard", Some(&filename))
                .await?;
            files.push((
                "m.room.message".to_owned(),
                json!({"msgtype": "m.file", "body": filename, "filename": filename, "url": url,
                       "info": {"mimetype": "text/vcard", "size": size}}),
            ));
        }
        let mut events = vec![(
            "m.room.message".to_owned(),
            json!({"msgtype": "m.text", "body": text.join("\n\n")}),
        )];
        events.extend(files);
        Ok(events)
    }
}

fn default_filename(msgtype: &str, mimetype: &str) -> String {
    let base = match msgtype {
        "m.image" => "image",
        "m.video" => "video",
        "m.audio" => "audio",
        "m.sticker" => "sticker",
        _ => "file",
    };
    let subtype = mimetype
        .split(';')
        .next()
        .and_then(|m| m.split('/').nth(1))
        .unwrap_or("bin")
        .trim();
    let ext = match subtype {
        "jpeg" => "jpg",
        "mpeg" => "mp3",
        "plain" => "txt",
        "octet-stream" => "bin",
        other => other,
    };
    format!("{base}.{ext}")
}

/// `Contact: María López` then a line per phone, email and organisation.
pub fn describe_contact(c: &SharedContact) -> String {
    let mut lines = vec![format!("Contact: {}", c.name.formatted_name)];
    for p in &c.phones {
        match &p.kind {
            Some(kind) => lines.push(format!("Phone ({kind}): {}", p.phone)),
            None => lines.push(format!("Phone: {}", p.phone)),
        }
    }
    for e in &c.emails {
        lines.push(format!("Email: {}", e.email));
    }
    if let Some(company) = c.org.as_ref().and_then(|o| o.company.as_ref()) {
        lines.push(format!("Organisation: {company}"));
    }
    lines.join("\n")
}

/// A vCard 3.0 of a shared contact.
pub fn vcard(c: &SharedContact) -> String {
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace(';', "\\;")
            .replace('\n', "\\n")
    };
    let mut lines = vec!["BEGIN:VCARD".to_owned(), "VERSION:3.0".to_owned()];
    lines.push(format!("FN:{}", escape(&c.name.formatted_name)));
    lines.push(format!(
        "N:{};{};;;",
        escape(c.name.last_name.as_deref().unwrap_or_default()),
        escape(c.name.first_name.as_deref().unwrap_or_default())
    ));
    for p in &c.phones {
        let kind = p.kind.as_deref().unwrap_or("CELL").to_ascii_uppercase();
        lines.push(format!("TEL;TYPE={kind}:{}", escape(&p.phone)));
    }
    for e in &c.emails {
        lines.push(format!("EMAIL:{}", escape(&e.email)));
    }
    if let Some(company) = c.org.as_ref().and_then(|o| o.company.as_ref()) {
        lines.push(format!("ORG:{}", escape(company)));
    }
    lines.push("END:VCARD".to_owned());
    lines.join("\r\n") + "\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::webhook::{ContactName, ContactPhone};

    #[test]
    fn txn_ids_are_stable_and_distinct() {
        assert_eq!(txn_id("wamid.A", 0), txn_id("wamid.A", 0));
        assert_ne!(txn_id("wamid.A", 0), txn_id("wamid.A", 1));
        assert_ne!(txn_id("wamid.A", 0), txn_id("wamid.B", 0));
    }

    #[test]
    fn a_contact_reads_well_and_becomes_a_vcard() {
        let c = SharedContact {
            name: ContactName {
                formatted_name: "Ana Ruiz".into(),
                first_name: Some("Ana".into()),
                last_name: Some("Ruiz".into()),
            },
            phones: vec![ContactPhone {
                phone: "+34 600 111 333".into(),
                kind: Some("CELL".into()),
                wa_id: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            describe_contact(&c),
            "Contact: Ana Ruiz\nPhone (CELL): +34 600 111 333"
        );
        assert_eq!(
            vcard(&c),
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ana Ruiz\r\nN:Ruiz;Ana;;;\r\nTEL;TYPE=CELL:+34 600 111 333\r\nEND:VCARD\r\n"
        );
    }

    #[test]
    fn default_filenames_follow_the_mimetype() {
        assert_eq!(default_filename("m.image", "image/jpeg"), "image.jpg");
        assert_eq!(
            default_filename("m.audio", "audio/ogg; codecs=opus"),
            "audio.ogg"
        );
    }
}
