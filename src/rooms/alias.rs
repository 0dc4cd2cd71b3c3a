//! Room aliases and the public room directory.

use ruma::{OwnedRoomId, RoomAliasId, RoomId, UserId, events::StateEventType};
use serde::{Deserialize, Serialize};

use super::RoomService;
use crate::{
    error::{Error, Result},
    storage::{Batch, Table},
};

#[derive(Serialize, Deserialize)]
struct AliasRecord {
    room_id: OwnedRoomId,
    creator: ruma::OwnedUserId,
}

/// One room as the public directory lists it.
#[derive(Debug, Serialize)]
pub(crate) struct DirectoryEntry {
    pub(crate) room_id: OwnedRoomId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) canonical_alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) avatar_url: Option<String>,
    pub(crate) num_joined_members: u64,
    pub(crate) world_readable: bool,
    pub(crate) guest_can_join: bool,
    pub(crate) join_rule: String,
}

impl RoomService {
    pub(crate) fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        Ok(match self.store.get(Table::Aliases, alias.as_bytes())? {
            Some(bytes) => Some(
                serde_json::from_slice::<AliasRecord>(&bytes)
                    .map_err(|e| Error::internal(e.to_string()))?
                    .room_id,
            ),
            None => None,
        })
    }

    /// Creates an alias; `M_UNKNOWN`-style 409 when it exists, as Synapse answers.
    pub(crate) async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> Result<()> {
        if alias.server_name() != self.server_name {
            return Err(Error::invalid_param("Alias must be on this server"));
        }
        self.room(room_id)?;
        if self.resolve_alias(alias)?.is_some() {
            return Err(Error::matrix(
                http::StatusCode::CONFLICT,
                "M_UNKNOWN",
                "Room alias already exists",
            ));
        }
        let record = AliasRecord {
            room_id: room_id.to_owned(),
            creator: creator.to_owned(),
        };
        let mut batch = Batch::new();
        batch.put(
            Table::Aliases,
            alias.as_bytes().to_vec(),
            serde_json::to_vec(&record).expect("serializes"),
        );
        self.store.write_durable(batch).await?;
        Ok(())
    }

    /// Deletes an alias: its creator or a user with power to change the canonical alias may.
    pub(crate) async fn delete_alias(&self, alias: &RoomAliasId, user: &UserId) -> Result<()> {
        let bytes = self
            .store
            .get(Table::Aliases, alias.as_bytes())?
            .ok_or_else(|| Error::not_found("Alias not found"))?;
        let record: AliasRecord =
            serde_json::from_slice(&bytes).map_err(|e| Error::internal(e.to_string()))?;
        if record.creator != user {
            let room = self.room(&record.room_id)?;
            let levels = self.power_levels(&room)?;
            if levels.user_level(user) < levels.state_level("m.room.canonical_alias") {
                return Err(Error::forbidden("You may not delete this alias"));
            }
        }
        let mut batch = Batch::new();
        batch.delete(Table::Aliases, alias.as_bytes().to_vec());
        self.store.write_durable(batch).await?;
        Ok(())
    }

    /// Local aliases pointing to a room.
    pub(crate) fn room_aliases(&self, room_id: &RoomId) -> Result<Vec<String>> {
        // Aliases are few per server; this admin-rate endpoint may scan them.
        let mut out = Vec::new();
        for entry in self.store.scan_prefix(Table::Aliases, b"") {
            let (key, value) = entry?;
            let record: AliasRecord =
                serde_json::from_slice(&value).map_err(|e| Error::internal(e.to_string()))?;
            if record.room_id == room_id {
                out.push(String::from_utf8_lossy(&key).into_owned());
            }
        }
        Ok(out)
    }

    pub(crate) async fn set_public(&self, room_id: &RoomId, public: bool) -> Result<()> {
        self.room(room_id)?;
        let mut batch = Batch::new();
        if public {
            batch.put(Table::PublicRooms, room_id.as_bytes().to_vec(), Vec::new());
        } else {
            batch.delete(Table::PublicRooms, room_id.as_bytes().to_vec());
        }
        self.store.write_durable(batch).await?;
        Ok(())
    }

    pub(crate) fn is_public(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .store
            .contains(Table::PublicRooms, room_id.as_bytes())?)
    }

    /// The public directory, filtered by a search term, most joined first.
    pub(crate) fn public_rooms(&self, search: Option<&str>) -> Result<Vec<DirectoryEntry>> {
        let search = search.map(str::to_lowercase);
        let mut out = Vec::new();
        for entry in self.store.scan_prefix(Table::PublicRooms, b"") {
            let (key, _) = entry?;
            let Ok(room_id) = RoomId::parse(String::from_utf8_lossy(&key).as_ref()) else {
                continue;
            };
            let entry = self.directory_entry(&room_id)?;
            if let Some(term) = &search {
                let hay = [&entry.name, &entry.topic, &entry.canonical_alias]
                    .iter()
                    .filter_map(|s| s.as_deref())
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
                    .join(" ");
                if !hay.contains(term.as_str()) {
                    continue;
                }
            }
            out.push(entry);
        }
        out.sort_by(|a, b| {
            b.num_joined_members
                .cmp(&a.num_joined_members)
                .then(a.room_id.cmp(&b.room_id))
        });
        Ok(out)
    }

    fn directory_entry(&self, room_id: &RoomId) -> Result<DirectoryEntry> {
        let room = self.room(room_id)?;
        let field = |kind: StateEventType, key: &str| -> Result<Option<String>> {
            Ok(self
                .state_pdu(room.short, &kind.to_string(), "")?
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p.content.get()).ok())
                .and_then(|c| c.get(key).and_then(|v| v.as_str()).map(str::to_owned)))
        };
        let history = field(StateEventType::RoomHistoryVisibility, "history_visibility")?;
        Ok(DirectoryEntry {
            room_id: room_id.to_owned(),
            name: field(StateEventType::RoomName, "name")?,
            topic: field(StateEventType::RoomTopic, "topic")?,
            canonical_alias: field(StateEventType::RoomCanonicalAlias, "alias")?,
            avatar_url: field(StateEventType::RoomAvatar, "url")?,
            num_joined_members: room.joined_count() as u64,
            world_readable: history.as_deref() == Some("world_readable"),
            guest_can_join: field(StateEventType::RoomGuestAccess, "guest_access")?.as_deref()
                == Some("can_join"),
            join_rule: field(StateEventType::RoomJoinRules, "join_rule")?
                .unwrap_or_else(|| "invite".into()),
        })
    }
}
