//! End-to-end encryption across servers, beyond key queries (`ask.rs`): the EDUs that tell
//! other servers a local user's devices changed (`m.device_list_update`, which Synapse waits
//! for before it stops trusting its cache of them) and that carry to-device messages to their
//! users (`m.direct_to_device`: how Olm sessions and room keys travel). All of them are queued
//! durably (`sender/queue.rs`): a lost one is a key share nobody receives, or a peer trusting
//! stale keys.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::Federation;
use crate::{
    ephemeral::co_members,
    error::Result,
    rooms::RoomService,
    storage::{Store, WriteTicket},
};

/// To-device messages for other servers' users: server → user → device (or `*`) → content.
pub(crate) type RemoteMessages = BTreeMap<OwnedServerName, Map<String, Value>>;

impl Federation {
    /// The other servers that share a room with `user`.
    fn servers_sharing(
        &self,
        rooms: &RoomService,
        user: &UserId,
    ) -> Result<BTreeSet<OwnedServerName>> {
        let mut servers = BTreeSet::new();
        for member in co_members(rooms, user)? {
            if member.server_name() != self.server_name {
                servers.insert(member.server_name().to_owned());
            }
        }
        Ok(servers)
    }

    /// Tells the servers sharing a room with `user` that one of their devices changed (new
    /// keys uploaded, or deleted), so they query its keys again.
    pub(crate) fn device_changed(
        &self,
        (rooms, store): (&RoomService, &Store),
        user: &UserId,
        device_id: &str,
        deleted: bool,
    ) -> Result<()> {
        let servers = self.servers_sharing(rooms, user)?;
        if servers.is_empty() {
            return Ok(());
        }
        let edu = json!({
            "edu_type": "m.device_list_update",
            "content": {
                "user_id": user,
                "device_id": device_id,
                // Increasing per user: the time is, for one server's updates of a user.
                "stream_id": ruma::MilliSecondsSinceUnixEpoch::now(),
                "prev_id": [],
                "deleted": deleted,
            },
        });
        let edus = servers.into_iter().map(|s| (s, edu.clone())).collect();
        // Not waited for: the key upload that caused it waited for its own write, and the next
        // flush carries this one.
        self.outbox.push_lasting_edus(store, edus).map(drop)
    }

    /// Tells the servers sharing a room with `user` that their cross-signing keys changed.
    pub(crate) fn signing_keys_changed(
        &self,
        (rooms, store): (&RoomService, &Store),
        user: &UserId,
        keys: &Value,
    ) -> Result<()> {
        let servers = self.servers_sharing(rooms, user)?;
        let mut content = json!({ "user_id": user });
        for field in ["master_key", "self_signing_key"] {
            if let Some(key) = keys.get(field) {
                content[field] = key.clone();
            }
        }
        let edu = json!({ "edu_type": "m.signing_key_update", "content": content });
        let edus = servers.into_iter().map(|s| (s, edu.clone())).collect();
        self.outbox.push_lasting_edus(store, edus).map(drop)
    }

    /// Sends a local user's to-device messages to other servers' users, one EDU per server;
    /// the ticket of their durable write, which the client's answer waits for.
    pub(crate) fn send_to_device(
        &self,
        store: &Store,
        sender: &UserId,
        (event_type, message_id): (&str, &str),
        messages: RemoteMessages,
    ) -> Result<WriteTicket> {
        let mut edus = Vec::new();
        for (server, users) in messages {
            let edu = json!({
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": sender,
                    "type": event_type,
                    "message_id": message_id,
                    "messages": users,
                },
            });
            edus.push((server, edu));
        }
        self.outbox.push_lasting_edus(store, edus)
    }
}

/// The local users sharing a room with another server's `user`: who hears that its devices
/// changed.
pub(crate) fn local_co_members(rooms: &RoomService, user: &UserId) -> Result<Vec<OwnedUserId>> {
    Ok(co_members(rooms, user)?.into_iter().collect())
}
