//! The timeline's front door: sending events as users, appending them (the steps are in
//! `append.rs`), publishing them once durable, and answering a retried transaction with the
//! event it created the first time.

use ruma::{
    EventId, OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedTransactionId, RoomId, UserId,
    events::TimelineEventType,
};
use serde::{Deserialize, Serialize};

use super::{RoomMeta, RoomService};
use crate::{
    error::{Error, Result},
    events::{EventTemplate, PowerLevels},
    storage::{Key, Table},
    stream::Pending,
};

/// The sending device's transaction, recorded so retries return the first event.
///
/// Stored in each event (`StoredEvent::txn`) as the JSON array `[device, txn_id]`, the form it
/// had as a pair of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "(OwnedDeviceId, OwnedTransactionId)")]
pub struct Txn {
    pub(crate) device: OwnedDeviceId,
    pub(crate) txn_id: OwnedTransactionId,
}

impl From<(OwnedDeviceId, OwnedTransactionId)> for Txn {
    fn from((device, txn_id): (OwnedDeviceId, OwnedTransactionId)) -> Self {
        Txn { device, txn_id }
    }
}

/// Serialized as the pair it is stored as, without copying it into one.
impl Serialize for Txn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.device, &self.txn_id).serialize(serializer)
    }
}

impl Txn {
    pub(crate) fn new(
        device: impl Into<OwnedDeviceId>,
        txn_id: impl Into<OwnedTransactionId>,
    ) -> Self {
        Txn {
            device: device.into(),
            txn_id: txn_id.into(),
        }
    }

    /// Where the transaction is recorded. The spec scopes a txnId to a device *and* an HTTP
    /// endpoint: a retry is the same id on the same path, `/rooms/{roomId}/send/{eventType}/
    /// {txnId}`. So the same id sent to another room or as another event type is a new
    /// request, and must not be answered with the first room's event.
    pub(super) fn key(&self, sender: &UserId, room_id: &RoomId, kind: &TimelineEventType) -> Key {
        Key::new()
            .str(sender.as_str())
            .str(self.device.as_str())
            .str(room_id.as_str())
            .str(&kind.to_string())
            .str(self.txn_id.as_str())
    }
}

impl RoomService {
    /// Sends a message-like or state event as a user, with the room's auth rules.
    pub(crate) async fn send(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<Txn>,
    ) -> Result<OwnedEventId> {
        let room = self.require_joined(room_id, sender)?;
        if template.kind == TimelineEventType::RoomCreate {
            return Err(Error::forbidden(
                "m.room.create cannot be sent into an existing room",
            ));
        }
        if template.kind == TimelineEventType::RoomCanonicalAlias {
            self.check_canonical_alias(room_id, &template)?;
        }
        self.append(&room, sender, template, txn).await
    }

    /// Aliases named by `m.room.canonical_alias` must exist and point to the room.
    fn check_canonical_alias(&self, room_id: &RoomId, template: &EventTemplate) -> Result<()> {
        #[derive(Deserialize)]
        struct C {
            alias: Option<OwnedRoomAliasId>,
            #[serde(default)]
            alt_aliases: Vec<OwnedRoomAliasId>,
        }
        let c: C = serde_json::from_str(template.content.get())
            .map_err(|e| Error::invalid_param(e.to_string()))?;
        for alias in c.alias.iter().chain(c.alt_aliases.iter()) {
            if self.resolve_alias(alias)?.as_deref() != Some(room_id) {
                return Err(Error::matrix(
                    http::StatusCode::BAD_REQUEST,
                    "M_BAD_ALIAS",
                    format!("{alias} does not point to this room"),
                ));
            }
        }
        Ok(())
    }

    /// Appends an event to a room and waits until it is durable and visible.
    pub(crate) async fn append(
        &self,
        room: &RoomMeta,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<Txn>,
    ) -> Result<OwnedEventId> {
        let (event_id, pending) = self.append_pending(room, sender, template, txn).await?;
        match pending {
            Some(pending) => self.publish(room, pending).await?,
            // A retried transaction, answered with the event it created the first time: not
            // before that event is durable, which the first request may still be waiting for.
            None => self.wait_durable(&event_id).await?,
        }
        Ok(event_id)
    }

    /// The event a device's transaction created, if it was sent before, once that event is
    /// durable: "a 200 means durable" holds for a retry's answer too.
    pub(crate) async fn committed_txn_event(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        kind: &TimelineEventType,
        txn: &Txn,
    ) -> Result<Option<OwnedEventId>> {
        let Some(event_id) = self.txn_event(sender, room_id, kind, txn)? else {
            return Ok(None);
        };
        self.wait_durable(&event_id).await?;
        Ok(Some(event_id))
    }

