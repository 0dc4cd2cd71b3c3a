//! Rooms in the admin API: Charla's `/_charla/admin/v1/rooms…` (what `charla admin room`
//! calls) and Synapse's `/_synapse/admin/v1/rooms…` and `v2` deletion in Synapse's shapes
//! (compared field by field with Synapse 1.163).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use ruma::{RoomId, events::room::member::MembershipState};
use serde_json::{Value, json};

use super::{Administrator, Body, PREFIX, room_param};
use crate::{
    error::{Error, Result},
    rooms::RoomDetails,
    services::Services,
};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route(&format!("{PREFIX}/rooms"), get(list))
        .route(
            &format!("{PREFIX}/rooms/{{room_id}}"),
            get(show).delete(delete),
        )
        .route(&format!("{PREFIX}/rooms/{{room_id}}/members"), get(members))
        .route("/_synapse/admin/v1/rooms", get(synapse_list))
        .route(
            "/_synapse/admin/v1/rooms/{room_id}",
            get(synapse_show).delete(synapse_delete_now),
        )
        .route(
            "/_synapse/admin/v1/rooms/{room_id}/members",
            get(synapse_members),
        )
        .route(
            "/_synapse/admin/v2/rooms/{room_id}",
            axum::routing::delete(synapse_delete),
        )
        .route(
            "/_synapse/admin/v2/rooms/{room_id}/delete_status",
            get(synapse_room_delete_status),
        )
        .route(
            "/_synapse/admin/v2/rooms/delete_status/{delete_id}",
            get(synapse_delete_status),
        )
}

/// The largest page a list answers.
const MAX_LIMIT: usize = 1_000;
/// Audit entries a room's deletion status is looked for among (newest first).
const STATUS_SCAN: usize = 10_000;

/// One page of rooms in Synapse's order and shape: `offset`, `total_rooms`, and `next_batch`
/// (an integer) only when more rooms match.
fn page(s: &Services, q: &HashMap<String, String>) -> Result<(Vec<RoomDetails>, Value)> {
    let number = |name: &str, default: usize| -> Result<usize> {
        q.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| Error::invalid_param(format!("{name} must be a non-negative integer")))
        })
    };
    let from = number("from", 0)?;
    let limit = number("limit", 100)?.min(MAX_LIMIT);
    let search = q.get("search_term").map(|t| t.to_lowercase());
    let mut rooms = Vec::new();
    for room_id in s.rooms.list_rooms()? {
        let details = match s.rooms.details(&room_id) {
            Ok(details) => details,
            // Deleted between the list and now.
            Err(e) if e.errcode() == "M_NOT_FOUND" => continue,
            Err(e) => return Err(e),
        };
        if let Some(term) = &search {
            let hay = [
                Some(details.room_id.as_str()),
                details.name.as_deref(),
                details.canonical_alias.as_deref(),
            ];
            if !hay
                .iter()
                .flatten()
                .any(|h| h.to_lowercase().contains(term.as_str()))
            {
                continue;
            }
        }
        rooms.push(details);
    }
    sort(&mut rooms, q.get("order_by").map_or("name", String::as_str))?;
    if q.get("dir").is_some_and(|d| d == "b") {
        rooms.reverse();
    }
    let total = rooms.len();
    let mut meta = json!({ "offset": from, "total_rooms": total });
    if from + limit < total {
        meta["next_batch"] = json!(from + limit);
    }
    if from > 0 {
        meta["prev_batch"] = json!(from.saturating_sub(limit));
    }
    let rooms = rooms.into_iter().skip(from).take(limit).collect();
    Ok((rooms, meta))
}

