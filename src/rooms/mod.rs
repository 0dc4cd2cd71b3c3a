//! Rooms: the timeline, the state, membership, creation, aliases and the directory.
//!
//! A room created here is linear: every event's `prev_events` is the room's previous event, its
//! single forward extremity, because appends to one room are serialized by the room's lock.
//! Room state is kept two ways: the current state (`RoomState`, one key per type and state key)
//! and every state change (`StateHistory`), from which the state at any stream position follows.

mod adopt;
mod aggregations;
mod alias;
mod append;
mod cache;
pub(crate) use alias::DirectoryEntry;
mod admin;
mod create;
mod federated;
mod federated_hook;
mod history;
mod membership;
mod read;
mod relations;
mod remote;
mod resolve;
mod restricted;
mod signing_key;
mod threads;
mod timeline;
mod visibility;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use parking_lot::RwLock;
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId, UInt,
    UserId,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
    room_version_rules::RoomVersionRules,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue as RawJsonValue;

pub(crate) use admin::{Deleted, RoomDetails};
pub(crate) use adopt::RemoteState;
pub(crate) use cache::Loaded;
pub(crate) use create::CreateRoom;
pub(crate) use federated_hook::{Federated, RemoteInvite, RemoteJoin};
pub(crate) use membership::{MemberProfile, MembershipChange};
pub(crate) use read::{Direction, EventView};
pub(crate) use relations::{RECURSION_DEPTH, RelationsQuery, relation_of};
pub(crate) use remote::Accepted;
pub(crate) use signing_key::load_signing_key;
pub use timeline::Txn;
pub(crate) use visibility::Visibility;

use crate::{
    error::{Error, Result},
    events::{Pdu, SigningKey, rules_for},
    storage::{Key, StorageError, Store, Table, keys},
    stream::Notifier,
    stream::Stream,
};

/// The stored form of an event: its PDU and what the server knows around it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredEvent {
    pub(crate) event_id: OwnedEventId,
    pub(crate) room: u64,
    pub(crate) pdu: Box<RawJsonValue>,
    /// The sending device and its transaction id, for `unsigned.transaction_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) txn: Option<Txn>,
    /// Position of the state event this one replaced, for `unsigned.prev_content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prev_state: Option<u64>,
    /// Position of the redaction that redacted this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) redacted_by: Option<u64>,
    /// Set once a child the server aggregates (edit, thread reply, reference) points here: only
    /// such events pay for a look at the relations index when formatted (see `aggregations.rs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) aggregated: bool,
}

impl StoredEvent {
    pub(crate) fn pdu(&self) -> Result<Pdu> {
        Pdu::parse(self.event_id.clone(), self.pdu.get())
            .map_err(|e| corrupt("events", format!("{}: {e}", self.event_id)))
    }
}

/// The persistent record of a room.
#[derive(Debug, Serialize, Deserialize)]
struct RoomRecord {
    short: u64,
    version: RoomVersionId,
    /// Deleted by an administrator (`delete.rs`): nothing but departures is appended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    blocked: bool,
}

/// What the server keeps in memory about a room it has touched.
pub struct RoomMeta {
    pub(crate) room_id: OwnedRoomId,
    pub(crate) short: u64,
    pub(crate) version: RoomVersionId,
    pub(crate) rules: RoomVersionRules,
    /// Serializes appends; holds the room's forward extremity.
    head: tokio::sync::Mutex<Head>,
    /// Position of the room's last event, readable without the append lock.
    last_pos: std::sync::atomic::AtomicU64,
    members: RwLock<Members>,
    /// [`RoomRecord::blocked`], read by every append (set under the append lock).
    blocked: std::sync::atomic::AtomicBool,
    /// Whether the history was only ever shared or world-readable, as of the current
    /// `m.room.history_visibility` (its position): `visibility.rs`.
    history_shared: parking_lot::Mutex<Option<(Option<u64>, bool)>>,
}

/// What appends need, guarded by the room's append lock.
#[derive(Debug, Clone)]
struct Head {
    /// The forward extremities: the events no other event of the room points to yet, oldest
    /// first. One while only this server writes; more when another server's event forked
    /// from an older one, until this server's next event joins them.
    extremities: Vec<OwnedEventId>,
    /// The greatest depth in the room.
    depth: UInt,
    /// The current state: every append reads its auth events here instead of from the store.
    state: CurrentState,
    /// Message-like events already authorized under the current state, by sender and type,
    /// with their auth events. Their auth rules read nothing but the state and the sender, so
    /// the answer holds until the state changes, and every state change clears this.
    authorized: HashMap<OwnedUserId, HashMap<TimelineEventType, Vec<OwnedEventId>>>,
}