    /// Waits until a stored event is durable and visible.
    async fn wait_durable(&self, event_id: &EventId) -> Result<()> {
        // The transaction mapping is written in the event's batch: its position exists.
        let Some(pos) = self.event_pos(event_id)? else {
            return Err(Error::internal("a transaction's event has no position"));
        };
        if self
            .stream
            .wait_visible(pos, std::time::Duration::from_secs(30))
            .await
        {
            Ok(())
        } else {
            Err(Error::internal(
                "the transaction's first attempt is not durable yet",
            ))
        }
    }

    /// Waits until an appended event is durable, then shows it to readers and wakes the room's
    /// syncs. Finishing a later event of the store first makes this one visible too (the log
    /// keeps order and visibility is a high-water mark); this then returns at once.
    pub(crate) async fn publish(&self, room: &RoomMeta, pending: Pending) -> Result<()> {
        self.stream.finish(pending).await?;
        self.notifier.wake(room.audience().iter().map(|u| &**u));
        Ok(())
    }

    /// The event id a device's earlier send with this transaction id, to this room and as
    /// this event type, created.
    pub(super) fn txn_event(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        kind: &TimelineEventType,
        txn: &Txn,
    ) -> Result<Option<OwnedEventId>> {
        let key = txn.key(sender, room_id, kind).into_vec();
        Ok(match self.store.get(Table::TxnIds, &key)? {
            Some(id) => Some(
                OwnedEventId::try_from(String::from_utf8_lossy(&id).into_owned())
                    .map_err(|e| Error::internal(e.to_string()))?,
            ),
            None => None,
        })
    }

    /// The room's current power levels (defaults when the event is absent).
    pub(crate) fn power_levels(&self, room: &RoomMeta) -> Result<PowerLevels> {
        let pdu = self.state_pdu(room.short, "m.room.power_levels", "")?;
        let creator = self
            .state_pdu(room.short, "m.room.create", "")?
            .map(|c| c.sender);
        Ok(PowerLevels::from_event(pdu.as_ref(), creator))
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_device_id, owned_room_id, owned_user_id};

    use super::*;
    use crate::rooms::StoredEvent;

    /// Events stored before the ids were typed carry `"txn": ["DEVICE", "txn id"]`: they read
    /// back, and an event written now is stored in exactly that form.
    #[test]
    fn stored_transactions_keep_their_json_form() {
        let stored = r#"{"event_id":"$e","room":7,"pdu":{"type":"m.room.message"},"txn":["DEVICE","m1.2 any:thing"]}"#;
        let event: StoredEvent = serde_json::from_str(stored).unwrap();
        assert_eq!(
            event.txn,
            Some(Txn::new(owned_device_id!("DEVICE"), "m1.2 any:thing"))
        );
        assert_eq!(serde_json::to_string(&event).unwrap(), stored);
        // Without a transaction the key is absent, as before.
        let stored = r#"{"event_id":"$e","room":7,"pdu":{}}"#;
        let event: StoredEvent = serde_json::from_str(stored).unwrap();
        assert_eq!(event.txn, None);
        assert_eq!(serde_json::to_string(&event).unwrap(), stored);
    }

    /// The spec scopes a transaction id to the device and the endpoint: the same id for another
    /// room, event type or device is another transaction.
    #[test]
    fn a_transaction_is_keyed_by_sender_device_room_type_and_id() {
        let (alice, room) = (owned_user_id!("@alice:domain"), owned_room_id!("!r:domain"));
        let other_room = owned_room_id!("!s:domain");
        let txn = Txn::new(owned_device_id!("D1"), "t1");
        let key =
            |txn: &Txn, room: &RoomId, kind: &str| txn.key(&alice, room, &kind.into()).into_vec();
        let base = key(&txn, &room, "m.room.message");
        assert_eq!(base, key(&txn.clone(), &room, "m.room.message"));
        assert_ne!(base, key(&txn, &other_room, "m.room.message"));
        assert_ne!(base, key(&txn, &room, "m.reaction"));
        assert_ne!(
            base,
            key(
                &Txn::new(owned_device_id!("D2"), "t1"),
                &room,
                "m.room.message"
            )
        );
        assert_ne!(
            base,
            key(
                &Txn::new(owned_device_id!("D1"), "t2"),
                &room,
                "m.room.message"
            )
        );
    }
}
