//! Rooms: creation, the room list, members and state.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Router,
    extract::{Path, State},
    routing::get,
};
use ruma::{
    OwnedRoomAliasId, RoomAliasId,
    api::client::{
        membership::{get_member_events, joined_members, joined_rooms},
        room::{aliases, create_room, create_room::v3::RoomPreset},
        state::{get_state_event_for_key, get_state_events, send_state_event},
    },
    events::room::member::MembershipState,
    serde::Raw,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::profile::member_profile;
use super::view;
use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    events::EventTemplate,
    rooms::{CreateRoom, membership_of},
    services::Services,
    users::Identity,
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, create);
    let r = route(r, joined);
    let r = route(r, members);
    let r = route(r, joined_members_of);
    let r = route(r, state);
    let r = route(r, state_event);
    let r = route(r, send_state);
    let r = route(r, room_aliases);
    // `/state/{type}` and `/state/{type}/` mean the empty state key; ruma's path needs a key
    // segment, and axum does not match an empty one.
    ["v3", "r0"].into_iter().fold(r, |r, version| {
        let path = format!("/_matrix/client/{version}/rooms/{{room_id}}/state/{{event_type}}");
        let handler = || get(empty_key_state).put(super::message::send_state_empty_key);
        r.route(&path, handler())
            .route(&format!("{path}/"), handler())
    })
}

fn raw_object<T>(raw: &Raw<T>) -> Result<Map<String, Value>> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

