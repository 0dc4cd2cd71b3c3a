//! `/createRoom`: the initial events in the order the spec lists them, stored as one durable step.

use std::sync::Arc;

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    api::client::room::create_room::v3::RoomPreset,
    events::{StateEventType, room::member::MembershipState},
};
use serde_json::{Map, Value, json};

use super::{RoomMeta, RoomRecord, RoomService, membership::MemberProfile, timeline::Txn};
use crate::{
    error::{Error, Result},
    events::{EventTemplate, rules_for},
    storage::{Batch, Table},
};

/// A validated `/createRoom` request.
#[derive(Debug, Default)]
pub(crate) struct CreateRoom {
    pub(crate) preset: Option<RoomPreset>,
    pub(crate) public: bool,
    pub(crate) alias: Option<OwnedRoomAliasId>,
    pub(crate) name: Option<String>,
    pub(crate) topic: Option<String>,
    pub(crate) invite: Vec<OwnedUserId>,
    pub(crate) is_direct: bool,
    /// `(type, state_key, content)` from `initial_state`.
    pub(crate) initial_state: Vec<(String, String, Value)>,
    pub(crate) power_level_override: Option<Map<String, Value>>,
    pub(crate) room_version: Option<RoomVersionId>,
    pub(crate) creation_content: Option<Map<String, Value>>,
    pub(crate) creator_profile: MemberProfile,
    /// The id to create the room under (from [`RoomService::new_room_id`]), for callers that
    /// record it durably first so that a creation retried after a crash finds its room;
    /// `M_ROOM_IN_USE` if a room has it. `None`: a new one.
    pub(crate) room_id: Option<OwnedRoomId>,
}

impl RoomService {
    /// Creates a room: its record, then its initial events, durable together, then its alias
    /// and directory entry. A request the server refuses creates nothing.
    pub(crate) async fn create_room(
        &self,
        creator: &UserId,
        req: CreateRoom,
    ) -> Result<OwnedRoomId> {
        let version = req
            .room_version
            .clone()
            .unwrap_or_else(|| self.default_version.clone());
        rules_for(&version)?;
        if let Some(alias) = &req.alias
            && self.resolve_alias(alias)?.is_some()
        {
            return Err(Error::room_in_use("Room alias already taken"));
        }
        let room_id = match &req.room_id {
            Some(id) if self.exists(id)? => {
                return Err(Error::room_in_use("A room with this id exists"));
            }
            Some(id) => id.clone(),
            None => self.new_room_id()?,
        };
        let mut events = initial_events(creator, &req, &version)?;
        // Other servers' users are invited once the room exists, through their servers (their
        // promotion in the power levels stays).
        let mut remote: Vec<OwnedUserId> = Vec::new();
        if self.federated.get().is_some() {
            remote = req
                .invite
                .iter()
                .filter(|u| u.server_name() != self.server_name)
                .cloned()
                .collect();
            events.retain(|t| {
                t.kind != ruma::events::TimelineEventType::RoomMember
                    || !remote
                        .iter()
                        .any(|u| t.state_key.as_deref() == Some(u.as_str()))
            });
        }

        let room = self.register_room(&room_id, version)?;
        let mut last = None;
        for template in events {
            let (_, pending) = self
                .append_pending(&room, creator, template, None::<Txn>)
                .await?;
            last = pending;
        }
        let last = last.expect("a room has events");
        self.stream.finish(last).await?;

        if let Some(alias) = &req.alias {
            self.set_alias(alias, &room_id, creator).await?;
        }
        if req.public {
            self.set_public(&room_id, true).await?;
        }
        for invitee in &remote {
            let change = super::MembershipChange {
                sender: creator,
                target: invitee,
                membership: MembershipState::Invite,
                profile: MemberProfile::default(),
                reason: None,
                is_direct: req.is_direct.then_some(true),
            };
            // As Synapse: a server that refuses or does not answer leaves the room made.
            if let Err(e) = self.change_membership(&room_id, change).await {
                tracing::warn!(%room_id, %invitee, error = %e, "remote invite at creation failed");
            }
        }
        let mut audience = room.audience();
        audience.push(creator.to_owned());
        self.notifier.wake(audience.iter().map(|u| &**u));
        Ok(room_id)
    }

    /// Records a new room under a fresh short id. Not waited for: it becomes durable with the
    /// room's events, which the same disk sync covers.
    pub(super) fn register_room(
        &self,
        room_id: &RoomId,
        version: RoomVersionId,
    ) -> Result<Arc<RoomMeta>> {
        let short = self.store.increment(Table::Global, b"room_short", 1)?;
        let record = RoomRecord {
            short,
            version,
            blocked: false,
        };
        let mut batch = Batch::new();
        batch.put(
            Table::Rooms,
            room_id.as_bytes().to_vec(),
            serde_json::to_vec(&record).expect("serializes"),
        );
        let _ = self.store.write(batch)?;
        self.room(room_id)
    }

    /// A fresh random room id on this server.
    pub(crate) fn new_room_id(&self) -> Result<OwnedRoomId> {
        use rand::{Rng, distributions::Alphanumeric};
        let local: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(18)
            .map(char::from)
            .collect();
        RoomId::parse(format!("!{local}:{}", self.server_name))
            .map_err(|e| Error::internal(e.to_string()))
    }
}

