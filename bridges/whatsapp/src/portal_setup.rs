//! Creating a portal so that a crash at any point leaves one room per customer.
//!
//! A portal takes several steps on the homeserver (create the room, the puppet joins, the
//! invitees are invited) and the bridge's own record of it. `createRoom` has no transaction
//! id: asked twice, a homeserver creates two rooms. So the bridge writes, and syncs, a
//! *portal intent* for the customer before it asks, and every later step can be taken again:
//!
//! 1. intent `{room: none}` on disk, then `createRoom`;
//! 2. intent `{room}` (not waited for: without it the room is found again, below);
//! 3. the puppet joins (idempotent), the portal is saved with `setting_up` and the intent
//!    ends, in one write, on disk before the next step: from the invites on, agents can write
//!    in the room, and the transactions that bring their messages must find the portal;
//! 4. the invitees are invited, then `setting_up` is cleared.
//!
//! A crash replays the customer's webhook (it leaves the inbox only after the round that
//! bridged it). With the intent on disk and no room in it, the room may exist, whole or cut
//! short: `createRoom` writes its events one by one, on Charla as on Synapse, so a homeserver
//! killed in the middle keeps a prefix of them (the create event, the bot's join, the power
//! levels, then the initial state, name, topic and the puppet's invite). So the bridge looks
//! at the rooms its bot is joined to that no portal owns (after a crash, a few; the list of
//! the bot's rooms is one request) for one whose state, sent by the bot, names this customer
//! (`m.bridge`, or the conversation's contact), completes what its creation did not send
//! (the initial state, name, topic, the puppet's invite), and adopts it; only when there is
//! none does it create one. A room cut short before any of that state names nobody: the bot
//! stays alone in it, nobody else sees it, and the desk does not list it. With the portal
//! saved but `setting_up`, the bridge invites again. Without the intent on disk, `createRoom`
//! was never asked.
//!
//! This holds for any kill point of the bridge and of a homeserver in the same process. If
//! the homeserver outlives the bridge (the bridge on its own, `charla bridge whatsapp`) and
//! answers a `createRoom` only after the bridge restarted and looked, a second room is still
//! possible.

use appservice::{CreateRoom, HandlerError};
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde_json::{Value, json};

use crate::bridge::Bridge;
use crate::failure::Failure;
use crate::notices::CONVERSATION_EVENT;
use crate::store::{Portal, PortalIntent};

impl Bridge {
    /// The room of the portal `key` being created: the one an earlier attempt created, or a
    /// new one made with `options`.
    pub(crate) async fn create_portal_room(
        &self,
        key: &str,
        options: &CreateRoom,
    ) -> Result<OwnedRoomId, HandlerError> {
        let since_ms = match self.store.portal_intent(key)? {
            Some(PortalIntent {
                room_id: Some(room_id),
                ..
            }) => return Ok(room_id),
            Some(intent) => {
                if let Some(room_id) = self.find_portal_room(key, options).await? {
                    tracing::info!(room = %room_id, "found the portal room created before a restart");
                    self.record_room(key, &room_id, intent.since_ms)?;
                    return Ok(room_id);
                }
                intent.since_ms
            }
            None => {
                let since_ms = crate::now_ms();
                let intent = PortalIntent {
                    room_id: None,
                    since_ms,
                };
                let ticket = self.store.record_portal_intent(key, &intent)?;
                self.store.durable(ticket).await?;
                since_ms
            }
        };
        let room_id = self.bot.create_room(options).await?;
        self.record_room(key, &room_id, since_ms)?;
        Ok(room_id)
    }

    fn record_room(
        &self,
        key: &str,
        room_id: &OwnedRoomId,
        since_ms: u64,
    ) -> Result<(), HandlerError> {
        let intent = PortalIntent {
            room_id: Some(room_id.clone()),
            since_ms,
        };
        let _ = self.store.record_portal_intent(key, &intent)?;
        Ok(())
    }