/// A room's current state, type → state key → position of the event. Keyed by type first so
/// that a lookup by `(&StateEventType, &str)` allocates nothing.
#[derive(Debug, Clone, Default)]
struct CurrentState(HashMap<StateEventType, HashMap<String, u64>>);

impl CurrentState {
    fn get(&self, kind: &StateEventType, state_key: &str) -> Option<u64> {
        self.0.get(kind)?.get(state_key).copied()
    }

    fn insert(&mut self, kind: StateEventType, state_key: String, pos: u64) {
        self.0.entry(kind).or_default().insert(state_key, pos);
    }
    /// Every entry: type, state key, position.
    fn iter(&self) -> impl Iterator<Item = (&StateEventType, &str, u64)> {
        self.0.iter().flat_map(|(kind, keys)| {
            keys.iter()
                .map(move |(key, pos)| (kind, key.as_str(), *pos))
        })
    }
}

#[derive(Debug, Default)]
struct Members {
    joined: HashSet<OwnedUserId>,
    invited: HashSet<OwnedUserId>,
    /// Joined members per server: which servers are in the room, without a walk of the
    /// members on every event the federation sender queues.
    joined_servers: HashMap<OwnedServerName, usize>,
}

impl Members {
    fn join(&mut self, user: OwnedUserId) {
        let server = user.server_name().to_owned();
        if self.joined.insert(user) {
            *self.joined_servers.entry(server).or_default() += 1;
        }
    }

    fn unjoin(&mut self, user: &UserId) {
        if self.joined.remove(user)
            && let Some(n) = self.joined_servers.get_mut(user.server_name())
        {
            *n -= 1;
            if *n == 0 {
                self.joined_servers.remove(user.server_name());
            }
        }
    }
}

impl RoomMeta {
    pub(crate) fn last_pos(&self) -> u64 {
        self.last_pos.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn joined_members(&self) -> Vec<OwnedUserId> {
        self.members.read().joined.iter().cloned().collect()
    }

    pub(crate) fn joined_count(&self) -> usize {
        self.members.read().joined.len()
    }

    pub(crate) fn invited_count(&self) -> usize {
        self.members.read().invited.len()
    }

    pub(crate) fn is_joined(&self, user: &UserId) -> bool {
        self.members.read().joined.contains(user)
    }

    /// Users whose sync must wake for a change in this room: joined and invited members.
    fn audience(&self) -> Vec<OwnedUserId> {
        let m = self.members.read();
        m.joined.iter().chain(m.invited.iter()).cloned().collect()
    }

    fn set_membership(&self, user: &UserId, membership: &MembershipState) {
        let mut m = self.members.write();
        m.unjoin(user);
        m.invited.remove(user);
        match membership {
            MembershipState::Join => {
                m.join(user.to_owned());
            }
            MembershipState::Invite => {
                m.invited.insert(user.to_owned());
            }
            _ => {}
        }
    }
}

/// A user's membership in a room, as `UserRooms` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UserRoom {
    pub(crate) membership: MembershipState,
    /// Stream position of the membership event.
    pub(crate) pos: u64,
}

pub struct RoomService {
    pub(crate) store: Store,
    pub(crate) stream: Arc<Stream>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) key: Arc<SigningKey>,
    pub(crate) server_name: OwnedServerName,
    pub(crate) default_version: RoomVersionId,
    rooms: RwLock<HashMap<OwnedRoomId, Arc<RoomMeta>>>,
    events: cache::EventCache,
    /// Joins and invites across servers, when federation is enabled (`federated_hook.rs`).
    federated: std::sync::OnceLock<Arc<dyn Federated>>,
}

impl RoomService {
    pub(crate) fn new(
        store: Store,
        stream: Arc<Stream>,
        notifier: Arc<Notifier>,
        key: Arc<SigningKey>,
        default_version: RoomVersionId,
    ) -> Self {
        let server_name = key.server_name.clone();
        let events = cache::EventCache::new(stream.head());
        RoomService {
            store,
            stream,
            notifier,
            key,
            server_name,
            default_version,
            rooms: RwLock::new(HashMap::new()),
            events,
            federated: std::sync::OnceLock::new(),
        }
    }

