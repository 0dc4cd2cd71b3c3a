//! One-time and fallback keys: upload, counts, and `/keys/claim`.
//!
//! A claim takes one key per requested device and deletes it in the same batch, under the
//! service's claim lock, so two claims can never hand out the same one-time key. When a device
//! has no one-time key left for the algorithm, its fallback key is returned (and stays, marked
//! used, until the device uploads a new one).

use std::collections::{BTreeMap, HashMap};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Value, json};

use super::{E2eeService, parse_stored, to_bytes};
use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Table, keys},
    users::Identity,
};

/// What a claim hands out: user → device → key id → key.
pub(crate) type ClaimedKeys =
    BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, Value>>>;

/// The key each device's last claim took, by (user, device, algorithm) prefix: the next claim
/// looks after it first. Claimed keys stay in the store's overlay as deletions until the
/// applier gives them to sled, and a scan from the start of the device's keys stepped sled
/// over every one of them (each step a tree descent): most of a claim's time. A hint only;
/// keys uploaded later under smaller ids are found by the scan from the start that follows
/// when nothing is left after the cursor.
#[derive(Default)]
pub(crate) struct ClaimCursors(HashMap<Vec<u8>, Vec<u8>>);

/// Cursors kept at most; past it they start over (each costs ~100 bytes).
const MAX_CURSORS: usize = 100_000;

fn otk_key(user: &UserId, device: &DeviceId, algorithm: &str, id: &str) -> Vec<u8> {
    Key::new()
        .str(user.as_str())
        .str(device.as_str())
        .str(algorithm)
        .str(id)
        .into_vec()
}

fn fallback_key(user: &UserId, device: &DeviceId, algorithm: &str) -> Vec<u8> {
    Key::new()
        .str(user.as_str())
        .str(device.as_str())
        .str(algorithm)
        .into_vec()
}

/// Splits `<algorithm>:<name>` and checks the key is a string or a signed object.
fn parse_key<'a>(id: &'a str, key: &Value) -> Result<(&'a str, &'a str)> {
    let parts = id
        .split_once(':')
        .filter(|(alg, name)| !alg.is_empty() && !name.is_empty());
    let Some(parts) = parts else {
        return Err(Error::invalid_param(format!(
            "Key id {id:?} is not <algorithm>:<key id>"
        )));
    };
    let well_formed = match key {
        Value::String(s) => !s.is_empty(),
        Value::Object(o) => {
            o.get("key").and_then(Value::as_str).is_some()
                && o.get("signatures").is_some_and(Value::is_object)
        }
        _ => false,
    };
    if !well_formed {
        return Err(Error::invalid_param(format!(
            "Key {id:?} must be a string or an object with key and signatures"
        )));
    }
    Ok(parts)
}

impl E2eeService {
    /// Stores the device's new one-time keys and replaces its fallback keys. Re-uploading a key
    /// under an id already used with other content is refused.
    pub(crate) async fn upload_one_time_keys(
        &self,
        who: &Identity,
        one_time: &BTreeMap<String, Value>,
        fallback: &BTreeMap<String, Value>,
    ) -> Result<()> {
        let (user, device) = (&who.user_id, &who.device_id);
        let mut batch = Batch::new();
        for (id, key) in one_time {
            let (algorithm, _) = parse_key(id, key)?;
            let k = otk_key(user, device, algorithm, id);
            match self.get_json(Table::OneTimeKeys, &k)? {
                Some(old) if &old == key => {}
                Some(_) => {
                    return Err(Error::invalid_param(format!(
                        "One-time key {id} already exists with other content"
                    )));
                }
                None => batch.put(Table::OneTimeKeys, k, to_bytes(key)),
            }
        }
        for (id, key) in fallback {
            let (algorithm, _) = parse_key(id, key)?;
            let k = fallback_key(user, device, algorithm);
            let old = self.get_json(Table::FallbackKeys, &k)?;
            // The same key again keeps its `used` flag; a new one starts unused.
            let unchanged = old
                .as_ref()
                .is_some_and(|o| o["key_id"] == id.as_str() && &o["key"] == key);
            if !unchanged {
                let record = json!({ "key_id": id, "key": key, "used": false });
                batch.put(Table::FallbackKeys, k, to_bytes(&record));
            }
        }
        if !batch.is_empty() {
            self.store.write_durable(batch).await?;
        }
        Ok(())
    }

