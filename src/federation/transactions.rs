//! Transactions other servers push: `PUT /_matrix/federation/v1/send/{txnId}`, at most 50 PDUs
//! and 100 EDUs (spec v1.16, "Transactions").
//!
//! Each PDU is checked (`pdus.rs`), authorized and appended (`rooms/remote.rs`), in the order
//! the transaction lists them; one PDU's failure is reported under its id and does not stop
//! the others. EDUs are applied when they are about users of the sending server in rooms they
//! are joined to: typing notices and read receipts. Other EDU types are ignored, as the spec
//! allows.

use std::{net::IpAddr, sync::Arc, time::Duration};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, ServerName};
use serde::Deserialize;
use serde_json::{Map, Value, json, value::RawValue as RawJsonValue};

use super::{Federation, MAX_EDUS, MAX_PDUS};
use crate::{
    e2ee::{E2eeService, Target},
    ephemeral::{PresenceService, ReceiptKind, ReceiptService, TypingService},
    error::{Error, Result},
    events::incoming,
    rooms::{Accepted, RoomMeta, RoomService},
    stream::Pending,
    users::UserService,
};

/// How long a remote typing notice lasts without a renewal (Synapse's federation timeout).
const REMOTE_TYPING: Duration = Duration::from_secs(30);

/// What receiving a transaction writes to.
pub(crate) struct Receivers<'a> {
    pub(crate) rooms: &'a RoomService,
    pub(crate) users: &'a UserService,
    pub(crate) e2ee: &'a E2eeService,
    pub(crate) typing: &'a TypingService,
    pub(crate) receipts: &'a ReceiptService,
    pub(crate) presence: &'a PresenceService,
}

#[derive(Deserialize)]
struct Transaction {
    origin: Option<String>,
    #[serde(default)]
    pdus: Vec<Box<RawJsonValue>>,
    #[serde(default)]
    edus: Vec<Edu>,
}

#[derive(Deserialize)]
struct Edu {
    edu_type: String,
    #[serde(default)]
    content: Value,
}

impl Federation {
    /// Applies a transaction from `origin`; answers `{"pdus": {event_id: {} | {"error": …}}}`.
    pub(crate) async fn receive_transaction(
        &self,
        to: &Receivers<'_>,
        origin: &ServerName,
        from: IpAddr,
        body: &RawJsonValue,
    ) -> Result<Value> {
        let txn: Transaction = serde_json::from_str(body.get())
            .map_err(|e| Error::bad_json(format!("not a transaction: {e}")))?;
        if txn.origin.as_deref().is_some_and(|o| o != origin.as_str()) {
            return Err(Error::forbidden(
                "The transaction's origin is not the sender",
            ));
        }
        if txn.pdus.len() > MAX_PDUS || txn.edus.len() > MAX_EDUS {
            return Err(Error::bad_json(
                "A transaction carries at most 50 PDUs and 100 EDUs",
            ));
        }
        self.outbox.heard_from(&to.rooms.store, origin);
        let mut results = Map::new();
        // Appended now, published (waited for on disk, then shown) together once all are in:
        // one disk sync for the transaction, not one per PDU.
        let mut appended = Vec::new();
        for raw in &txn.pdus {
            let (event_id, outcome) = self.receive_pdu(to.rooms, origin, raw, from).await;
            let Some(event_id) = event_id else {
                tracing::debug!(%origin, error = ?outcome.err(), "dropped an unreadable PDU");
                continue;
            };
            let result = match outcome {
                Ok(pending) => {
                    appended.extend(pending);
                    json!({})
                }
                Err(e) => {
                    tracing::info!(%origin, %event_id, error = %e, "refused a PDU");
                    json!({ "error": e.to_string() })
                }
            };
            results.insert(event_id.to_string(), result);
        }
        // A store failure here fails the transaction: the sender sends it again.
        for (room, pending) in appended {
            to.rooms.publish(&room, pending).await?;
        }
        for edu in txn.edus {
            if let Err(e) = receive_edu(to, origin, &edu).await {
                tracing::debug!(%origin, edu_type = %edu.edu_type, error = %e, "ignored an EDU");
            }
        }
        Ok(json!({ "pdus": results }))
    }

    /// One PDU of a transaction: its id when it can be derived, and what became of it.
    async fn receive_pdu(
        &self,
        rooms: &RoomService,
        origin: &ServerName,
        raw: &RawJsonValue,
        from: IpAddr,
    ) -> (
        Option<OwnedEventId>,
        Result<Option<(Arc<RoomMeta>, Pending)>>,
    ) {
        let parsed = incoming::parse_object(raw.get()).and_then(|object| {
            let room_id = object
                .get("room_id")
                .and_then(|v| v.as_str())
                .ok_or_else(|| Error::bad_json("PDU without room_id"))?;
            let room = rooms.room(&room_id_of(room_id)?)?;
            let event_id = incoming::event_id_of(&object, &room.rules)?;
            Ok((room, event_id, object))
        });
        let (room, event_id, object) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return (None, Err(e)),
        };
        let outcome = async {
            rooms.require_server_allowed(&room, origin)?;
            if rooms.is_known(&event_id)? {
                return Ok(None);
            }
            let incoming = self.verify_object(&room.rules, object, Some(from)).await?;
            if let Err(e) = self.fill_gap(rooms, origin, &room, &incoming, from).await {
                tracing::info!(%origin, %event_id, error = %e, "a gap before the event stays");
            }
            Ok(match rooms.append_remote(&room, incoming).await? {
                Accepted::Appended(pending) => Some((room.clone(), pending)),
                Accepted::Known | Accepted::SoftFailed(_) => None,
            })
        }
        .await;
        (Some(event_id), outcome)
    }
}