    /// The room's metadata, loading it on first use; `M_NOT_FOUND` for unknown rooms.
    pub(crate) fn room(&self, room_id: &RoomId) -> Result<Arc<RoomMeta>> {
        if let Some(meta) = self.rooms.read().get(room_id) {
            return Ok(meta.clone());
        }
        let record = self
            .store
            .get(Table::Rooms, room_id.as_bytes())?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let record: RoomRecord =
            serde_json::from_slice(&record).map_err(|e| corrupt("rooms", e.to_string()))?;
        let meta = Arc::new(self.load_meta(room_id, record)?);
        let mut rooms = self.rooms.write();
        Ok(rooms.entry(room_id.to_owned()).or_insert(meta).clone())
    }

    pub(crate) fn exists(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.store.contains(Table::Rooms, room_id.as_bytes())?)
    }

    fn load_meta(&self, room_id: &RoomId, record: RoomRecord) -> Result<RoomMeta> {
        let rules = rules_for(&record.version)?;
        let (mut extremities, depth, last_pos) = match self
            .store
            .last_with_prefix(Table::Timeline, &Key::new().u64(record.short).into_vec())?
        {
            Some((key, _)) => {
                let pos = keys::trailing_u64(&key);
                let pdu = &self.event(pos)?.pdu;
                (vec![pdu.event_id.clone()], pdu.depth, pos)
            }
            None => (Vec::new(), UInt::MIN, 0),
        };
        // Kept only while there are several (`append.rs`); one is the last event.
        if let Some(forks) = self
            .store
            .get(Table::Extremities, &record.short.to_be_bytes())?
        {
            extremities = serde_json::from_slice(&forks)
                .map_err(|e| corrupt("extremities", e.to_string()))?;
        }
        let mut members = Members::default();
        let mut state = CurrentState::default();
        for (kind, state_key, pos) in self.current_state_keys(record.short)? {
            let is_member = kind == "m.room.member";
            state.insert(StateEventType::from(kind), state_key, pos);
            if !is_member {
                continue;
            }
            let pdu = &self.event(pos)?.pdu;
            let (Some(user), Some(membership)) = (member_target(pdu), membership_of(pdu)) else {
                continue;
            };
            match membership {
                MembershipState::Join => {
                    members.join(user);
                    true
                }
                MembershipState::Invite => members.invited.insert(user),
                _ => false,
            };
        }
        Ok(RoomMeta {
            room_id: room_id.to_owned(),
            short: record.short,
            version: record.version,
            rules,
            head: tokio::sync::Mutex::new(Head {
                extremities,
                depth,
                state,
                authorized: HashMap::new(),
            }),
            last_pos: last_pos.into(),
            members: RwLock::new(members),
            blocked: record.blocked.into(),
            history_shared: parking_lot::Mutex::new(None),
        })
    }

    /// The event at a stream position, parsed (from the cache when it is there).
    pub(crate) fn event(&self, pos: u64) -> Result<Arc<Loaded>> {
        if let Some(hit) = self.events.get(pos) {
            return Ok(hit);
        }
        let epoch = self.events.epoch();
        let bytes = self
            .store
            .get(Table::Events, &pos.to_be_bytes())?
            .ok_or_else(|| corrupt("events", format!("missing event at {pos}")))?;
        let loaded = Arc::new(Loaded::parse(&bytes)?);
        self.events.fill(pos, loaded.clone(), epoch);
        Ok(loaded)
    }

    /// The stream position of an event id, if the server has it.
    pub(crate) fn event_pos(&self, event_id: &EventId) -> Result<Option<u64>> {
        Ok(self
            .store
            .get(Table::EventIds, event_id.as_bytes())?
            .map(|v| keys::decode_u64(&v)))
    }

    pub(crate) fn pdu_by_id(&self, event_id: &EventId) -> Result<Option<Pdu>> {
        match self.event_pos(event_id)? {
            Some(pos) => Ok(Some(self.event(pos)?.pdu.clone())),
            None => Ok(None),
        }
    }

    /// Position of the current state event `(kind, state_key)`.
    pub(crate) fn state_pos(&self, short: u64, kind: &str, state_key: &str) -> Result<Option<u64>> {
        let key = Key::new().u64(short).str(kind).str(state_key).into_vec();
        Ok(self
            .store
            .get(Table::RoomState, &key)?
            .map(|v| keys::decode_u64(&v)))
    }

    /// The current state event `(kind, state_key)`.
    pub(crate) fn state_pdu(&self, short: u64, kind: &str, state_key: &str) -> Result<Option<Pdu>> {
        match self.state_pos(short, kind, state_key)? {
            Some(pos) => Ok(Some(self.event(pos)?.pdu.clone())),
            None => Ok(None),
        }
    }

    /// The state event `(kind, state_key)` as it was at stream position `at` (inclusive).
    pub(crate) fn state_pos_at(
        &self,
        short: u64,
        kind: &str,
        state_key: &str,
        at: u64,
    ) -> Result<Option<u64>> {
        let prefix = Key::new().u64(short).str(kind).str(state_key);
        let from = prefix.clone().into_vec();
        let to = prefix.u64(at.saturating_add(1)).into_vec();
        Ok(self
            .store
            .range(Table::StateHistory, &from, &to)
            .next_back()
            .transpose()?
            .map(|(k, v)| history_entry(&k, &v).1))
    }

    /// A user's membership in a room, now.
    pub(crate) fn membership(
        &self,
        room: &RoomMeta,
        user: &UserId,
    ) -> Result<Option<MembershipState>> {
        Ok(self
            .state_pdu(room.short, "m.room.member", user.as_str())?
            .and_then(|p| membership_of(&p)))
    }

    /// The rooms a user has a membership in, with that membership.
    pub(crate) fn user_rooms(&self, user: &UserId) -> Result<Vec<(OwnedRoomId, UserRoom)>> {
        let prefix = Key::new().str(user.as_str()).into_vec();
        let mut out = Vec::new();
        for entry in self.store.scan_prefix(Table::UserRooms, &prefix) {
            let (key, value) = entry?;
            let room = keys::str_parts(&key[prefix.len()..])
                .next()
                .unwrap_or_default();
            let room = RoomId::parse(room).map_err(|e| corrupt("user_rooms", e.to_string()))?;
            let record: UserRoom =
                serde_json::from_slice(&value).map_err(|e| corrupt("user_rooms", e.to_string()))?;
            out.push((room, record));
        }
        Ok(out)
    }

    /// The rooms a user is joined to.
    pub(crate) fn joined_rooms(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .user_rooms(user)?
            .into_iter()
            .filter(|(_, r)| r.membership == MembershipState::Join)
            .map(|(id, _)| id)
            .collect())
    }

    /// `M_FORBIDDEN` unless the user is joined to the room.
    pub(crate) fn require_joined(&self, room_id: &RoomId, user: &UserId) -> Result<Arc<RoomMeta>> {
        let room = self.room(room_id).map_err(|e| match e {
            Error::Matrix {
                errcode: "M_NOT_FOUND",
                ..
            } => Error::forbidden("You are not joined to this room"),
            e => e,
        })?;
        if !room.is_joined(user) {
            return Err(Error::forbidden("You are not joined to this room"));
        }
        Ok(room)
    }
}

