//! What administrators see of rooms and do to them: the room list, a room's details and
//! members, and deletion.
//!
//! Deleting a room blocks it (nothing but departures is appended from then on, so nobody joins
//! again), makes every member leave (their clients see the departure, as when Synapse shuts a
//! room down), removes its aliases and directory entry, and purges its history. A purge keeps
//! the stream whole: every event keeps its position and id, because sync tokens, the stream
//! consumers and the recovered stream head rely on positions never vanishing; but each is
//! rewritten in its redacted form, so no message text, media URL or other content is left in
//! the store (redaction keeps only what the auth rules need: membership, join rule, power).
//! The media files themselves stay with their uploaders' other uploads.

use std::sync::atomic::Ordering;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, events::room::member::MembershipState};
use serde::Serialize;
use serde_json::value::RawValue as RawJsonValue;

use super::{
    MembershipChange, RoomMeta, RoomRecord, RoomService, StoredEvent, member_target, membership_of,
};
use crate::{
    error::{Error, Result},
    events::redact,
    storage::{Batch, Key, Table, keys},
};

/// Events rewritten per batch while purging: bounds one write and the time the room's append
/// lock is held at a stretch.
const PURGE_BATCH: usize = 500;

/// What a deletion did.
#[derive(Debug, Serialize)]
pub(crate) struct Deleted {
    pub(crate) kicked_users: Vec<OwnedUserId>,
    pub(crate) failed_to_kick_users: Vec<OwnedUserId>,
    pub(crate) local_aliases: Vec<String>,
    pub(crate) purged_events: u64,
}

/// A room as administrators see it (Synapse's room details fields).
#[derive(Debug, Serialize)]
pub(crate) struct RoomDetails {
    pub(crate) room_id: OwnedRoomId,
    pub(crate) name: Option<String>,
    pub(crate) topic: Option<String>,
    pub(crate) avatar: Option<String>,
    pub(crate) canonical_alias: Option<String>,
    pub(crate) joined_members: u64,
    pub(crate) joined_local_members: u64,
    pub(crate) version: String,
    pub(crate) creator: Option<OwnedUserId>,
    pub(crate) encryption: Option<String>,
    pub(crate) federatable: bool,
    pub(crate) public: bool,
    pub(crate) join_rules: Option<String>,
    pub(crate) guest_access: Option<String>,
    pub(crate) history_visibility: Option<String>,
    pub(crate) state_events: u64,
    pub(crate) room_type: Option<String>,
}

