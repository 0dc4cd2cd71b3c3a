//! Desk-owned rooms: the conversations the desk opens itself (for a customer who invited the
//! bot into a room it cannot run, or through the support API) and each conversation's notes
//! room.
//!
//! The support bot creates them and holds power 100; agents and support admins hold 50;
//! everyone else the default 0. At 0 a customer may talk, react, redact their own messages and
//! read, and nothing more: every state event needs 100 (room name, topic and avatar 50, so
//! agents may tidy them), inviting, kicking, banning and redacting others' events need 50,
//! and nobody but the bot may change power levels or turn on encryption (which would lock the
//! bot out of the conversation). A notes room takes invites from the bot only, which invites
//! staff only: the customer can never be let in.
//!
//! A creation that a replay may repeat (the bot handling an invite again after a crash) names
//! its room first: [`intended_room`] records a fresh room id durably under a key before the
//! room is created with that id, so the retry finds the id, sees the room exists, and goes on.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, api::client::room::create_room::v3::RoomPreset};
use serde_json::{Map, Value, json};

use super::{CONVERSATION_EVENT, Desk, TICKET_EVENT, changes::ChangeGuard};
use crate::{
    error::{Error, Result},
    rooms::{CreateRoom, MemberProfile},
    storage::{Batch, Table},
};

/// What a desk-owned room is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A conversation: the customer is a member.
    Conversation,
    /// A conversation's private notes: staff only.
    Notes,
}

/// A desk-owned room to create.
pub(crate) struct OwnedRoom {
    pub(crate) purpose: Purpose,
    pub(crate) room_id: OwnedRoomId,
    pub(crate) name: Option<String>,
    pub(crate) topic: Option<String>,
    pub(crate) invite: Vec<OwnedUserId>,
    /// Invites say `is_direct`: clients list the room with the invitee's direct chats.
    pub(crate) is_direct: bool,
    /// `(type, state_key, content)`.
    pub(crate) initial_state: Vec<(String, String, Value)>,
}

/// The power levels of a desk-owned room.
fn power_levels(desk: &Desk<'_>, purpose: Purpose) -> Map<String, Value> {
    let mut users = Map::new();
    let staff = desk.support.roster.staff();
    for user in staff.members() {
        users.insert(user.to_string(), json!(50));
    }
    users.insert(desk.bot().to_string(), json!(100));
    let invite = match purpose {
        Purpose::Conversation => 50,
        Purpose::Notes => 100,
    };
    let levels = json!({
        "users": users,
        "users_default": 0,
        "events_default": 0,
        "state_default": 100,
        "events": {
            "m.room.name": 50,
            "m.room.topic": 50,
            "m.room.avatar": 50,
            "m.room.pinned_events": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.join_rules": 100,
            "m.room.encryption": 100,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.canonical_alias": 100,
            CONVERSATION_EVENT: 100,
            TICKET_EVENT: 100,
        },
        "invite": invite,
        "kick": 50,
        "ban": 50,
        "redact": 50,
        "historical": 100,
        "notifications": { "room": 50 },
    });
    match levels {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

/// Creates a desk-owned room as the support bot.
pub(crate) async fn create_room(desk: &Desk<'_>, room: OwnedRoom) -> Result<OwnedRoomId> {
    let request = CreateRoom {
        preset: Some(RoomPreset::PrivateChat),
        name: room.name,
        topic: room.topic,
        invite: room.invite,
        is_direct: room.is_direct,
        initial_state: room.initial_state,
        power_level_override: Some(power_levels(desk, room.purpose)),
        creator_profile: MemberProfile {
            displayname: Some(desk.config().bot_displayname.clone()),
            avatar_url: None,
        },
        room_id: Some(room.room_id),
        ..Default::default()
    };
    desk.rooms.create_room(desk.bot(), request).await
}

/// The room id recorded under `key`, recording a fresh one (durably) if there is none. Under
/// the change lock, so two callers never record two ids for one key.
pub(crate) async fn intended_room(
    desk: &Desk<'_>,
    _held: &ChangeGuard<'_>,
    key: &[u8],
) -> Result<OwnedRoomId> {
    if let Some(room_id) = recorded_room(desk, key)? {
        return Ok(room_id);
    }
    let room_id = desk.rooms.new_room_id()?;
    let mut batch = Batch::new();
    batch.put(
        Table::SupportState,
        key.to_vec(),
        room_id.as_bytes().to_vec(),
    );
    desk.store.write_durable(batch).await?;
    Ok(room_id)
}

/// The room id recorded under `key`, if any.
pub(crate) fn recorded_room(desk: &Desk<'_>, key: &[u8]) -> Result<Option<OwnedRoomId>> {
    desk.store
        .get(Table::SupportState, key)?
        .map(|v| {
            std::str::from_utf8(&v)
                .ok()
                .and_then(|id| RoomId::parse(id).ok())
                .ok_or_else(|| Error::internal("corrupt desk room record"))
        })
        .transpose()
}

/// Whether the support bot can run a conversation in the room: set the desk's state and invite
/// agents (power the room's members gave it), and read what the customer writes (the room is
/// not end-to-end encrypted: the bot has no keys, and a desk room never turns encryption on).
pub(crate) fn can_manage(desk: &Desk<'_>, room_id: &RoomId) -> Result<bool> {
    let room = desk.rooms.room(room_id)?;
    if desk
        .rooms
        .state_pos(room.short, "m.room.encryption", "")?
        .is_some()
    {
        return Ok(false);
    }
    let levels = desk.rooms.power_levels(&room)?;
    let bot = levels.user_level(desk.bot());
    Ok(bot >= levels.state_level(CONVERSATION_EVENT)
        && bot >= levels.state_level(TICKET_EVENT)
        && bot >= levels.invite())
}
