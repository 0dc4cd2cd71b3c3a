//! Threads and conversations: which conversation a mail belongs to, and its room.
//!
//! A thread is found by its ids: a mail whose `In-Reply-To` or `References` names a Message-ID
//! the bridge knows (a customer's earlier mail, or an agent's answer) belongs to that
//! conversation, if it comes from the conversation's customer. Anyone else naming those ids
//! (a colleague in copy, or someone who learnt an id and wants to write into another
//! customer's conversation) starts a conversation of their own. A mail naming no known id
//! opens a conversation keyed by the thread's root (the first of its `References`, else its
//! own Message-ID), so two mails of one new thread arriving together land in one room.
//!
//! Each customer address is a puppet `@email_<hash>:server`, named after the mail's `From`
//! name; each conversation a room created by the bridge bot with the `io.charla.conversation`
//! state the desk reads (channel `email`) and an `m.bridge` event. The room is created with
//! the alias `#email_<key>`: `createRoom` has no transaction id, and a crash between the
//! homeserver's answer and the bridge's record of it would otherwise open the conversation
//! twice when the mail is processed again; asked again, the homeserver answers that the alias
//! is taken, and the alias names the room.

use appservice::{CreateRoom, HandlerError, InitialState, RoomPreset};
use charla_storage::Batch;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomOrAliasId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::bridge::Bridge;
use crate::config::PUPPET_PREFIX;
use crate::mail::{ParsedMail, base_subject};
use crate::store::{Portal, Table};

/// The desk's state event of a conversation (contract.md).
pub const CONVERSATION_EVENT: &str = "io.charla.conversation";

/// A short stable name for `text`: 24 hex characters of its SHA-256.
fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// The puppet localpart of a customer address (case-insensitive, as mailboxes are in practice).
pub fn puppet_localpart(address: &str) -> String {
    format!("{PUPPET_PREFIX}{}", digest(&address.to_ascii_lowercase()))
}

/// Where answers to `mail` go: its `Reply-To`, else its `From`.
pub fn answer_address(mail: &ParsedMail) -> &str {
    mail.reply_to.as_deref().unwrap_or(&mail.from_address)
}

impl Bridge {
    /// The conversation key of `mail`, and its portal when the bridge has one. `fallback` is
    /// the thread root when the mail has no ids at all (its inbox number).
    pub(crate) fn thread_of(
        &self,
        mail: &ParsedMail,
        fallback: &str,
    ) -> Result<(String, Option<Portal>), HandlerError> {
        let from = answer_address(mail);
        let same_customer = |portal: &Portal| {
            portal.address.eq_ignore_ascii_case(from)
                || portal.address.eq_ignore_ascii_case(&mail.from_address)
        };
        for id in mail.in_reply_to.iter().chain(mail.references.iter().rev()) {
            if let Some(link) = self.store.message(id)?
                && let Some(portal) = self.store.portal(&link.portal)?
                && same_customer(&portal)
            {
                return Ok((portal.key.clone(), Some(portal)));
            }
        }
        let root = mail
            .references
            .first()
            .or(mail.in_reply_to.first())
            .or(mail.message_id.as_ref())
            .map_or(fallback, String::as_str);
        // The sender is part of the key: a stranger naming someone else's root gets a room
        // of their own.
        let key = digest(&format!("{root}\n{}", from.to_ascii_lowercase()));
        let portal = self.store.portal(&key)?;
        Ok((key, portal))
    }

    /// The room of a new conversation for `mail`, with its puppet joined and the invitees
    /// invited. Safe to call again after a crash at any point (see the module doc).
    pub(crate) async fn open_portal(
        &self,
        key: &str,
        mail: &ParsedMail,
    ) -> Result<Portal, HandlerError> {
        let address = answer_address(mail).to_owned();
        let name = if mail.from_name.trim().is_empty() {
            address.clone()
        } else {
            mail.from_name.trim().to_owned()
        };
        let puppet_id = self.client.user_id(&puppet_localpart(&address))?;
        let puppet = self.client.intent(puppet_id.clone());
        puppet.ensure_registered().await?;
        puppet.set_displayname(&name).await?;
        let subject = base_subject(&mail.subject).trim().to_owned();
        let alias_name = format!("{PUPPET_PREFIX}{key}");
        let options = CreateRoom {
            name: Some(if subject.is_empty() {
                name.clone()
            } else {
                subject.clone()
            }),
            topic: Some(format!("Email: {name} <{address}>")),
            room_alias_name: Some(alias_name.clone()),
            invite: vec![puppet_id.clone()],
            preset: Some(RoomPreset::PrivateChat),
            initial_state: vec![
                InitialState::new(CONVERSATION_EVENT, "", &conversation_state(&name, &address)),
                InitialState::new("m.bridge", format!("io.charla.email://{key}"), &{
                    json!({
                        "bridgebot": self.bot.user_id(),
                        "protocol": {"id": "email", "displayname": "Email"},
                        "network": {"id": self.config.address},
                        "channel": {"id": key, "displayname": name},
                    })
                }),
            ],
            power_level_content_override: Some(self.power_users(&puppet_id)),
            ..CreateRoom::default()
        };
        let room_id = self.create_or_find(&alias_name, &options).await?;
        let room: &RoomOrAliasId = (&*room_id).into();
        puppet.join(room, &[]).await?;
        let mut portal = Portal {
            key: key.to_owned(),
            room_id,
            puppet: puppet_id,
            address,
            name,
            subject,
            last_message_id: None,
            references: Vec::new(),
            setting_up: true,
        };
        // With the mail's thread and on disk before anyone is invited: the support bot greets
        // as soon as it is, and the transaction bringing the greeting must find the
        // conversation and answer in the customer's thread, also after a crash.
        thread_into(&mut portal, mail);
        let mut batch = Batch::<Table>::new();
        self.store.save_portal(&mut batch, &portal)?;
        let ticket = self.store.write(batch)?;
        self.store.durable(ticket).await?;
        self.finish_portal(&mut portal).await?;
        tracing::info!(room = %portal.room_id, puppet = %portal.puppet, "email conversation opened");
        Ok(portal)
    }