async fn create(
    s: Arc<Services>,
    req: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response> {
    let creator = req.user_id().to_owned();
    let b = &req.body;
    // ruma keeps unknown presets as custom values; the spec has exactly three.
    if let Some(preset) = &b.preset
        && !matches!(
            preset,
            RoomPreset::PrivateChat | RoomPreset::PublicChat | RoomPreset::TrustedPrivateChat
        )
    {
        return Err(Error::bad_json(format!(
            "'{}' is not a valid preset",
            preset.as_str()
        )));
    }
    let alias = match &b.room_alias_name {
        Some(local) => Some(
            OwnedRoomAliasId::try_from(format!("#{local}:{}", s.config.server_name))
                .map_err(|e| Error::invalid_param(format!("Invalid room_alias_name: {e}")))?,
        ),
        None => None,
    };
    if let Some(alias) = &alias {
        s.check_alias_namespace(alias, req.identity())?;
    }
    let mut initial_state = Vec::new();
    for raw in &b.initial_state {
        #[derive(Deserialize)]
        struct Initial {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            state_key: String,
            content: Value,
        }
        let e: Initial = serde_json::from_str(raw.json().get())
            .map_err(|e| Error::bad_json(format!("initial_state: {e}")))?;
        initial_state.push((e.kind, e.state_key, e.content));
    }
    // Other servers' users: their servers answer for them when they are invited.
    let local = b
        .invite
        .iter()
        .filter(|u| u.server_name() == s.config.server_name || s.federation.is_none());
    for invitee in local {
        if !s.users.is_active(invitee)? {
            return Err(Error::not_found(format!("Unknown user {invitee}")));
        }
    }
    let profile = s
        .users
        .get(&creator)?
        .map(|r| member_profile(&r))
        .unwrap_or_default();
    let request = CreateRoom {
        preset: b.preset.clone(),
        public: b.visibility == ruma::api::client::room::Visibility::Public,
        alias,
        name: b.name.clone(),
        topic: b.topic.clone(),
        invite: b.invite.clone(),
        is_direct: b.is_direct,
        initial_state,
        power_level_override: s.support.bot_power_override(
            &creator,
            &b.invite,
            b.preset.as_ref() == Some(&RoomPreset::TrustedPrivateChat),
            b.power_level_content_override
                .as_ref()
                .map(raw_object)
                .transpose()?,
        ),
        room_version: b.room_version.clone(),
        creation_content: b.creation_content.as_ref().map(raw_object).transpose()?,
        creator_profile: profile,
        room_id: None,
    };
    let room_id = s.rooms.create_room(&creator, request).await?;
    Ok(create_room::v3::Response::new(room_id))
}

async fn joined(
    s: Arc<Services>,
    req: Ruma<joined_rooms::v3::Request>,
) -> Result<joined_rooms::v3::Response> {
    Ok(joined_rooms::v3::Response::new(
        s.rooms.joined_rooms(req.user_id())?,
    ))
}

async fn members(
    s: Arc<Services>,
    req: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let who = req.identity();
    let mut chunk = Vec::new();
    for (kind, _, pos) in s.rooms.visible_state(&req.body.room_id, &who.user_id)? {
        if kind != "m.room.member" {
            continue;
        }
        let event = s.rooms.event(pos)?;
        let membership = membership_of(&event.pdu);
        if req
            .body
            .membership
            .as_ref()
            .is_some_and(|m| membership.as_ref() != Some(m))
            || req
                .body
                .not_membership
                .as_ref()
                .is_some_and(|m| membership.as_ref() == Some(m))
        {
            continue;
        }
        chunk.push(Raw::from_json(s.rooms.format_event(&event, view(who))?));
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

async fn joined_members_of(
    s: Arc<Services>,
    req: Ruma<joined_members::v3::Request>,
) -> Result<joined_members::v3::Response> {
    let room = s.rooms.require_joined(&req.body.room_id, req.user_id())?;
    let mut joined = BTreeMap::new();
    for user in room.joined_members() {
        let mut member = joined_members::v3::RoomMember::new();
        if let Some(pdu) = s
            .rooms
            .state_pdu(room.short, "m.room.member", user.as_str())?
        {
            #[derive(Deserialize)]
            struct P {
                displayname: Option<String>,
                avatar_url: Option<String>,
            }
            if let Ok(p) = pdu.content_as::<P>()
                && membership_of(&pdu) == Some(MembershipState::Join)
            {
                member.display_name = p.displayname;
                member.avatar_url = p.avatar_url.map(Into::into);
            }
        }
        joined.insert(user, member);
    }
    Ok(joined_members::v3::Response::new(joined))
}

async fn state(
    s: Arc<Services>,
    req: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let who = req.identity();
    let mut events = Vec::new();
    for (_, _, pos) in s.rooms.visible_state(&req.body.room_id, &who.user_id)? {
        events.push(Raw::from_json(s.rooms.client_event(pos, view(who))?));
    }
    Ok(get_state_events::v3::Response::new(events))
}

/// One state event's content (or the whole event with `format=event`).
pub(super) fn state_event_json(
    s: &Services,
    who: &Identity,
    room_id: &ruma::RoomId,
    kind: &str,
    key: &str,
    full: bool,
) -> Result<Box<serde_json::value::RawValue>> {
    let pos = s
        .rooms
        .visible_state_pos(room_id, &who.user_id, kind, key)?
        .ok_or_else(|| Error::not_found("Event not found."))?;
    if full {
        return s.rooms.client_event(pos, view(who));
    }
    Ok(s.rooms.event(pos)?.pdu.content.clone())
}

async fn state_event(
    s: Arc<Services>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let full = req.body.format == get_state_event_for_key::v3::StateEventFormat::Event;
    let json = state_event_json(
        &s,
        req.identity(),
        &req.body.room_id,
        &req.body.event_type.to_string(),
        &req.body.state_key,
        full,
    )?;
    Ok(get_state_event_for_key::v3::Response::new(json))
}

async fn empty_key_state(
    State(s): State<Arc<Services>>,
    Path((room_id, event_type)): Path<(String, String)>,
    parts: http::request::Parts,
) -> Result<axum::Json<Box<serde_json::value::RawValue>>> {
    let who =
        crate::api::ruma::authenticate(&s, &parts, crate::api::ruma::AuthRequirement::Required)?
            .expect("required");
    let room_id = ruma::RoomId::parse(&room_id).map_err(|e| Error::invalid_param(e.to_string()))?;
    // `?format=event` asks for the whole event, as on the routes with a state key.
    let full = form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "format" && v == "event");
    Ok(axum::Json(state_event_json(
        &s,
        &who,
        &room_id,
        &event_type,
        "",
        full,
    )?))
}

async fn send_state(
    s: Arc<Services>,
    req: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response> {
    let b = &req.body;
    let content = b.body.json().to_owned();
    let mut template = EventTemplate::state(b.event_type.clone(), b.state_key.clone(), content);
    // `?ts=` is honoured for appservices only.
    template.timestamp = b.timestamp.filter(|_| req.identity().appservice.is_some());
    let event_id =
        super::message::send_state_template(&s, req.identity(), &b.room_id, template).await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

async fn room_aliases(
    s: Arc<Services>,
    req: Ruma<aliases::v3::Request>,
) -> Result<aliases::v3::Response> {
    s.rooms.require_joined(&req.body.room_id, req.user_id())?;
    let aliases = s
        .rooms
        .room_aliases(&req.body.room_id)?
        .into_iter()
        .filter_map(|a| RoomAliasId::parse(a).ok())
        .collect();
    Ok(aliases::v3::Response::new(aliases))
}
