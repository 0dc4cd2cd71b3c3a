//! End-to-end encryption keys: upload, query, claim, changes, cross-signing and signatures.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedDeviceId, OwnedUserId, UInt,
    api::client::keys::{
        claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
    },
    serde::Raw,
};
use serde_json::{Value, json, value::to_raw_value};

use super::account::require_password;
use crate::users::uiaa::Operation;
use crate::{
    api::ruma::{Ruma, route},
    e2ee::SigningKeys,
    error::{Error, Result},
    services::Services,
    sync::SyncToken,
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, upload);
    let r = route(r, query);
    let r = route(r, claim);
    let r = route(r, changes);
    let r = route(r, upload_signing);
    route(r, signatures)
}

fn raw<T>(value: &Value) -> Raw<T> {
    Raw::from_json(to_raw_value(value).expect("JSON values serialize"))
}

/// A top-level object of the request body as a map (ruma has checked its key ids).
fn body_map(json: Option<&Value>, field: &str) -> BTreeMap<String, Value> {
    json.and_then(|j| j.get(field))
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

async fn upload(
    s: Arc<Services>,
    req: Ruma<upload_keys::v3::Request>,
) -> Result<upload_keys::v3::Response> {
    let who = req.identity();
    let json = req.json.as_ref();
    if let Some(keys) = json.and_then(|j| j.get("device_keys")) {
        s.e2ee.upload_device_keys(&s.rooms, who, keys).await?;
        s.announce_devices(&who.user_id, [&*who.device_id], false);
    }
    let one_time = body_map(json, "one_time_keys");
    let fallback = body_map(json, "fallback_keys");
    s.e2ee
        .upload_one_time_keys(who, &one_time, &fallback)
        .await?;
    let counts = s
        .e2ee
        .one_time_key_counts(&who.user_id, &who.device_id)?
        .into_iter()
        .map(|(alg, n)| (alg.as_str().into(), UInt::try_from(n).unwrap_or(UInt::MAX)))
        .collect();
    Ok(upload_keys::v3::Response::new(counts))
}

async fn query(
    s: Arc<Services>,
    req: Ruma<get_keys::v3::Request>,
) -> Result<get_keys::v3::Response> {
    let found = s
        .e2ee
        .query_keys(&s.users, req.user_id(), &req.body.device_keys)?;
    let mut res = get_keys::v3::Response::new();
    res.device_keys = found
        .device_keys
        .into_iter()
        .map(|(user, devices)| {
            let devices = devices.iter().map(|(d, k)| (d.clone(), raw(k))).collect();
            (user, devices)
        })
        .collect();
    let raws =
        |m: BTreeMap<OwnedUserId, Value>| m.iter().map(|(u, k)| (u.clone(), raw(k))).collect();
    res.master_keys = raws(found.master_keys);
    res.self_signing_keys = raws(found.self_signing_keys);
    res.user_signing_keys = raws(found.user_signing_keys);
    // Users of other servers: their servers answer (`federation::ask`).
    let remote = remote_parts(
        &s,
        req.body
            .device_keys
            .iter()
            .map(|(user, devices)| (user, json!(devices))),
    );
    if let (Some(federation), false) = (&s.federation, remote.is_empty()) {
        let path = "/_matrix/federation/v1/user/keys/query";
        let answers = federation.ask_servers(path, "device_keys", remote).await;
        for (user, devices) in answers.about_own_users("device_keys") {
            let devices = devices.as_object().into_iter().flatten();
            let devices = devices.map(|(d, k)| (OwnedDeviceId::from(d.as_str()), raw(k)));
            res.device_keys.insert(user, devices.collect());
        }
        for (user, key) in answers.about_own_users("master_keys") {
            res.master_keys.insert(user, raw(key));
        }
        for (user, key) in answers.about_own_users("self_signing_keys") {
            res.self_signing_keys.insert(user, raw(key));
        }
        res.failures = answers.failures;
    }
    Ok(res)
}

/// The wanted users of other servers, by server: each server's part of a key request.
fn remote_parts<'a>(
    s: &Services,
    wanted: impl Iterator<Item = (&'a OwnedUserId, Value)>,
) -> BTreeMap<ruma::OwnedServerName, serde_json::Map<String, Value>> {
    let mut parts: BTreeMap<ruma::OwnedServerName, serde_json::Map<String, Value>> =
        BTreeMap::new();
    for (user, part) in wanted {
        if user.server_name() != s.config.server_name {
            parts
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user.to_string(), part);
        }
    }
    parts
}

