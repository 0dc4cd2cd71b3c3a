//! Puppets and portals: each customer is a Matrix user `@whatsapp_<wa_id>:server` (named after
//! their WhatsApp profile) and has one portal room, created by the bridge bot with the
//! `io.charla.conversation` state the support desk reads (contract.md) and an `m.bridge` event.

use appservice::{CreateRoom, HandlerError, InitialState, RoomPreset};
use ruma::RoomOrAliasId;
use serde_json::json;

use crate::bridge::Bridge;
use crate::cloud::Customer;
use crate::config::PUPPET_PREFIX;
use crate::notices::CONVERSATION_EVENT;
use crate::store::Portal;

/// The localpart of a customer's puppet: `whatsapp_<wa_id>`, or for customers known only by
/// their business-scoped id (`US.1349…`) that id, lowercased, in the allowed characters.
pub fn puppet_localpart(key: &str) -> String {
    let id = key.strip_prefix("bsuid:").unwrap_or(key);
    let id: String = id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-' | '=' | '/') => c,
            _ => '_',
        })
        .collect();
    format!("{PUPPET_PREFIX}{id}")
}

impl Bridge {
    /// The portal key of a customer: the wa_id, else the portal their business-scoped id was
    /// seen with, else `bsuid:<user_id>`.
    pub(crate) fn portal_key(&self, customer: &Customer) -> Result<String, HandlerError> {
        if let Some(wa_id) = &customer.wa_id {
            return Ok(wa_id.clone());
        }
        let user_id = customer.user_id.as_deref().unwrap_or_default();
        Ok(self
            .store
            .key_of_bsuid(user_id)?
            .unwrap_or_else(|| format!("bsuid:{user_id}")))
    }

    /// Who has power in a new portal (the `users` of its power levels): the bridge bot all of
    /// it, and those it invites (the support bot, supervisors) a moderator's, which lets the
    /// support bot change the conversation's state (status, assignee, labels, language) when
    /// agents ask. The puppet speaks, like any customer, with none.
    fn portal_power_users(&self, puppet: &ruma::UserId) -> serde_json::Value {
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

    /// The customer's portal, created with its puppet on first contact. Called for one
    /// customer at a time (the inbox worker groups by customer), so a portal is created once;
    /// across crashes too ([`crate::portal_setup`]).
    pub(crate) async fn ensure_portal(&self, customer: &Customer) -> Result<Portal, HandlerError> {
        let key = self.portal_key(customer)?;
        if let Some(mut portal) = self.store.portal(&key)? {
            if portal.setting_up {
                self.finish_portal(&mut portal).await?;
            }
            let name = customer.display_name();
            let renamed = !customer.name.trim().is_empty() && portal.name != name;
            let new_user_id = portal.user_id.is_none() && customer.user_id.is_some();
            if renamed || new_user_id {
                if renamed {
                    self.puppet(&portal.puppet).set_displayname(&name).await?;
                    portal.name = name;
                }
                if new_user_id {
                    portal.user_id = customer.user_id.clone();
                }
                self.store.save_portal(&portal)?;
            }
            return Ok(portal);
        }
        let puppet_id = self.client.user_id(&puppet_localpart(&key))?;
        let puppet = self.puppet(&puppet_id);
        puppet.ensure_registered().await?;
        let name = customer.display_name();
        puppet.set_displayname(&name).await?;

        let options = CreateRoom {
            name: Some(name.clone()),
            topic: Some(match &customer.wa_id {
                Some(wa_id) => format!("WhatsApp +{wa_id}"),
                None => "WhatsApp".to_owned(),
            }),
            invite: vec![puppet_id.clone()],
            preset: Some(RoomPreset::PrivateChat),
            initial_state: vec![
                InitialState::new(CONVERSATION_EVENT, "", &self.conversation_state(customer)),
                InitialState::new(
                    "m.bridge",
                    self.bridge_state_key(&key),
                    &self.bridge_state(&key, &name),
                ),
            ],
            power_level_content_override: Some(self.portal_power_users(&puppet_id)),
            ..CreateRoom::default()
        };
        let room_id = self.create_portal_room(&key, &options).await?;
        let room: &RoomOrAliasId = (&*room_id).into();
        puppet.join(room, &[]).await?;
        let mut portal = Portal {
            key,
            wa_id: customer.wa_id.clone(),
            user_id: customer.user_id.clone(),
            name,
            puppet: puppet_id,
            room_id,
            language: None,
            setting_up: true,
        };
        // On disk before anyone is invited: an agent may write in the room at once, and the
        // transaction bringing their message must find the portal, also after a crash.
        let saved = self.store.save_new_portal(&portal)?;
        self.store.durable(saved).await?;
        self.finish_portal(&mut portal).await?;
        tracing::info!(room = %portal.room_id, puppet = %portal.puppet, "portal created");
        Ok(portal)
    }

    /// `io.charla.conversation` of a new portal, every key present (contract.md).
    fn conversation_state(&self, customer: &Customer) -> serde_json::Value {
        json!({
            "status": "open",
            "priority": "medium",
            "labels": [],
            "assignee": null,
            "channel": "whatsapp",
            "contact": {
                "name": customer.display_name(),
                "phone": customer.wa_id.as_ref().map(|w| format!("+{w}")),
                "id": customer.wa_id.clone().or_else(|| customer.user_id.clone()),
                "organisation": null,
            },
            "product_id": null,
            "order_id": null,
            "first_customer_message_ts": null,
            "first_agent_response_ts": null,
            "resolved_ts": null,
        })
    }

    pub(crate) fn bridge_state_key(&self, key: &str) -> String {
        format!(
            "io.charla.whatsapp://whatsapp/{}/{key}",
            self.config.phone_number_id
        )
    }

    /// `m.bridge` (MSC2346): which network and chat this room bridges.
    fn bridge_state(&self, key: &str, name: &str) -> serde_json::Value {
        json!({
            "bridgebot": self.bot.user_id(),
            "protocol": {"id": "whatsapp", "displayname": "WhatsApp"},
            "network": {"id": self.config.phone_number_id},
            "channel": {"id": key, "displayname": name},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puppet_localparts_are_valid_matrix_localparts() {
        assert_eq!(puppet_localpart("34600111222"), "whatsapp_34600111222");
        assert_eq!(
            puppet_localpart("bsuid:US.13491208655302741918"),
            "whatsapp_us.13491208655302741918"
        );
        assert_eq!(puppet_localpart("bsuid:A B+C"), "whatsapp_a_b_c");
    }
}
