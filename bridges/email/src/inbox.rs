//! The inbox worker: turns the mails the SMTP listener took in into Matrix events, and never
//! drops one.
//!
//! Each round takes the oldest mails, groups them by conversation (a lane: one conversation's
//! mails stay in order) and works on the lanes concurrently. A mail leaves the inbox in the
//! write that records what it became (its Message-ID linked to its event, the conversation's
//! thread ids); that write is not waited for: a crash before it is on disk brings the mail
//! again, and its events go again with the same transaction ids (`mail<n>.<part>`), which the
//! homeserver answers with the events it already has, while the Message-ID link skips a mail
//! whose record survived.
//!
//! A failure keeps the mail: the homeserver unreachable or failing pauses the worker (doubling,
//! at most `max_retry_secs`); a mail the homeserver refuses again and again (a 4xx other than
//! 429) is set aside in the dead-letter table after [`DEAD_LETTER_AFTER`] attempts, with an
//! error line, so the mails behind it go on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use appservice::{HandlerError, SendOptions};
use charla_storage::Batch;
use futures_util::StreamExt;
use ruma::{OwnedEventId, RoomId};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::auth::AuthSummary;
use crate::bridge::Bridge;
use crate::mail::{self, Bounce, MailKind, ParsedMail};
use crate::smtp::Envelope;
use crate::store::{InboxMeta, MessageLink, Portal, Table};

/// Mails taken per round, and the bytes of mail a round holds at most (past it, the round
/// ends with the mail that crossed it): a queue of 25 MB mails is read a few at a time.
const BATCH: usize = 512;
const BATCH_BYTES: usize = 64 << 20;

/// Conversations worked on at the same time.
const CONCURRENCY: usize = 64;

/// Attempts of a mail the homeserver refuses before it is set aside.
pub const DEAD_LETTER_AFTER: u32 = 5;