/// The room's initial events in the order the spec lists them: create, the creator's join,
/// power levels, the preset's state, `initial_state`, name, topic, invites. Checked whole
/// before anything is written, so a bad request creates nothing.
fn initial_events(
    creator: &UserId,
    req: &CreateRoom,
    version: &RoomVersionId,
) -> Result<Vec<EventTemplate>> {
    let preset = req.preset.clone().unwrap_or(if req.public {
        RoomPreset::PublicChat
    } else {
        RoomPreset::PrivateChat
    });
    let mut events = Vec::from(founding_events(creator, req, version, &preset));
    events.extend(preset_events(req, &preset));
    events.extend(requested_state(req)?);
    events.extend(invites(req));
    Ok(events)
}

/// `m.room.create`, the creator's join and the power levels.
fn founding_events(
    creator: &UserId,
    req: &CreateRoom,
    version: &RoomVersionId,
    preset: &RoomPreset,
) -> [EventTemplate; 3] {
    let mut create = req.creation_content.clone().unwrap_or_default();
    // Since room version 11 the creator is the create event's sender, not a content key.
    if *version != RoomVersionId::V11 {
        create.insert("creator".into(), json!(creator));
    }
    create.insert("room_version".into(), json!(version));
    let mut member = serde_json::to_value(&req.creator_profile).expect("serializes");
    member["membership"] = json!(MembershipState::Join);
    let levels = power_levels(
        creator,
        preset,
        &req.invite,
        req.power_level_override.as_ref(),
    );
    [
        EventTemplate::state_json(StateEventType::RoomCreate, "", &create),
        EventTemplate::state_json(StateEventType::RoomMember, creator.as_str(), &member),
        EventTemplate::state_json(StateEventType::RoomPowerLevels, "", &levels),
    ]
}

/// The canonical alias, and the join rules, history visibility and guest access of the preset.
fn preset_events(req: &CreateRoom, preset: &RoomPreset) -> Vec<EventTemplate> {
    let mut events = Vec::with_capacity(4);
    if let Some(alias) = &req.alias {
        events.push(EventTemplate::state_json(
            StateEventType::RoomCanonicalAlias,
            "",
            &json!({ "alias": alias }),
        ));
    }
    let (join_rule, history, guest) = match preset {
        RoomPreset::PublicChat => ("public", "shared", "forbidden"),
        _ => ("invite", "shared", "can_join"),
    };
    events.push(EventTemplate::state_json(
        StateEventType::RoomJoinRules,
        "",
        &json!({ "join_rule": join_rule }),
    ));
    events.push(EventTemplate::state_json(
        StateEventType::RoomHistoryVisibility,
        "",
        &json!({ "history_visibility": history }),
    ));
    events.push(EventTemplate::state_json(
        StateEventType::RoomGuestAccess,
        "",
        &json!({ "guest_access": guest }),
    ));
    events
}

/// `initial_state`, then the name and topic the request sets.
fn requested_state(req: &CreateRoom) -> Result<Vec<EventTemplate>> {
    let mut events = Vec::with_capacity(req.initial_state.len() + 2);
    for (kind, state_key, content) in &req.initial_state {
        if kind == "m.room.create" || kind == "m.room.member" || kind == "m.room.power_levels" {
            return Err(Error::bad_json(format!(
                "initial_state may not contain {kind}"
            )));
        }
        if !content.is_object() {
            return Err(Error::bad_json(format!(
                "initial_state {kind}: content must be an object"
            )));
        }
        events.push(EventTemplate::state_json(
            kind.as_str(),
            state_key.as_str(),
            content,
        ));
    }
    if let Some(name) = &req.name {
        events.push(EventTemplate::state_json(
            StateEventType::RoomName,
            "",
            &json!({ "name": name }),
        ));
    }
    if let Some(topic) = &req.topic {
        events.push(EventTemplate::state_json(
            StateEventType::RoomTopic,
            "",
            &json!({ "topic": topic, "m.topic": [{ "body": topic, "mimetype": "text/plain" }] }),
        ));
    }
    Ok(events)
}

/// An invite for each invitee, marked direct when the room is a direct chat.
fn invites(req: &CreateRoom) -> impl Iterator<Item = EventTemplate> + '_ {
    req.invite.iter().map(|invitee| {
        let mut content = json!({ "membership": "invite" });
        if req.is_direct {
            content["is_direct"] = json!(true);
        }
        EventTemplate::state_json(StateEventType::RoomMember, invitee.as_str(), &content)
    })
}

/// The initial power levels: the spec's defaults, the preset's invitee promotion, the override.
fn power_levels(
    creator: &UserId,
    preset: &RoomPreset,
    invite: &[OwnedUserId],
    override_content: Option<&Map<String, Value>>,
) -> Value {
    let mut users = Map::new();
    users.insert(creator.to_string(), json!(100));
    if *preset == RoomPreset::TrustedPrivateChat {
        for u in invite {
            users.insert(u.to_string(), json!(100));
        }
    }
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if *preset == RoomPreset::PublicChat { 50 } else { 0 },
        "historical": 100,
        "notifications": { "room": 50 }
    });
    if let (Some(overrides), Value::Object(map)) = (override_content, &mut content) {
        for (k, v) in overrides {
            map.insert(k.clone(), v.clone());
        }
    }
    content
}