    /// How many unclaimed one-time keys the device has, per algorithm. `signed_curve25519` is
    /// always present (clients read a missing count as "do not know", Synapse sends 0).
    pub(crate) fn one_time_key_counts(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<BTreeMap<String, u64>> {
        let prefix = Key::new()
            .str(user.as_str())
            .str(device.as_str())
            .into_vec();
        let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
        for entry in self.store.scan_prefix(Table::OneTimeKeys, &prefix) {
            let (k, _) = entry?;
            if let Some(algorithm) = keys::str_parts(&k[prefix.len()..]).next() {
                *counts.entry(algorithm.to_owned()).or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// The algorithms for which the device has a fallback key that was not handed out yet.
    pub(crate) fn unused_fallback_key_types(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<String>> {
        let prefix = Key::new()
            .str(user.as_str())
            .str(device.as_str())
            .into_vec();
        let mut out = Vec::new();
        for entry in self.store.scan_prefix(Table::FallbackKeys, &prefix) {
            let (k, v) = entry?;
            let record = parse_stored(Table::FallbackKeys, &v)?;
            if record["used"] != true
                && let Some(algorithm) = keys::str_parts(&k[prefix.len()..]).next()
            {
                out.push(algorithm.to_owned());
            }
        }
        Ok(out)
    }

    /// `/keys/claim`: one key per requested device and algorithm, one-time keys first, then the
    /// fallback key. Devices with neither are left out of the answer.
    pub(crate) async fn claim_keys(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> Result<ClaimedKeys> {
        let mut out = ClaimedKeys::new();
        let ticket = {
            let mut cursors = self.claim_lock.lock();
            if cursors.0.len() > MAX_CURSORS {
                cursors.0.clear();
            }
            let mut batch = Batch::new();
            for (user, devices) in wanted {
                for (device, algorithm) in devices {
                    if let Some((id, key)) =
                        self.take_key(&mut batch, &mut cursors, user, device, algorithm)?
                    {
                        out.entry(user.clone())
                            .or_default()
                            .entry(device.clone())
                            .or_default()
                            .insert(id, key);
                    }
                }
            }
            if batch.is_empty() {
                None
            } else {
                Some(self.store.write(batch)?)
            }
        };
        if let Some(ticket) = ticket {
            self.store.durable(ticket).await?;
        }
        Ok(out)
    }

    /// Picks the key a claim gets, adding its deletion (or the fallback's `used` mark) to
    /// `batch`. Runs under the claim lock.
    fn take_key(
        &self,
        batch: &mut Batch,
        cursors: &mut ClaimCursors,
        user: &UserId,
        device: &DeviceId,
        algorithm: &str,
    ) -> Result<Option<(String, Value)>> {
        let prefix = Key::new()
            .str(user.as_str())
            .str(device.as_str())
            .str(algorithm)
            .into_vec();
        let after_cursor = match cursors.0.get(&prefix) {
            Some(last) => {
                // Strictly after the last claimed key, up to the end of the prefix: ids are
                // UTF-8, which never holds the separator byte 0xFF.
                let from = [last.as_slice(), &[0]].concat();
                let to = [prefix.as_slice(), &[keys::SEP]].concat();
                self.store.range(Table::OneTimeKeys, &from, &to).next()
            }
            None => None,
        };
        let first = match after_cursor {
            Some(entry) => Some(entry),
            None => self.store.scan_prefix(Table::OneTimeKeys, &prefix).next(),
        };
        if let Some(entry) = first {
            let (k, v) = entry?;
            let id = keys::str_parts(&k[prefix.len()..])
                .next()
                .unwrap_or_default()
                .to_owned();
            batch.delete(Table::OneTimeKeys, k.to_vec());
            cursors.0.insert(prefix, k.to_vec());
            return Ok(Some((id, parse_stored(Table::OneTimeKeys, &v)?)));
        }
        let k = fallback_key(user, device, algorithm);
        let Some(mut record) = self.get_json(Table::FallbackKeys, &k)? else {
            return Ok(None);
        };
        let id = record["key_id"].as_str().unwrap_or_default().to_owned();
        let key = record["key"].clone();
        if record["used"] != true {
            record["used"] = Value::Bool(true);
            batch.put(Table::FallbackKeys, k, to_bytes(&record));
        }
        Ok(Some((id, key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_and_shapes_are_checked() {
        let signed = json!({ "key": "a2V5", "signatures": {} });
        assert_eq!(
            parse_key("signed_curve25519:AAAAAQ", &signed).unwrap(),
            ("signed_curve25519", "AAAAAQ")
        );
        assert_eq!(
            parse_key("curve25519:AB", &json!("a2V5")).unwrap(),
            ("curve25519", "AB")
        );
        for (id, key) in [
            ("nocolon", signed.clone()),
            (":AB", signed.clone()),
            ("curve25519:", signed.clone()),
            ("curve25519:AB", json!("")),
            ("curve25519:AB", json!(42)),
            ("signed_curve25519:AB", json!({ "key": "a2V5" })),
        ] {
            assert_eq!(
                parse_key(id, &key).unwrap_err().errcode(),
                "M_INVALID_PARAM",
                "{id} {key}"
            );
        }
    }
}