    /// Invites the invitees of a portal saved `setting_up`, then clears it. Again after a crash
    /// in between (an invitee already in the room is no error).
    pub(crate) async fn finish_portal(&self, portal: &mut Portal) -> Result<(), HandlerError> {
        let (room_id, puppet_id) = (&portal.room_id, &portal.puppet);
        for user in &self.config.invite {
            match OwnedUserId::try_from(user.as_str()) {
                Ok(user) if user != *puppet_id => {
                    if let Err(error) = self.bot.invite(room_id, &user).await {
                        // Already invited or joined (a replay), or no such user: not a reason
                        // to keep the customer's mail out.
                        if error.status().is_none() || error.status().is_some_and(|s| s >= 500) {
                            return Err(error.into());
                        }
                        tracing::debug!(%user, %error, "cannot invite to a new email conversation");
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%user, %error, "bridges.email.invite: not a user id"),
            }
        }
        portal.setting_up = false;
        let mut batch = Batch::<Table>::new();
        self.store.save_portal(&mut batch, portal)?;
        let _ = self.store.write(batch)?;
        Ok(())
    }

    /// Creates the room with `options`, or finds the one an earlier attempt created.
    async fn create_or_find(
        &self,
        alias_name: &str,
        options: &CreateRoom,
    ) -> Result<OwnedRoomId, HandlerError> {
        match self.bot.create_room(options).await {
            Ok(room_id) => Ok(room_id),
            Err(error) if error.errcode() == Some("M_ROOM_IN_USE") => {
                let alias: OwnedRoomAliasId =
                    format!("#{alias_name}:{}", self.client.server_name())
                        .try_into()
                        .map_err(|e| HandlerError::from(format!("alias: {e}")))?;
                match self.bot.resolve_alias(&alias).await? {
                    Some(room_id) => {
                        tracing::info!(room = %room_id, "found the conversation room created before a restart");
                        Ok(room_id)
                    }
                    None => Err(error.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The power levels of a new conversation: the bridge bot all of it, the invitees (the
    /// support bot, supervisors) a moderator's so the desk can set the conversation's state;
    /// the customer none.
    fn power_users(&self, puppet: &ruma::UserId) -> Value {
        let mut users = serde_json::Map::new();
        for user in &self.config.invite {
            if let Ok(user) = ruma::UserId::parse(user.as_str())
                && user != puppet
            {
                users.insert(user.to_string(), json!(50));
            }
        }
        users.insert(self.bot.user_id().to_string(), json!(100));
        json!({ "users": users })
    }

    /// Opens a closed conversation again when its customer writes: their mail is a new
    /// request, and the desk lists open conversations.
    pub(crate) async fn reopen_if_closed(
        &self,
        room_id: &ruma::RoomId,
    ) -> Result<(), HandlerError> {
        let Some(mut content) = self
            .bot
            .state_content(room_id, CONVERSATION_EVENT, "")
            .await?
        else {
            return Ok(());
        };
        if content["status"] != "closed" {
            return Ok(());
        }
        content["status"] = json!("open");
        content["resolved_ts"] = Value::Null;
        self.bot
            .send_state(room_id, CONVERSATION_EVENT, "", &content, None)
            .await?;
        tracing::info!(room = %room_id, "a closed email conversation reopened by the customer's reply");
        Ok(())
    }
}

/// Makes `mail` the thread's newest: answers reply to it, and their `References` are the
/// thread's as the customer's client kept them (else as the bridge knew them), then this mail.
pub(crate) fn thread_into(portal: &mut Portal, mail: &ParsedMail) {
    let Some(id) = &mail.message_id else { return };
    let mut references = if mail.references.is_empty() {
        portal.references.clone()
    } else {
        mail.references.clone()
    };
    references.retain(|r| r != id);
    references.push(id.clone());
    crate::inbox::bound_references(&mut references);
    portal.references = references;
    portal.last_message_id = Some(id.clone());
}

/// `io.charla.conversation` of a new conversation, every key present (contract.md).
fn conversation_state(name: &str, address: &str) -> Value {
    json!({
        "status": "open",
        "priority": "medium",
        "labels": [],
        "assignee": null,
        "channel": "email",
        "contact": {
            "name": name,
            "phone": null,
            "id": address,
            "email": address,
            "organisation": null,
        },
        "product_id": null,
        "order_id": null,
        "first_customer_message_ts": null,
        "first_agent_response_ts": null,
        "resolved_ts": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_puppet_per_address_whatever_its_case() {
        assert_eq!(
            puppet_localpart("Ana@Example.org"),
            puppet_localpart("ana@example.org")
        );
        assert_ne!(
            puppet_localpart("ana@example.org"),
            puppet_localpart("eva@example.org")
        );
        assert!(puppet_localpart("ana@example.org").starts_with("email_"));
        assert_eq!(puppet_localpart("a@b").len(), "email_".len() + 24);
    }
}
