//! Device identity keys: `/keys/upload`'s `device_keys` and the device half of `/keys/query`.

use std::collections::BTreeMap;

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Value, json};

use super::{E2eeService, device_lists, parse_stored, to_bytes};
use crate::{
    error::{Error, Result},
    rooms::RoomService,
    storage::{Batch, Key, Table, keys},
    users::{Identity, UserService},
};

/// The answer to `/keys/query`, as JSON objects ready to be sent.
#[derive(Debug, Default)]
pub(crate) struct KeysQuery {
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Value>>,
    pub master_keys: BTreeMap<OwnedUserId, Value>,
    pub self_signing_keys: BTreeMap<OwnedUserId, Value>,
    pub user_signing_keys: BTreeMap<OwnedUserId, Value>,
}

fn device_key(user: &UserId, device: &DeviceId) -> Vec<u8> {
    Key::new()
        .str(user.as_str())
        .str(device.as_str())
        .into_vec()
}

/// Checks that uploaded device keys are well formed and belong to the uploading device.
fn validate(who: &Identity, keys: &Value) -> Result<()> {
    let bad = |m: &str| Err(Error::invalid_param(format!("Invalid device_keys: {m}")));
    let Some(obj) = keys.as_object() else {
        return bad("not an object");
    };
    if obj.get("user_id").and_then(Value::as_str) != Some(who.user_id.as_str()) {
        return bad("user_id does not match the authenticated user");
    }
    if obj.get("device_id").and_then(Value::as_str) != Some(who.device_id.as_str()) {
        return bad("device_id does not match the authenticated device");
    }
    match obj.get("algorithms").and_then(Value::as_array) {
        Some(a) if a.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())) => {}
        _ => return bad("algorithms must be a list of strings"),
    }
    let Some(key_map) = obj.get("keys").and_then(Value::as_object) else {
        return bad("keys must be an object");
    };
    for (id, value) in key_map {
        let well_formed = id
            .split_once(':')
            .is_some_and(|(alg, name)| !alg.is_empty() && name == who.device_id.as_str());
        if !well_formed || value.as_str().is_none_or(str::is_empty) {
            return bad(&format!("key {id:?} must be <algorithm>:{}", who.device_id));
        }
    }
    if !key_map.contains_key(&format!("ed25519:{}", who.device_id)) {
        return bad("an ed25519 key for the device is required");
    }
    if !obj.get("signatures").is_some_and(Value::is_object) {
        return bad("signatures must be an object");
    }
    Ok(())
}

impl E2eeService {
    /// Stores the requesting device's identity keys. A change is a device-list change.
    pub(crate) async fn upload_device_keys(
        &self,
        rooms: &RoomService,
        who: &Identity,
        keys: &Value,
    ) -> Result<()> {
        validate(who, keys)?;
        let mut keys = keys.clone();
        if let Some(o) = keys.as_object_mut() {
            // `unsigned` is the server's to fill.
            o.remove("unsigned");
        }
        let k = device_key(&who.user_id, &who.device_id);
        if self.get_json(Table::DeviceKeys, &k)?.as_ref() == Some(&keys) {
            return Ok(());
        }
        let bytes = to_bytes(&keys);
        self.stream
            .commit(|pos| {
                let mut batch = Batch::new();
                batch.put(Table::DeviceKeys, k, bytes);
                device_lists::record(&mut batch, pos, &who.user_id);
                batch
            })
            .await?;
        self.wake_peers(rooms, &who.user_id)
    }

    /// The stored identity keys of one device.
    pub(super) fn device_keys(&self, user: &UserId, device: &DeviceId) -> Result<Option<Value>> {
        self.get_json(Table::DeviceKeys, &device_key(user, device))
    }

    /// `/keys/query`: the device keys of the wanted users (all devices for an empty list), with
    /// the devices' display names; their master and self-signing keys; the requester's own
    /// user-signing key. Signatures are merged in: the owner's, and the requester's.
    pub(crate) fn query_keys(
        &self,
        users: &UserService,
        requester: &UserId,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<KeysQuery> {
        let mut out = KeysQuery::default();
        for (user, devices) in wanted {
            if user.server_name() != users.server_name {
                continue;
            }
            let names: BTreeMap<OwnedDeviceId, Option<String>> = users
                .devices(user)?
                .into_iter()
                .map(|d| (d.device_id, d.display_name))
                .collect();
            let mut found = BTreeMap::new();
            let prefix = Key::new().str(user.as_str()).into_vec();
            for entry in self.store.scan_prefix(Table::DeviceKeys, &prefix) {
                let (k, v) = entry?;
                let device: OwnedDeviceId = keys::str_parts(&k[prefix.len()..])
                    .next()
                    .unwrap_or_default()
                    .into();
                if !devices.is_empty() && !devices.contains(&device) {
                    continue;
                }
                let Some(name) = names.get(&device) else {
                    continue;
                };
                let mut keys = parse_stored(Table::DeviceKeys, &v)?;
                self.merge_signatures(&mut keys, user, device.as_str(), &[user])?;
                if let Some(name) = name {
                    keys["unsigned"] = json!({ "device_display_name": name });
                }
                found.insert(device, keys);
            }
            out.device_keys.insert(user.clone(), found);
            self.add_cross_signing_keys(&mut out, requester, user)?;
        }
        Ok(out)
    }
}