/// Synapse's `order_by` values; rooms without the field sort last, ties by room id.
fn sort(rooms: &mut [RoomDetails], order_by: &str) -> Result<()> {
    fn text(v: &Option<String>) -> (bool, String) {
        (v.is_none(), v.clone().unwrap_or_default())
    }
    match order_by {
        "name" => rooms.sort_by_key(|r| (text(&r.name), r.room_id.clone())),
        "canonical_alias" => rooms.sort_by_key(|r| (text(&r.canonical_alias), r.room_id.clone())),
        "joined_members" => {
            rooms.sort_by_key(|r| (std::cmp::Reverse(r.joined_members), r.room_id.clone()))
        }
        "joined_local_members" => {
            rooms.sort_by_key(|r| (std::cmp::Reverse(r.joined_local_members), r.room_id.clone()))
        }
        "state_events" => {
            rooms.sort_by_key(|r| (std::cmp::Reverse(r.state_events), r.room_id.clone()))
        }
        "version" => rooms.sort_by_key(|r| (r.version.clone(), r.room_id.clone())),
        "creator" => {
            rooms.sort_by_key(|r| (r.creator.as_ref().map(|c| c.to_string()), r.room_id.clone()))
        }
        "encryption" => rooms.sort_by_key(|r| (text(&r.encryption), r.room_id.clone())),
        "federatable" => rooms.sort_by_key(|r| (!r.federatable, r.room_id.clone())),
        "public" => rooms.sort_by_key(|r| (!r.public, r.room_id.clone())),
        "join_rules" => rooms.sort_by_key(|r| (text(&r.join_rules), r.room_id.clone())),
        "guest_access" => rooms.sort_by_key(|r| (text(&r.guest_access), r.room_id.clone())),
        "history_visibility" => {
            rooms.sort_by_key(|r| (text(&r.history_visibility), r.room_id.clone()))
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown value for order_by: {other}"
            )));
        }
    }
    Ok(())
}

/// A room as Synapse's list shows it: its details without topic and avatar.
fn listed(details: &RoomDetails) -> Result<Value> {
    let mut value = serde_json::to_value(details).map_err(|e| Error::internal(e.to_string()))?;
    if let Some(object) = value.as_object_mut() {
        object.remove("topic");
        object.remove("avatar");
    }
    Ok(value)
}

// Charla's API.

/// A room as `charla admin` shows it: Synapse's details and, for a support conversation, its
/// channel, status and assignee.
fn charla_room(s: &Services, details: &RoomDetails) -> Result<Value> {
    let mut value = serde_json::to_value(details).map_err(|e| Error::internal(e.to_string()))?;
    let conversation = s.support.index.get(&details.room_id)?.map(|record| {
        json!({
            "channel": record.content.channel,
            "status": record.content.status,
            "assignee": record.content.assignee,
        })
    });
    value["conversation"] = json!(conversation);
    Ok(value)
}

async fn list(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let (rooms, mut meta) = page(&s, &q)?;
    let rooms = rooms
        .iter()
        .map(|r| charla_room(&s, r))
        .collect::<Result<Vec<_>>>()?;
    meta["rooms"] = json!(rooms);
    meta["total"] = meta["total_rooms"].clone();
    Ok(Json(meta))
}

async fn show(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room = room_param(&room)?;
    Ok(Json(charla_room(&s, &s.rooms.details(&room)?)?))
}

async fn members(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room = room_param(&room)?;
    let members: Vec<Value> = s
        .rooms
        .memberships(&room)?
        .into_iter()
        .map(|(user, membership)| {
            let displayname = s
                .users
                .get(&user)
                .ok()
                .flatten()
                .and_then(|r| r.displayname);
            json!({ "user_id": user, "membership": membership, "displayname": displayname })
        })
        .collect();
    Ok(Json(json!({ "total": members.len(), "members": members })))
}

async fn delete(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(room): Path<String>,
    Body(_body): Body<Value>,
) -> Result<Json<Value>> {
    let room = room_param(&room)?;
    let (deleted, _) = s
        .admin()
        .delete_room(&admin.actor(&s.support.bot), &room)
        .await?;
    Ok(Json(json!(deleted)))
}

// Synapse's shapes.

