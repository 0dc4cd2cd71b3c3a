//! Server-side key backup: `/room_keys/version` and `/room_keys/keys` with their variants.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedRoomId, UInt,
    api::client::backup::{
        RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
        delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
        get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
        update_backup_version,
    },
    serde::Raw,
};
use serde_json::{Value, value::to_raw_value};

use crate::{
    api::ruma::{Ruma, route},
    e2ee::{BackupInfo, BackupKeys, BackupKeysChange},
    error::{Error, Result},
    services::Services,
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, create_version);
    let r = route(r, latest_version);
    let r = route(r, get_version);
    let r = route(r, update_version);
    let r = route(r, delete_version);
    let r = route(r, put_keys);
    let r = route(r, put_room_keys);
    let r = route(r, put_session_key);
    let r = route(r, get_keys);
    let r = route(r, get_room_keys);
    let r = route(r, get_session_key);
    let r = route(r, delete_keys);
    let r = route(r, delete_room_keys);
    route(r, delete_session_key)
}

fn raw<T>(value: &Value) -> Raw<T> {
    Raw::from_json(to_raw_value(value).expect("JSON values serialize"))
}

fn value<T>(raw: &Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

fn count(n: u64) -> UInt {
    UInt::try_from(n).unwrap_or(UInt::MAX)
}

/// `{"algorithm", "auth_data"}` from the request body (ruma keeps it as one raw value).
fn algorithm_of(json: Option<&Value>) -> Value {
    let get = |f: &str| json.and_then(|j| j.get(f)).cloned().unwrap_or(Value::Null);
    serde_json::json!({ "algorithm": get("algorithm"), "auth_data": get("auth_data") })
}

async fn create_version(
    s: Arc<Services>,
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<create_backup_version::v3::Response> {
    let algorithm = algorithm_of(req.json.as_ref());
    let version = s.e2ee.create_backup(req.user_id(), &algorithm).await?;
    Ok(create_backup_version::v3::Response::new(version))
}

async fn latest_version(
    s: Arc<Services>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<get_latest_backup_info::v3::Response> {
    let info: BackupInfo = s.e2ee.backup_info(req.user_id(), None)?;
    Ok(get_latest_backup_info::v3::Response::new(
        raw(&info.algorithm),
        count(info.count),
        info.etag,
        info.version,
    ))
}

async fn get_version(
    s: Arc<Services>,
    req: Ruma<get_backup_info::v3::Request>,
) -> Result<get_backup_info::v3::Response> {
    let info = s.e2ee.backup_info(req.user_id(), Some(&req.body.version))?;
    Ok(get_backup_info::v3::Response::new(
        raw(&info.algorithm),
        count(info.count),
        info.etag,
        info.version,
    ))
}

async fn update_version(
    s: Arc<Services>,
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<update_backup_version::v3::Response> {
    let json = req.json.as_ref();
    if let Some(v) = json.and_then(|j| j.get("version"))
        && v.as_str() != Some(req.body.version.as_str())
    {
        return Err(Error::invalid_param(
            "The version in the body does not match the path",
        ));
    }
    s.e2ee
        .update_backup(req.user_id(), &req.body.version, &algorithm_of(json))
        .await?;
    Ok(update_backup_version::v3::Response::new())
}

async fn delete_version(
    s: Arc<Services>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<delete_backup_version::v3::Response> {
    s.e2ee
        .delete_backup(req.user_id(), &req.body.version)
        .await?;
    Ok(delete_backup_version::v3::Response::new())
}

fn rooms_to_keys(rooms: &BTreeMap<OwnedRoomId, RoomKeyBackup>) -> Result<BackupKeys> {
    let mut out = BackupKeys::new();
    for (room, backup) in rooms {
        let sessions = out.entry(room.clone()).or_default();
        for (session, data) in &backup.sessions {
            sessions.insert(session.clone(), value(data)?);
        }
    }
    Ok(out)
}

fn keys_to_rooms(keys: BackupKeys) -> BTreeMap<OwnedRoomId, RoomKeyBackup> {
    keys.into_iter()
        .map(|(room, sessions)| {
            let sessions = sessions.iter().map(|(s, d)| (s.clone(), raw(d))).collect();
            (room, RoomKeyBackup::new(sessions))
        })
        .collect()
}

async fn put_keys(
    s: Arc<Services>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> Result<add_backup_keys::v3::Response> {
    let keys = rooms_to_keys(&req.body.rooms)?;
    let c = s
        .e2ee
        .put_backup_keys(req.user_id(), &req.body.version, &keys)
        .await?;
    Ok(add_backup_keys::v3::Response::new(c.etag, count(c.count)))
}

async fn put_room_keys(
    s: Arc<Services>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let mut sessions = BTreeMap::new();
    for (session, data) in &req.body.sessions {
        sessions.insert(session.clone(), value(data)?);
    }
    let keys = BackupKeys::from([(req.body.room_id.clone(), sessions)]);
    let c = s
        .e2ee
        .put_backup_keys(req.user_id(), &req.body.version, &keys)
        .await?;
    Ok(add_backup_keys_for_room::v3::Response::new(
        c.etag,
        count(c.count),
    ))
}

async fn put_session_key(
    s: Arc<Services>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let sessions = BTreeMap::from([(b.session_id.clone(), value(&b.session_data)?)]);
    let keys = BackupKeys::from([(b.room_id.clone(), sessions)]);
    let c = s
        .e2ee
        .put_backup_keys(req.user_id(), &b.version, &keys)
        .await?;
    Ok(add_backup_keys_for_session::v3::Response::new(
        c.etag,
        count(c.count),
    ))
}

async fn get_keys(
    s: Arc<Services>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> Result<get_backup_keys::v3::Response> {
    let keys = s
        .e2ee
        .backup_keys(req.user_id(), &req.body.version, None, None)?;
    Ok(get_backup_keys::v3::Response::new(keys_to_rooms(keys)))
}

async fn get_room_keys(
    s: Arc<Services>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let mut keys = s
        .e2ee
        .backup_keys(req.user_id(), &b.version, Some(&b.room_id), None)?;
    let sessions = keys
        .remove(&b.room_id)
        .unwrap_or_default()
        .iter()
        .map(|(s, d)| (s.clone(), raw(d)))
        .collect();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

async fn get_session_key(
    s: Arc<Services>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let keys = s.e2ee.backup_keys(
        req.user_id(),
        &b.version,
        Some(&b.room_id),
        Some(&b.session_id),
    )?;
    let data = keys
        .get(&b.room_id)
        .and_then(|s| s.get(&b.session_id))
        .ok_or_else(|| Error::not_found("No room key found for this session"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(raw(data)))
}

fn deleted(c: BackupKeysChange) -> (String, UInt) {
    (c.etag, count(c.count))
}

async fn delete_keys(
    s: Arc<Services>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> Result<delete_backup_keys::v3::Response> {
    let c = s
        .e2ee
        .delete_backup_keys(req.user_id(), &req.body.version, None, None)
        .await?;
    let (etag, n) = deleted(c);
    Ok(delete_backup_keys::v3::Response::new(etag, n))
}

async fn delete_room_keys(
    s: Arc<Services>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let b = &req.body;
    let c = s
        .e2ee
        .delete_backup_keys(req.user_id(), &b.version, Some(&b.room_id), None)
        .await?;
    let (etag, n) = deleted(c);
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, n))
}

async fn delete_session_key(
    s: Arc<Services>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let b = &req.body;
    let c = s
        .e2ee
        .delete_backup_keys(
            req.user_id(),
            &b.version,
            Some(&b.room_id),
            Some(&b.session_id),
        )
        .await?;
    let (etag, n) = deleted(c);
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, n))
}
