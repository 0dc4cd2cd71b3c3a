//! Queries other servers make about this one's users: `GET /_matrix/federation/v1/query/profile`.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
};
use ruma::UserId;
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