async fn claim(
    s: Arc<Services>,
    req: Ruma<claim_keys::v3::Request>,
) -> Result<claim_keys::v3::Response> {
    let wanted: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>> = req
        .body
        .one_time_keys
        .iter()
        .map(|(user, devices)| {
            let devices = devices
                .iter()
                .map(|(d, alg)| (d.clone(), alg.to_string()))
                .collect();
            (user.clone(), devices)
        })
        .collect();
    let mut claimed = s.e2ee.claim_keys(&wanted).await?;
    let remote = remote_parts(
        &s,
        wanted.iter().map(|(user, devices)| (user, json!(devices))),
    );
    let mut failures = BTreeMap::new();
    if let (Some(federation), false) = (&s.federation, remote.is_empty()) {
        let path = "/_matrix/federation/v1/user/keys/claim";
        let answers = federation.ask_servers(path, "one_time_keys", remote).await;
        for (user, devices) in answers.about_own_users("one_time_keys") {
            for (device, keys) in devices.as_object().into_iter().flatten() {
                let keys = keys.as_object().into_iter().flatten();
                claimed
                    .entry(user.clone())
                    .or_default()
                    .entry(OwnedDeviceId::from(device.as_str()))
                    .or_default()
                    .extend(keys.map(|(id, key)| (id.clone(), key.clone())));
            }
        }
        failures = answers.failures;
    }
    let mut out = BTreeMap::new();
    for (user, devices) in claimed {
        let mut per_device = BTreeMap::new();
        for (device, keys) in devices {
            let mut per_key = BTreeMap::new();
            for (id, key) in keys {
                let id = id
                    .as_str()
                    .try_into()
                    .map_err(|_| Error::internal("stored one-time key id is malformed"))?;
                per_key.insert(id, raw(&key));
            }
            per_device.insert(device, per_key);
        }
        out.insert(user, per_device);
    }
    let mut response = claim_keys::v3::Response::new(out);
    response.failures = failures;
    Ok(response)
}

async fn changes(
    s: Arc<Services>,
    req: Ruma<get_key_changes::v3::Request>,
) -> Result<get_key_changes::v3::Response> {
    let from = SyncToken::parse(&req.body.from)?.pos;
    let to = SyncToken::parse(&req.body.to)?.pos.min(s.stream.head());
    let changes = s
        .e2ee
        .device_list_changes(&s.rooms, req.user_id(), from, to)?;
    Ok(get_key_changes::v3::Response::new(
        changes.changed,
        changes.left,
    ))
}

async fn upload_signing(
    s: Arc<Services>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response> {
    let user = req.user_id().to_owned();
    let json = req.json.as_ref();
    let key = |field: &str| json.and_then(|j| j.get(field)).cloned();
    let keys = SigningKeys {
        master: key("master_key"),
        self_signing: key("self_signing_key"),
        user_signing: key("user_signing_key"),
    };
    if s.e2ee.signing_upload_needs_auth(&user, &keys)? {
        require_password(&s, &user, Operation::UploadSigningKeys, json).await?;
    }
    let announced = json.cloned().unwrap_or_default();
    s.e2ee.upload_signing_keys(&s.rooms, &user, keys).await?;
    if let Some(federation) = &s.federation
        && let Err(e) = federation.signing_keys_changed((&s.rooms, &s.store), &user, &announced)
    {
        tracing::warn!(%user, error = %e, "signing key update not sent");
    }
    Ok(upload_signing_keys::v3::Response::new())
}

async fn signatures(
    s: Arc<Services>,
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<upload_signatures::v3::Response> {
    let mut signed: BTreeMap<OwnedUserId, BTreeMap<String, Value>> = BTreeMap::new();
    if let Some(body) = req.json.as_ref().and_then(Value::as_object) {
        for (user, objects) in body {
            let user = OwnedUserId::try_from(user.as_str())
                .map_err(|_| Error::invalid_param(format!("Invalid user id {user:?}")))?;
            let objects = objects
                .as_object()
                .ok_or_else(|| Error::bad_json("Signed keys must be objects"))?;
            signed.insert(
                user,
                objects
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            );
        }
    }
    let failures = s
        .e2ee
        .upload_signatures(&s.rooms, req.user_id(), &signed)
        .await?;
    let mut res = upload_signatures::v3::Response::new();
    for (user, per_key) in failures {
        let mut out = BTreeMap::new();
        for (key_id, f) in per_key {
            let failure = serde_json::from_value(json!({ "errcode": f.errcode, "error": f.error }))
                .map_err(|e| Error::internal(e.to_string()))?;
            out.insert(key_id, failure);
        }
        res.failures.insert(user, out);
    }
    Ok(res)
}