    /// The room of an earlier attempt at the portal `key`, among the rooms of the bot that
    /// no portal owns, completed as `options` asked.
    async fn find_portal_room(
        &self,
        key: &str,
        options: &CreateRoom,
    ) -> Result<Option<OwnedRoomId>, HandlerError> {
        for room_id in self.bot.joined_rooms().await? {
            if self.store.portal_by_room(&room_id)?.is_some() {
                continue;
            }
            let state = match self.bot.room_state(&room_id).await {
                Ok(state) => state,
                Err(error) if matches!(error.status(), Some(403 | 404)) => continue,
                Err(error) => return Err(error.into()),
            };
            if self.names_customer(&state, key) {
                self.complete_room(&room_id, options, &state).await?;
                return Ok(Some(room_id));
            }
        }
        Ok(None)
    }

    /// Whether the bot's state in a room names the customer `key`: the `m.bridge` event of the
    /// portal, or (cut short before it) the conversation's contact.
    fn names_customer(&self, state: &[Value], key: &str) -> bool {
        let bridge_key = self.bridge_state_key(key);
        let bot = self.bot.user_id().as_str();
        state.iter().filter(|e| e["sender"] == bot).any(|e| {
            let content = &e["content"];
            match e["type"].as_str() {
                Some("m.bridge") => e["state_key"] == bridge_key && content["channel"]["id"] == key,
                Some(CONVERSATION_EVENT) => {
                    let id = content["contact"]["id"].as_str().unwrap_or_default();
                    content["channel"] == "whatsapp"
                        && !id.is_empty()
                        && (id == key || key.strip_prefix("bsuid:") == Some(id))
                }
                _ => false,
            }
        })
    }

    /// Sends what a `createRoom` cut short did not: its initial state, name and topic, and the
    /// invites. Each only if the room lacks it, so a whole room is left as it is.
    async fn complete_room(
        &self,
        room_id: &RoomId,
        options: &CreateRoom,
        state: &[Value],
    ) -> Result<(), HandlerError> {
        let has = |kind: &str, key: &str| {
            state
                .iter()
                .any(|e| e["type"] == kind && e["state_key"] == key)
        };
        let mut missing: Vec<(&str, &str, Value)> = options
            .initial_state
            .iter()
            .map(|s| {
                (
                    s.event_type.as_str(),
                    s.state_key.as_str(),
                    s.content.clone(),
                )
            })
            .collect();
        if let Some(name) = &options.name {
            missing.push(("m.room.name", "", json!({ "name": name })));
        }
        if let Some(topic) = &options.topic {
            missing.push(("m.room.topic", "", json!({ "topic": topic })));
        }
        for (kind, key, content) in missing {
            if !has(kind, key) {
                self.bot
                    .send_state(room_id, kind, key, &content, None)
                    .await?;
            }
        }
        for user in &options.invite {
            if !has("m.room.member", user.as_str()) {
                self.bot.invite(room_id, user).await?;
            }
        }
        Ok(())
    }

    /// Invites the invitees of a portal saved `setting_up`, then clears it. One by one: an
    /// invitee that does not exist (yet), or is in the room already (a replay), must not keep
    /// the portal from being used.
    pub(crate) async fn finish_portal(&self, portal: &mut Portal) -> Result<(), HandlerError> {
        for user in &self.config.invite {
            match OwnedUserId::try_from(user.as_str()) {
                Ok(user) if user != portal.puppet => {
                    if let Err(error) = self.bot.invite(&portal.room_id, &user).await {
                        let error: HandlerError = error.into();
                        if Failure::of(&error).blocks_everyone() {
                            // Tried again with the round; `setting_up` stays until then.
                            return Err(error);
                        }
                        tracing::warn!(%user, %error, "cannot invite to a new portal");
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%user, %error, "bridges.whatsapp.invite: not a user id")
                }
            }
        }
        portal.setting_up = false;
        self.store.save_portal(portal)?;
        Ok(())
    }
}