impl RoomService {
    /// Every room of this server that is not deleted, in room id order. An admin-rate scan of
    /// the rooms table (one key per room).
    pub(crate) fn list_rooms(&self) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for entry in self.store.scan_prefix(Table::Rooms, b"") {
            let (key, value) = entry?;
            let record: RoomRecord = serde_json::from_slice(&value)
                .map_err(|e| super::corrupt("rooms", e.to_string()))?;
            if record.blocked {
                continue;
            }
            if let Ok(room_id) = RoomId::parse(String::from_utf8_lossy(&key).as_ref()) {
                out.push(room_id);
            }
        }
        Ok(out)
    }

    /// `M_NOT_FOUND` for unknown and deleted rooms.
    pub(crate) fn live_room(&self, room_id: &RoomId) -> Result<std::sync::Arc<RoomMeta>> {
        let room = self.room(room_id)?;
        if room.blocked.load(Ordering::Acquire) {
            return Err(Error::not_found("Room not found"));
        }
        Ok(room)
    }

    pub(crate) fn details(&self, room_id: &RoomId) -> Result<RoomDetails> {
        let room = self.live_room(room_id)?;
        let field = |kind: &str, key: &str| -> Result<Option<String>> {
            Ok(self
                .state_pdu(room.short, kind, "")?
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p.content.get()).ok())
                .and_then(|c| c.get(key).and_then(|v| v.as_str()).map(str::to_owned)))
        };
        let create = self.state_pdu(room.short, "m.room.create", "")?;
        let create_content = create
            .as_ref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p.content.get()).ok())
            .unwrap_or_default();
        let joined = room.joined_members();
        let local = joined
            .iter()
            .filter(|u| u.server_name() == self.server_name)
            .count();
        Ok(RoomDetails {
            room_id: room.room_id.clone(),
            name: field("m.room.name", "name")?,
            topic: field("m.room.topic", "topic")?,
            avatar: field("m.room.avatar", "url")?,
            canonical_alias: field("m.room.canonical_alias", "alias")?,
            joined_members: joined.len() as u64,
            joined_local_members: local as u64,
            version: room.version.to_string(),
            creator: create.map(|p| p.sender),
            encryption: field("m.room.encryption", "algorithm")?,
            federatable: create_content["m.federate"].as_bool().unwrap_or(true),
            public: self.is_public(room_id)?,
            join_rules: field("m.room.join_rules", "join_rule")?,
            guest_access: field("m.room.guest_access", "guest_access")?,
            history_visibility: field("m.room.history_visibility", "history_visibility")?,
            state_events: self.current_state_keys(room.short)?.len() as u64,
            room_type: create_content["type"].as_str().map(str::to_owned),
        })
    }

    /// The room's members by their current membership (joined, invited, knocking, left, banned).
    pub(crate) fn memberships(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<(OwnedUserId, MembershipState)>> {
        let room = self.live_room(room_id)?;
        let mut out = Vec::new();
        for (kind, _, pos) in self.current_state_keys(room.short)? {
            if kind != "m.room.member" {
                continue;
            }
            let pdu = &self.event(pos)?.pdu;
            if let (Some(user), Some(membership)) = (member_target(pdu), membership_of(pdu)) {
                out.push((user, membership));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Deletes a room (see the module's comment). Deleting a deleted room is `M_NOT_FOUND`.
    pub(crate) async fn delete_room(&self, room_id: &RoomId) -> Result<Deleted> {
        let present = self.memberships(room_id)?;
        let room = self.room(room_id)?;
        self.block(&room).await?;
        let mut deleted = Deleted {
            kicked_users: Vec::new(),
            failed_to_kick_users: Vec::new(),
            local_aliases: Vec::new(),
            purged_events: 0,
        };
        // Blocked first, so the list of members cannot grow while they leave.
        for (user, membership) in present {
            use MembershipState::{Invite, Join, Knock};
            if !matches!(membership, Join | Invite | Knock) {
                continue;
            }
            let change = MembershipChange {
                sender: &user,
                target: &user,
                membership: MembershipState::Leave,
                profile: Default::default(),
                reason: Some("This room has been deleted"),
                is_direct: None,
            };
            match self.change_membership(room_id, change).await {
                Ok(_) => deleted.kicked_users.push(user),
                Err(e) => {
                    tracing::warn!(room = %room_id, user = %user, error = %e, "could not remove a member of a deleted room");
                    deleted.failed_to_kick_users.push(user);
                }
            }
        }
        deleted.local_aliases = self.room_aliases(room_id)?;
        let mut batch = Batch::new();
        for alias in &deleted.local_aliases {
            batch.delete(Table::Aliases, alias.as_bytes().to_vec());
        }
        batch.delete(Table::PublicRooms, room_id.as_bytes().to_vec());
        self.store.write_durable(batch).await?;
        deleted.purged_events = self.purge(&room).await?;
        tracing::info!(room = %room_id, purged = deleted.purged_events, "room deleted");
        Ok(deleted)
    }

    /// Marks the room deleted, durably, under its append lock: no append that started before
    /// can land after.
    async fn block(&self, room: &RoomMeta) -> Result<()> {
        let _head = room.head.lock().await;
        if room.blocked.load(Ordering::Acquire) {
            return Err(Error::not_found("Room not found"));
        }
        let record = RoomRecord {
            short: room.short,
            version: room.version.clone(),
            blocked: true,
        };
        let mut batch = Batch::new();
        batch.put(
            Table::Rooms,
            room.room_id.as_bytes().to_vec(),
            serde_json::to_vec(&record).map_err(|e| Error::internal(e.to_string()))?,
        );
        self.store.write_durable(batch).await?;
        room.blocked.store(true, Ordering::Release);
        Ok(())
    }

    /// Rewrites every event of the room redacted, a batch at a time; the number rewritten.
    async fn purge(&self, room: &RoomMeta) -> Result<u64> {
        let prefix = Key::new().u64(room.short).into_vec();
        let end = Key::new().u64(room.short).u64(u64::MAX).into_vec();
        let mut from = prefix.clone();
        let mut purged = 0;
        loop {
            let _head = room.head.lock().await;
            let mut positions = Vec::with_capacity(PURGE_BATCH);
            for entry in self.store.range(Table::Timeline, &from, &end) {
                let (key, _) = entry?;
                positions.push(keys::trailing_u64(key.as_ref()));
                if positions.len() == PURGE_BATCH {
                    break;
                }
            }
            let Some(&last) = positions.last() else {
                return Ok(purged);
            };
            let mut rewritten = Vec::new();
            let mut batch = Batch::new();
            for pos in positions.iter().copied() {
                let stored = self.event(pos)?.stored.clone();
                let json = redact(stored.pdu.get(), &room.rules)?;
                if json == stored.pdu.get() {
                    continue;
                }
                let pdu =
                    RawJsonValue::from_string(json).map_err(|e| Error::internal(e.to_string()))?;
                let stored = StoredEvent { pdu, ..stored };
                batch.put(
                    Table::Events,
                    pos.to_be_bytes().to_vec(),
                    serde_json::to_vec(&stored).map_err(|e| Error::internal(e.to_string()))?,
                );
                rewritten.push((pos, stored));
            }
            purged += rewritten.len() as u64;
            self.events.begin_rewrite();
            let written = self.store.write_durable(batch).await;
            self.end_rewrite(written.is_ok(), rewritten)?;
            written?;
            from = Key::new().u64(room.short).u64(last + 1).into_vec();
            if positions.len() < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }
}

impl RoomService {
    /// Messages (`m.room.message`, `m.room.encrypted`, `m.sticker`) stored at or after
    /// `since_ms`, looking at no more than `budget` events: the count, and whether it is
    /// complete. The first event of the period is found by bisecting positions (stream order
    /// is time order, save appservices' `?ts=`), so the cost is that period's events.
    pub(crate) fn messages_since(&self, since_ms: u64, budget: usize) -> Result<(u64, bool)> {
        let ts = |loaded: &super::Loaded| u64::from(loaded.pdu.origin_server_ts.get());
        let (mut lo, mut hi) = (1u64, self.stream.head().saturating_add(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.event_at_or_after(mid)? {
                Some((pos, loaded)) if ts(&loaded) < since_ms => lo = pos + 1,
                _ => hi = mid,
            }
        }
        let mut count = 0;
        let from = lo.to_be_bytes();
        for (seen, entry) in self
            .store
            .range(Table::Events, &from, &[0xFF; 9])
            .enumerate()
        {
            if seen == budget {
                return Ok((count, false));
            }
            let (key, _) = entry?;
            let loaded = self.event(keys::decode_u64(key.as_ref()))?;
            let kind = loaded.pdu.kind.to_string();
            if matches!(
                kind.as_str(),
                "m.room.message" | "m.room.encrypted" | "m.sticker"
            ) {
                count += 1;
            }
        }
        Ok((count, true))
    }

    /// The first stored event at position `pos` or after it.
    fn event_at_or_after(&self, pos: u64) -> Result<Option<(u64, std::sync::Arc<super::Loaded>)>> {
        let from = pos.to_be_bytes();
        let Some(entry) = self.store.range(Table::Events, &from, &[0xFF; 9]).next() else {
            return Ok(None);
        };
        let (key, _) = entry?;
        let at = keys::decode_u64(key.as_ref());
        Ok(Some((at, self.event(at)?)))
    }
}