/// The user a member event is about.
pub(crate) fn member_target(pdu: &Pdu) -> Option<OwnedUserId> {
    pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
}

/// The membership a member event sets.
pub(crate) fn membership_of(pdu: &Pdu) -> Option<MembershipState> {
    #[derive(Deserialize)]
    struct C {
        membership: MembershipState,
    }
    pdu.content_as::<C>().ok().map(|c| c.membership)
}

/// A `StateHistory` entry as (the position the key changed at, the position of the event that
/// holds it from there): the same, but where a fork's resolution set the key to an older event
/// (`resolve.rs`), whose position the entry's value holds.
pub(crate) fn history_entry(key: &[u8], value: &[u8]) -> (u64, u64) {
    let at = keys::trailing_u64(key);
    match value.len() {
        8 => (at, keys::decode_u64(value)),
        _ => (at, at),
    }
}

pub(super) fn corrupt(table: &'static str, detail: String) -> Error {
    Error::Storage(StorageError::Corrupt { table, detail })
}

#[cfg(test)]
mod members_tests {
    use super::*;

    #[test]
    fn joined_servers_follow_every_membership_change() {
        let mut m = Members::default();
        let (a1, a2, b1) = (
            ruma::owned_user_id!("@a1:a.example"),
            ruma::owned_user_id!("@a2:a.example"),
            ruma::owned_user_id!("@b1:b.example"),
        );
        m.join(a1.clone());
        m.join(a1.clone());
        m.join(a2.clone());
        m.join(b1.clone());
        assert_eq!(m.joined_servers.len(), 2);
        assert_eq!(m.joined_servers[ruma::server_name!("a.example")], 2);
        m.unjoin(&a1);
        m.unjoin(&a1);
        assert_eq!(m.joined_servers[ruma::server_name!("a.example")], 1);
        m.unjoin(&b1);
        assert!(
            !m.joined_servers
                .contains_key(ruma::server_name!("b.example"))
        );
        m.unjoin(&a2);
        assert!(m.joined_servers.is_empty() && m.joined.is_empty());
    }
}