async fn synapse_list(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let (rooms, mut meta) = page(&s, &q)?;
    meta["rooms"] = json!(rooms.iter().map(listed).collect::<Result<Vec<_>>>()?);
    Ok(Json(meta))
}

async fn synapse_show(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room = room_param(&room)?;
    let details = s.rooms.details(&room)?;
    let mut value = serde_json::to_value(&details).map_err(|e| Error::internal(e.to_string()))?;
    let mut devices = 0;
    for user in s.rooms.live_room(&room)?.joined_members() {
        if user.server_name() == s.config.server_name {
            devices += s.users.devices(&user)?.len();
        }
    }
    value["joined_local_devices"] = json!(devices);
    value["forgotten"] = json!(false);
    value["tombstoned"] = json!(false);
    value["replacement_room"] = Value::Null;
    Ok(Json(value))
}

async fn synapse_members(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room = room_param(&room)?;
    let joined: Vec<_> = s
        .rooms
        .memberships(&room)?
        .into_iter()
        .filter(|(_, m)| *m == MembershipState::Join)
        .map(|(user, _)| user)
        .collect();
    Ok(Json(json!({ "members": joined, "total": joined.len() })))
}

/// Synapse's v2 deletion runs in the background and answers a `delete_id` to poll; here it is
/// done before the answer, and the id is that of the audit entry recording it.
async fn synapse_delete(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(room): Path<String>,
    Body(_body): Body<Value>,
) -> Result<Json<Value>> {
    let room = room_param(&room)?;
    let (_, entry) = s
        .admin()
        .delete_room(&admin.actor(&s.support.bot), &room)
        .await?;
    Ok(Json(json!({ "delete_id": entry.map(|id| id.to_string()) })))
}

/// Synapse's older v1 deletion, which answers what it did.
async fn synapse_delete_now(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(room): Path<String>,
    Body(_body): Body<Value>,
) -> Result<Json<Value>> {
    let room = room_param(&room)?;
    let (deleted, _) = s
        .admin()
        .delete_room(&admin.actor(&s.support.bot), &room)
        .await?;
    let mut value = json!(deleted);
    value["new_room_id"] = Value::Null;
    Ok(Json(value))
}

/// A finished deletion as Synapse's status endpoints show it.
fn status_of(delete_id: u64, room_id: &str, details: &Value) -> Value {
    json!({
        "delete_id": delete_id.to_string(),
        "room_id": room_id,
        "status": "complete",
        "shutdown_room": {
            "kicked_users": details["kicked_users"],
            "failed_to_kick_users": details["failed_to_kick_users"],
            "local_aliases": details["local_aliases"],
            "new_room_id": null,
        },
    })
}

async fn synapse_delete_status(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(delete_id): Path<String>,
) -> Result<Json<Value>> {
    let not_found = || Error::not_found(format!("delete id '{delete_id}' not found"));
    let id: u64 = delete_id.parse().map_err(|_| not_found())?;
    let entry = s
        .support
        .audit
        .get(id)?
        .filter(|e| e.action == "room.delete")
        .ok_or_else(not_found)?;
    let mut status = status_of(id, &entry.target, &entry.details);
    if let Some(object) = status.as_object_mut() {
        object.remove("delete_id");
        object.remove("room_id");
    }
    Ok(Json(status))
}

async fn synapse_room_delete_status(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room: &str = &room;
    RoomId::parse(room).map_err(|_| Error::invalid_param(format!("{room:?} is not a room id")))?;
    let (entries, _) = s.support.audit.list(STATUS_SCAN, None)?;
    let results: Vec<Value> = entries
        .iter()
        .filter(|e| e.action == "room.delete" && e.target == room)
        .map(|e| status_of(e.id, &e.target, &e.details))
        .collect();
    if results.is_empty() {
        return Err(Error::not_found(format!(
            "No delete task for room_id '{room}' found"
        )));
    }
    Ok(Json(json!({ "results": results })))
}
