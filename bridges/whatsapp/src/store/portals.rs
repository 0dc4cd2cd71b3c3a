//! Portals: each customer's puppet and room (`portals`, with the `rooms` and `bsuids` indexes
//! to find one), and the intents of portals being created (`portal_intents`).

use charla_storage::{Batch, WriteTicket};
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde::{Deserialize, Serialize};

use super::{Result, Store, Table, json};

/// A customer and their portal room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Portal {
    /// The key of the customer: the wa_id, or `bsuid:<user_id>` when no phone is known.
    pub key: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub name: String,
    pub puppet: OwnedUserId,
    pub room_id: OwnedRoomId,
    /// The language of the room's conversation (`io.charla.conversation`), if one was set.
    #[serde(default)]
    pub language: Option<String>,
    /// Saved before the invitees (agents, the support bot) are invited: until they are, a
    /// replay of the customer's message invites them again (the `portal_setup` module says how).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setting_up: bool,
}

/// A portal being created: on disk before the room is asked for, so that a replay after a
/// crash looks for the room created before instead of creating a second one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortalIntent {
    /// The room, once the homeserver named it.
    pub room_id: Option<OwnedRoomId>,
    /// Milliseconds since the epoch of the first attempt.
    pub since_ms: u64,
}

impl Store {
    pub fn portal(&self, key: &str) -> Result<Option<Portal>> {
        self.get(Table::Portals, key)
    }

    pub(crate) fn portal_by_room(&self, room_id: &RoomId) -> Result<Option<Portal>> {
        match self.db.get(Table::Rooms, room_id.as_bytes())? {
            Some(key) => self.get(Table::Portals, key),
            None => Ok(None),
        }
    }

    /// The portal key a business-scoped user id was seen with.
    pub(crate) fn key_of_bsuid(&self, user_id: &str) -> Result<Option<String>> {
        self.get_string(Table::Bsuids, user_id)
    }

    pub(crate) fn save_portal(&self, portal: &Portal) -> Result<()> {
        let _ = self.db.write(Self::portal_batch(portal)?)?;
        Ok(())
    }

    fn portal_batch(portal: &Portal) -> Result<Batch<Table>> {
        let mut batch = Batch::new();
        batch.put(Table::Portals, portal.key.as_bytes(), json(portal)?);
        batch.put(
            Table::Rooms,
            portal.room_id.as_bytes(),
            portal.key.as_bytes(),
        );
        if let Some(user_id) = &portal.user_id {
            batch.put(Table::Bsuids, user_id.as_bytes(), portal.key.as_bytes());
        }
        Ok(batch)
    }

    /// The creation of the portal `key` that was started and not finished, if any.
    pub fn portal_intent(&self, key: &str) -> Result<Option<PortalIntent>> {
        self.get(Table::PortalIntents, key)
    }

    /// Records that the portal `key` is about to be created (or, with `room_id`, that its room
    /// exists). Durable once [`Store::durable`] returned for the ticket.
    pub fn record_portal_intent(&self, key: &str, intent: &PortalIntent) -> Result<WriteTicket> {
        let mut batch = Batch::new();
        batch.put(Table::PortalIntents, key, json(intent)?);
        Ok(self.db.write(batch)?)
    }

    /// Saves a newly created portal and ends its intent, in one write; durable once
    /// [`Store::durable`] returned for the ticket.
    pub(crate) fn save_new_portal(&self, portal: &Portal) -> Result<WriteTicket> {
        let mut batch = Self::portal_batch(portal)?;
        batch.delete(Table::PortalIntents, portal.key.as_bytes());
        Ok(self.db.write(batch)?)
    }
}
