//! Queries other servers make about this one's users and aliases:
//! `GET /_matrix/federation/v1/query/profile` and `…/query/directory`.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
};
use ruma::{RoomAliasId, UserId};
use serde_json::{Map, Value};

use super::peer::Peer;
use crate::{error::Error, services::Services};

/// `?user_id=…[&field=displayname|avatar_url]`: a local user's profile, as Synapse answers it
/// (the one field asked for, or both).
pub(super) async fn profile(
    State(s): State<Arc<Services>>,
    Query(q): Query<HashMap<String, String>>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    tracing::debug!(origin = %peer.origin, "profile query");
    let user = q
        .get("user_id")
        .ok_or_else(|| Error::missing_param("Missing user_id"))?;
    let user = UserId::parse(user).map_err(|_| Error::invalid_param("Invalid user_id"))?;
    if user.server_name() != s.config.server_name {
        return Err(Error::invalid_param(
            "User is not hosted on this homeserver",
        ));
    }
    let field = q.get("field").map(String::as_str);
    if field.is_some_and(|f| !matches!(f, "displayname" | "avatar_url")) {
        return Err(Error::invalid_param("Invalid field"));
    }
    let record = s
        .users
        .get(&user)?
        .filter(|r| !r.deactivated)
        .ok_or_else(|| Error::not_found("Profile was not found"))?;
    let mut answer = Map::new();
    for (name, value) in [
        ("displayname", record.displayname),
        ("avatar_url", record.avatar_url),
    ] {
        if let Some(value) = value
            && field.is_none_or(|f| f == name)
        {
            answer.insert(name.to_owned(), value.into());
        }
    }
    Ok(Json(Value::Object(answer)))
}

/// `?room_alias=…`: the room a local alias names, and this server as one to join it through.
pub(super) async fn directory(
    State(s): State<Arc<Services>>,
    Query(q): Query<HashMap<String, String>>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    tracing::debug!(origin = %peer.origin, "directory query");
    let alias = q
        .get("room_alias")
        .ok_or_else(|| Error::missing_param("Missing room_alias"))?;
    let alias =
        RoomAliasId::parse(alias).map_err(|_| Error::invalid_param("Invalid room_alias"))?;
    if alias.server_name() != s.config.server_name {
        return Err(Error::invalid_param(
            "Room alias is not hosted on this homeserver",
        ));
    }
    let room_id = s
        .resolve_alias(&alias)
        .await?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    Ok(Json(
        serde_json::json!({ "room_id": room_id, "servers": [s.config.server_name] }),
    ))
}

/// `GET /publicRooms?limit=&since=` and `POST /publicRooms` (with `filter.generic_search_term`):
/// this server's public room directory, as its clients see it.
pub(super) async fn public_rooms(
    State(s): State<Arc<Services>>,
    Query(q): Query<HashMap<String, String>>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    if !s.config.federation.public_rooms {
        return Err(Error::forbidden(
            "This server does not share its room directory with other servers",
        ));
    }
    let body = match peer.json() {
        Ok(body) => body,
        Err(_) => Value::Null,
    };
    let text = |name: &str| {
        body.get(name)
            .and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .or_else(|| q.get(name).cloned())
    };
    let limit = text("limit")
        .map(|l| {
            l.parse::<u64>()
                .map_err(|_| Error::invalid_param("Invalid limit"))
        })
        .transpose()?
        .map(|l| ruma::UInt::try_from(l.min(500)).unwrap_or_default());
    let since = text("since");
    let search = body["filter"]["generic_search_term"].as_str();
    let page = crate::api::client::directory::page(&s, search, limit, since.as_deref())?;
    Ok(Json(serde_json::json!({
        "chunk": page.chunk,
        "next_batch": page.next,
        "prev_batch": page.prev,
        "total_room_count_estimate": page.total,
    })))
}