/// Runs until `stopped` turns true.
pub async fn run(bridge: Arc<Bridge>, mut stopped: watch::Receiver<bool>) {
    let mut failures = 0u32;
    let mut refusals: HashMap<u64, u32> = HashMap::new();
    loop {
        if *stopped.borrow() {
            return;
        }
        let mails = match bridge.store.inbox(BATCH, BATCH_BYTES) {
            Ok(mails) => mails,
            Err(error) => {
                tracing::error!(%error, "cannot read the email inbox");
                Vec::new()
            }
        };
        if mails.is_empty() {
            tokio::select! {
                _ = bridge.inbox_wake.notified() => {}
                _ = stopped.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let failed = bridge.round(mails, &mut refusals).await;
        if failed {
            failures += 1;
            let pause =
                Duration::from_millis(200u64 << failures.min(10)).min(bridge.config.max_retry());
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.changed() => {}
            }
        } else {
            failures = 0;
        }
    }
}

/// A mail read and placed in its conversation's lane.
struct Inbound {
    seq: u64,
    meta: InboxMeta,
    raw: Vec<u8>,
    mail: ParsedMail,
}

impl Bridge {
    /// One round; true when a mail could not be brought in (the worker pauses).
    async fn round(
        &self,
        mails: Vec<(u64, InboxMeta, Vec<u8>)>,
        refusals: &mut HashMap<u64, u32>,
    ) -> bool {
        let mut lanes: Vec<(String, Vec<Inbound>)> = Vec::new();
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut failed = false;
        for (seq, meta, raw) in mails {
            let Some(mail) = mail::parse(&raw, &self.config.address) else {
                tracing::warn!(seq, "a mail without headers: set aside");
                self.set_aside(seq, "not a mail (no headers)");
                continue;
            };
            let key = match self.thread_of(&mail, &format!("inbox-{seq}")) {
                Ok((key, _)) => key,
                Err(error) => {
                    tracing::error!(%error, "cannot read the email bridge's threads");
                    return true;
                }
            };
            let slot = *slots.entry(key.clone()).or_insert_with(|| {
                lanes.push((key, Vec::new()));
                lanes.len() - 1
            });
            lanes[slot].1.push(Inbound {
                seq,
                meta,
                raw,
                mail,
            });
        }
        let results: Vec<Vec<(u64, Result<(), HandlerError>)>> = futures_util::stream::iter(lanes)
            .map(|(_, mails)| self.run_lane(mails))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (seq, result) in results.into_iter().flatten() {
            let Err(error) = result else {
                refusals.remove(&seq);
                continue;
            };
            failed = true;
            if blocks_everyone(&error) {
                tracing::error!(%error, "mails cannot reach Matrix; they are kept and retried");
                continue;
            }
            let attempts = refusals.entry(seq).or_insert(0);
            *attempts += 1;
            if *attempts >= DEAD_LETTER_AFTER {
                tracing::error!(seq, %error, "the homeserver keeps refusing a mail: set aside in the email bridge's dead letters");
                self.set_aside(seq, &error.to_string());
                refusals.remove(&seq);
            } else {
                tracing::warn!(seq, %error, attempts = *attempts, "the homeserver refused a mail; retried");
            }
        }
        failed
    }

    fn set_aside(&self, seq: u64, reason: &str) {
        if let Err(error) = self.store.set_aside(seq, reason) {
            tracing::error!(%error, seq, "cannot set a mail aside");
        }
    }

    /// One conversation's mails, in order, up to the first that fails (the rest wait for it).
    async fn run_lane(&self, mails: Vec<Inbound>) -> Vec<(u64, Result<(), HandlerError>)> {
        let mut results = Vec::with_capacity(mails.len());
        let mut blocked = false;
        for inbound in mails {
            if blocked {
                continue;
            }
            let result = self.bring(&inbound).await;
            blocked = result.is_err();
            results.push((inbound.seq, result));
        }
        results
    }

    /// One mail into Matrix (or into a bounce's delivery state), and out of the inbox.
    async fn bring(&self, inbound: &Inbound) -> Result<(), HandlerError> {
        let Inbound {
            seq,
            meta,
            raw,
            mail,
        } = inbound;
        let mut batch = Batch::<Table>::new();
        self.store.remove_mail(&mut batch, *seq);
        match &mail.kind {
            MailKind::Bounce(bounce) => self.bounced(bounce, &mut batch).await?,
            MailKind::Automatic(reason) => {
                // RFC 3834: automatic mail never opens a conversation nor gets the desk's
                // greeting (which would answer an auto-responder with another).
                tracing::info!(from = %mail.from_address, reason, "automatic mail not brought into a conversation");
            }
            MailKind::Personal if meta.envelope.mail_from.is_empty() => {
                tracing::info!(from = %mail.from_address, "mail from the null sender not brought into a conversation");
            }
            MailKind::Personal if crate::portal::answer_address(mail).is_empty() => {
                // Nobody to answer: a conversation nobody can reply to would only mislead.
                tracing::warn!(seq, "a mail without a usable From address set aside");
                self.set_aside(*seq, "no usable From or Reply-To address");
                return Ok(());
            }
            MailKind::Personal => {
                // Only a mail brought in links its own Message-ID (also one of attachments
                // alone, whose link names no text event).
                let known = match &mail.message_id {
                    Some(id) => self.store.message(id)?.is_some_and(|l| !l.outbound),
                    None => false,
                };
                if known {
                    tracing::debug!(seq, "a mail already brought in (sent twice by its MTA)");
                } else {
                    self.post(*seq, meta, raw, mail, &mut batch).await?;
                }
            }
        }
        let _ = self.store.write(batch)?;
        self.store.mail_removed();
        Ok(())
    }

    /// A customer's mail as messages in its conversation.
    async fn post(
        &self,
        seq: u64,
        meta: &InboxMeta,
        raw: &[u8],
        mail: &ParsedMail,
        batch: &mut Batch<Table>,
    ) -> Result<(), HandlerError> {
        let (key, portal) = self.thread_of(mail, &format!("inbox-{seq}"))?;
        let opened = portal.is_none();
        let mut portal = match portal {
            Some(mut portal) => {
                if portal.setting_up {
                    self.finish_portal(&mut portal).await?;
                }
                self.reopen_if_closed(&portal.room_id).await?;
                portal
            }
            None => self.open_portal(&key, mail).await?,
        };
        let auth = match &self.auth {
            Some(auth) => Some(
                auth.check(raw, &meta.envelope, &self.config.smtp_hostname())
                    .await,
            ),
            None => None,
        };
        let puppet = self.client.intent(portal.puppet.clone());
        let content = message_content(mail, &meta.envelope, auth.as_ref());
        let options = |part: usize| SendOptions {
            txn_id: Some(format!("mail{seq}.{part}")),
            ..SendOptions::default()
        };
        let event_id = if mail.text.trim().is_empty() && !mail.attachments.is_empty() {
            None
        } else {
            Some(
                puppet
                    .send_event(&portal.room_id, "m.room.message", &content, options(0))
                    .await?,
            )
        };
        for (i, attachment) in mail.attachments.iter().enumerate() {
            let uri = puppet
                .upload(
                    attachment.data.clone(),
                    &attachment.content_type,
                    Some(&attachment.filename),
                )
                .await?;
            let msgtype = match attachment.content_type.split('/').next() {
                Some("image") => "m.image",
                Some("video") => "m.video",
                Some("audio") => "m.audio",
                _ => "m.file",
            };
            let content = json!({
                "msgtype": msgtype,
                "body": attachment.filename,
                "filename": attachment.filename,
                "url": uri,
                "info": {"mimetype": attachment.content_type, "size": attachment.data.len()},
                "io.charla.email": {"message_id": mail.message_id, "content_id": attachment.content_id},
            });
            puppet
                .send_event(&portal.room_id, "m.room.message", &content, options(i + 1))
                .await?;
        }
        if let Some(notice) = auth.as_ref().and_then(|a| auth_notice(a, mail, opened)) {
            let content =
                json!({"msgtype": "m.notice", "body": notice, "io.charla.internal": true});
            let options = SendOptions {
                txn_id: Some(format!("mail{seq}.auth")),
                ..SendOptions::default()
            };
            self.bot
                .send_event(&portal.room_id, "m.room.message", &content, options)
                .await?;
        }
        self.record_thread(&mut portal, mail, event_id, batch)?;
        Ok(())
    }

    /// Links the mail's ids to the conversation, and keeps what answers thread with.
    fn record_thread(
        &self,
        portal: &mut Portal,
        mail: &ParsedMail,
        event_id: Option<OwnedEventId>,
        batch: &mut Batch<Table>,
    ) -> Result<(), HandlerError> {
        let link = MessageLink {
            portal: portal.key.clone(),
            event_id,
            outbound: false,
        };
        if let Some(id) = &mail.message_id {
            self.store.link_message(batch, id, &link)?;
        }
        crate::portal::thread_into(portal, mail);
        self.store.save_portal(batch, portal)?;
        Ok(())
    }

    /// A delivery status notification: the answer it is about is marked failed, and the
    /// agents told why. Nothing else: a bounce never opens a conversation.
    async fn bounced(&self, bounce: &Bounce, batch: &mut Batch<Table>) -> Result<(), HandlerError> {
        if !matches!(bounce.action.as_str(), "failed" | "") {
            tracing::info!(action = %bounce.action, "a delivery status notification that is not a failure");
            return Ok(());
        }
        let Some(link) = bounce
            .original_message_id
            .as_deref()
            .map(|id| self.store.message(id))
            .transpose()?
            .flatten()
            .filter(|link| link.outbound)
        else {
            tracing::info!(original = ?bounce.original_message_id, "a bounce of a mail the desk did not send");
            return Ok(());
        };
        let Some(event_id) = link.event_id else {
            return Ok(());
        };
        let Some(mut delivery) = self.store.delivery(&event_id)? else {
            return Ok(());
        };
        let reason = match &bounce.recipient {
            Some(recipient) => format!("{recipient}: {}", bounce.diagnostic),
            None => bounce.diagnostic.clone(),
        };
        delivery.status = "failed".into();
        delivery.error = Some(reason.clone());
        delivery.updated_ts = crate::now_ms();
        self.store.put_delivery(batch, &event_id, &delivery)?;
        self.tell_failed(&delivery.room_id, &event_id, &format!("bounced: {reason}"))
            .await
    }

    /// Tells the agents, in reply to their message, that it did not reach the customer.
    pub(crate) async fn tell_failed(
        &self,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        reason: &str,
    ) -> Result<(), HandlerError> {
        let body = format!("❌ Not delivered by email: {reason}");
        self.notice_to(room_id, event_id, &body, "failed").await
    }

    /// A private notice of the bridge bot in reply to `event_id`, sent once however often it
    /// is asked for (its txnId is `kind` and the event's).
    pub(crate) async fn notice_to(
        &self,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        body: &str,
        kind: &str,
    ) -> Result<(), HandlerError> {
        let content = json!({
            "msgtype": "m.notice",
            "body": body,
            "io.charla.internal": true,
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
        });
        let options = SendOptions {
            txn_id: Some(format!(
                "{kind}.{}",
                event_id.as_str().trim_start_matches('$')
            )),
            ..SendOptions::default()
        };
        self.bot
            .send_event(room_id, "m.room.message", &content, options)
            .await?;
        Ok(())
    }
}

/// What the agents are told of a mail's authentication: a warning whenever DMARC fails, and
/// the three results once, with the mail that opens a conversation (later mails of the thread
/// carry them in `io.charla.email.auth`, shown only when something is wrong).
fn auth_notice(auth: &AuthSummary, mail: &ParsedMail, opened: bool) -> Option<String> {
    if auth.dmarc_failed() {
        Some(format!(
            "⚠️ This mail failed its sender's DMARC check ({}): it may not be from {}. Check \
             before sharing anything about the account.",
            auth.header, mail.from_address
        ))
    } else if opened {
        Some(format!(
            "Sender checks for {}: SPF {}, DKIM {}, DMARC {}.",
            mail.from_address, auth.spf, auth.dkim, auth.dmarc
        ))
    } else {
        None
    }
}

/// Keeps the root and the newest 19 references: enough for every mail client to thread, and
/// a header that stays short whatever a long thread (or a hostile sender) put in it.
pub(crate) fn bound_references(references: &mut Vec<String>) {
    const KEEP: usize = 20;
    if references.len() > KEEP {
        let newest = references.split_off(references.len() - (KEEP - 1));
        references.truncate(1);
        references.extend(newest);
    }
}

/// The `m.room.message` of a mail's text: plain body, sanitized HTML, and the mail's record.
fn message_content(mail: &ParsedMail, envelope: &Envelope, auth: Option<&AuthSummary>) -> Value {
    let mut content = json!({
        "msgtype": "m.text",
        "body": mail.text,
        "io.charla.email": {
            "message_id": mail.message_id,
            "from": mail.from_address,
            "name": mail.from_name,
            "to": envelope.recipients,
            "tls": envelope.tls,
            "subject": mail.subject,
            "date_ms": mail.date_ms,
            "full_body": mail.full_text,
            "auth": auth,
        },
    });
    if let Some(html) = &mail.html {
        content["format"] = json!("org.matrix.custom.html");
        content["formatted_body"] = json!(html);
    }
    content
}

/// Whether `error` stops every mail (the homeserver down, failing, or refusing the bridge
/// itself), rather than concerning this one.
fn blocks_everyone(error: &HandlerError) -> bool {
    match error.downcast_ref::<appservice::Error>() {
        Some(appservice::Error::Matrix {
            status, errcode, ..
        }) => *status >= 500 || *status == 429 || *status == 401 || errcode == "M_UNKNOWN_TOKEN",
        Some(appservice::Error::Transport(_)) => true,
        Some(_) => false,
        None => error.downcast_ref::<crate::store::StoreError>().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_keep_the_root_and_the_newest() {
        let mut refs: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        bound_references(&mut refs);
        assert_eq!(refs.len(), 20);
        assert_eq!(refs[0], "m0");
        assert_eq!(refs[1], "m31");
        assert_eq!(refs[19], "m49");
    }
}