fn room_id_of(raw: &str) -> Result<OwnedRoomId> {
    RoomId::parse(raw).map_err(|_| Error::bad_json("invalid room_id"))
}

/// A typing notice or read receipts of users of `origin` in rooms they are joined to.
async fn receive_edu(to: &Receivers<'_>, origin: &ServerName, edu: &Edu) -> Result<()> {
    match edu.edu_type.as_str() {
        "m.typing" => {
            #[derive(Deserialize)]
            struct Typing {
                room_id: OwnedRoomId,
                user_id: OwnedUserId,
                typing: bool,
            }
            let t: Typing = serde_json::from_value(edu.content.clone())
                .map_err(|e| Error::bad_json(e.to_string()))?;
            if t.user_id.server_name() != origin {
                return Err(Error::forbidden("typing notice of another server's user"));
            }
            let room = to.rooms.room(&t.room_id)?;
            to.rooms.require_server_allowed(&room, origin)?;
            if !room.is_joined(&t.user_id) {
                return Err(Error::forbidden("typing notice of a non-member"));
            }
            to.typing
                .set(room, &t.user_id, t.typing.then_some(REMOTE_TYPING));
            Ok(())
        }
        "m.receipt" => {
            #[derive(Deserialize)]
            struct Receipt {
                event_ids: Vec<OwnedEventId>,
                #[serde(default)]
                data: Value,
            }
            type Receipts = std::collections::BTreeMap<
                OwnedRoomId,
                std::collections::BTreeMap<
                    String,
                    std::collections::BTreeMap<OwnedUserId, Receipt>,
                >,
            >;
            let rooms: Receipts = serde_json::from_value(edu.content.clone())
                .map_err(|e| Error::bad_json(e.to_string()))?;
            for (room_id, kinds) in rooms.into_iter().take(MAX_EDUS) {
                let Some(users) = kinds.get("m.read") else {
                    continue;
                };
                let room = to.rooms.room(&room_id)?;
                if !to.rooms.server_allowed(&room, origin)? {
                    continue;
                }
                for (user, receipt) in users.iter().take(MAX_EDUS) {
                    if user.server_name() != origin || !room.is_joined(user) {
                        continue;
                    }
                    let Some(event_id) = receipt.event_ids.last() else {
                        continue;
                    };
                    let Some(pos) = to.rooms.event_pos(event_id)? else {
                        continue;
                    };
                    if to.rooms.event(pos)?.stored.room != room.short {
                        continue;
                    }
                    let thread = receipt.data.get("thread_id").and_then(Value::as_str);
                    to.receipts
                        .set(&room, user, ReceiptKind::Read, thread, event_id, pos)
                        .await?;
                }
            }
            Ok(())
        }
        "m.direct_to_device" => receive_to_device(to, origin, &edu.content).await,
        "m.presence" => receive_presence(to, origin, &edu.content),
        "m.device_list_update" | "m.signing_key_update" => {
            let user = edu
                .content
                .get("user_id")
                .and_then(Value::as_str)
                .and_then(|u| OwnedUserId::try_from(u).ok())
                .ok_or_else(|| Error::bad_json("device list update without user_id"))?;
            if user.server_name() != origin {
                return Err(Error::forbidden("device list of another server's user"));
            }
            let co_members = super::devices::local_co_members(to.rooms, &user)?;
            to.e2ee.remote_device_list_changed(&user, &co_members).await
        }
        _ => Ok(()),
    }
}

/// Presence of users of `origin` who share a room with a user here.
fn receive_presence(to: &Receivers<'_>, origin: &ServerName, content: &Value) -> Result<()> {
    #[derive(Deserialize)]
    struct Update {
        user_id: OwnedUserId,
        presence: ruma::presence::PresenceState,
        #[serde(default)]
        status_msg: Option<String>,
        #[serde(default)]
        last_active_ago: u64,
    }
    let updates: Vec<Value> = content
        .get("push")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for update in updates.into_iter().take(MAX_EDUS) {
        let Ok(u) = serde_json::from_value::<Update>(update) else {
            continue;
        };
        if u.user_id.server_name() != origin || to.rooms.joined_rooms(&u.user_id)?.is_empty() {
            continue;
        }
        let status = u.status_msg.map(|m| m.chars().take(256).collect());
        to.presence.set_remote(
            to.rooms,
            &u.user_id,
            u.presence,
            status,
            Duration::from_millis(u.last_active_ago),
        )?;
    }
    Ok(())
}

/// To-device messages from a user of `origin` to users of this server.
async fn receive_to_device(to: &Receivers<'_>, origin: &ServerName, content: &Value) -> Result<()> {
    #[derive(Deserialize)]
    struct ToDevice {
        sender: OwnedUserId,
        #[serde(rename = "type")]
        kind: String,
        message_id: String,
        messages:
            std::collections::BTreeMap<OwnedUserId, std::collections::BTreeMap<String, Value>>,
    }
    let t: ToDevice =
        serde_json::from_value(content.clone()).map_err(|e| Error::bad_json(e.to_string()))?;
    if t.sender.server_name() != origin {
        return Err(Error::forbidden(
            "to-device message of another server's user",
        ));
    }
    let mut messages = Vec::new();
    for (user, devices) in t.messages {
        for (device, content) in devices.into_iter().take(MAX_EDUS * 10) {
            let target = match device.as_str() {
                "*" => Target::AllDevices,
                _ => Target::Device(device.into()),
            };
            messages.push((user.clone(), target, content));
        }
    }
    to.e2ee
        .receive_remote_to_device(to.users, &t.sender, &t.kind, &t.message_id, messages)
        .await
}
