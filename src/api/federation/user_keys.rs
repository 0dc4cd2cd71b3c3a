//! End-to-end encryption keys of this server's users, for other servers (spec v1.16,
//! "End-to-End Encryption" in the Server-Server API): `POST /user/keys/query`,
//! `POST /user/keys/claim`, `GET /user/devices/{userId}`.
//!
//! Only this server's users are answered; a request naming more than [`MAX_USERS`] users (or
//! devices) is refused. A user's user-signing key is never sent to another server: it is only
//! for its owner.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, State},
};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::peer::Peer;
use crate::{error::Error, services::Services};

/// Most users, and most devices, one request may name.
const MAX_USERS: usize = 1000;

/// The body's top-level object `field`, as a map of this server's users to their part.
fn local_users<'a>(
    s: &Services,
    body: &'a Value,
    field: &str,
) -> Result<Vec<(OwnedUserId, &'a Value)>, Error> {
    let wanted = body
        .get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| Error::bad_json(format!("Missing {field}")))?;
    if wanted.len() > MAX_USERS {
        return Err(Error::invalid_param(format!(
            "At most {MAX_USERS} users at a time"
        )));
    }
    Ok(wanted
        .iter()
        .filter_map(|(user, part)| Some((UserId::parse(user).ok()?, part)))
        .filter(|(user, _)| user.server_name() == s.config.server_name)
        .collect())
}

/// `POST /_matrix/federation/v1/user/keys/query`.
pub(super) async fn query(
    State(s): State<Arc<Services>>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    let body = peer.json()?;
    let mut answer = json!({ "device_keys": {}, "master_keys": {}, "self_signing_keys": {} });
    for (user, devices) in local_users(&s, &body, "device_keys")? {
        let devices: Vec<OwnedDeviceId> = devices
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(Value::as_str)
                    .map(OwnedDeviceId::from)
                    .collect()
            })
            .unwrap_or_default();
        if devices.len() > MAX_USERS {
            return Err(Error::invalid_param(format!(
                "At most {MAX_USERS} devices at a time"
            )));
        }
        // One user at a time, as their own requester: no other user's signatures are merged in.
        let found =
            s.e2ee
                .query_keys(&s.users, &user, &BTreeMap::from([(user.clone(), devices)]))?;
        let key = user.to_string();
        if let Some(devices) = found.device_keys.get(&user) {
            answer["device_keys"][&key] = json!(devices);
        }
        if let Some(master) = found.master_keys.get(&user) {
            answer["master_keys"][&key] = master.clone();
        }
        if let Some(self_signing) = found.self_signing_keys.get(&user) {
            answer["self_signing_keys"][&key] = self_signing.clone();
        }
    }
    Ok(Json(answer))
}

/// `POST /_matrix/federation/v1/user/keys/claim`.
pub(super) async fn claim(
    State(s): State<Arc<Services>>,
    peer: Peer,
) -> Result<Json<Value>, Error> {
    let body = peer.json()?;
    let mut wanted: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>> = BTreeMap::new();
    let mut count = 0;
    for (user, devices) in local_users(&s, &body, "one_time_keys")? {
        let devices: BTreeMap<OwnedDeviceId, String> = devices
            .as_object()
            .map(|d| {
                d.iter()
                    .filter_map(|(d, alg)| {
                        Some((OwnedDeviceId::from(d.as_str()), alg.as_str()?.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        count += devices.len();
        if count > MAX_USERS {
            return Err(Error::invalid_param(format!(
                "At most {MAX_USERS} devices at a time"
            )));
        }
        wanted.insert(user, devices);
    }
    let claimed = s.e2ee.claim_keys(&wanted).await?;
    let mut keys = Map::new();
    for (user, devices) in claimed {
        let devices: Map<String, Value> = devices
            .into_iter()
            .map(|(device, keys)| (device.to_string(), json!(keys)))
            .collect();
        keys.insert(user.to_string(), Value::Object(devices));
    }
    Ok(Json(json!({ "one_time_keys": keys })))
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`: every device of a local user with its
/// keys and display name, and the user's master and self-signing keys.
pub(super) async fn devices(
    State(s): State<Arc<Services>>,
    Path(user): Path<String>,
    _peer: Peer,
) -> Result<Json<Value>, Error> {
    let user = UserId::parse(&user).map_err(|_| Error::invalid_param("Invalid user id"))?;
    if user.server_name() != s.config.server_name {
        return Err(Error::invalid_param(
            "User is not hosted on this homeserver",
        ));
    }
    let found = s.e2ee.query_keys(
        &s.users,
        &user,
        &BTreeMap::from([(user.clone(), Vec::new())]),
    )?;
    let keys = found.device_keys.get(&user);
    let devices: Vec<Value> = s
        .users
        .devices(&user)?
        .into_iter()
        .filter_map(|d| {
            let keys = keys?.get(&d.device_id)?;
            let mut device = json!({ "device_id": d.device_id, "keys": keys });
            if let Some(name) = d.display_name {
                device["device_display_name"] = name.into();
            }
            Some(device)
        })
        .collect();
    let mut answer = json!({
        "user_id": user,
        "stream_id": s.stream.head(),
        "devices": devices,
    });
    if let Some(master) = found.master_keys.get(&user) {
        answer["master_key"] = master.clone();
    }
    if let Some(self_signing) = found.self_signing_keys.get(&user) {
        answer["self_signing_key"] = self_signing.clone();
    }
    Ok(Json(answer))
}
