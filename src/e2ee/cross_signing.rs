//! Cross-signing: the master, self-signing and user-signing keys of a user, and signatures
//! uploaded on keys (`/keys/signatures/upload`).
//!
//! The self-signing and user-signing keys must carry a valid signature of the master key. A
//! signature upload is checked against the stored key it signs: the key must exist, its signed
//! content must be unchanged, and the signature must verify with the signer's key.

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value};

use super::{E2eeService, KeysQuery, device_lists, signatures::verify, signed_part, to_bytes};
use crate::{
    error::{Error, Result},
    rooms::RoomService,
    storage::{Batch, Key, Table},
};

/// What a cross-signing key is for: its `usage` in the key, and its name in the store's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyUsage {
    Master,
    SelfSigning,
    UserSigning,
}

impl KeyUsage {
    fn as_str(self) -> &'static str {
        match self {
            KeyUsage::Master => "master",
            KeyUsage::SelfSigning => "self_signing",
            KeyUsage::UserSigning => "user_signing",
        }
    }
}

impl std::fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The keys of one `/keys/device_signing/upload`.
#[derive(Debug, Default)]
pub(crate) struct SigningKeys {
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

/// A refused signature: the `failures` entry of `/keys/signatures/upload`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SignatureFailure {
    pub errcode: &'static str,
    pub error: String,
}

fn cs_key(user: &UserId, usage: KeyUsage) -> Vec<u8> {
    Key::new().str(user.as_str()).str(usage.as_str()).into_vec()
}

/// The one `ed25519:<public key>` of a cross-signing key: `(key id, public key)`.
pub(crate) fn public_key(key: &Value) -> Option<(String, String)> {
    let keys = key.get("keys")?.as_object()?;
    let (id, value) = keys.iter().next()?;
    Some((id.clone(), value.as_str()?.to_owned()))
}

/// Checks a cross-signing key's shape: the owner, the usage, exactly one ed25519 key named by
/// its public key.
fn validate(user: &UserId, usage: KeyUsage, key: &Value) -> Result<()> {
    let bad = |m: String| Err(Error::invalid_param(format!("Invalid {usage} key: {m}")));
    if key.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
        return bad("user_id does not match the authenticated user".into());
    }
    let has_usage = key
        .get("usage")
        .and_then(Value::as_array)
        .is_some_and(|u| u.iter().any(|x| x == usage.as_str()));
    if !has_usage {
        return bad(format!("usage must contain {:?}", usage.as_str()));
    }
    let count = key.get("keys").and_then(Value::as_object).map(Map::len);
    match public_key(key) {
        Some((id, public)) if count == Some(1) && id == format!("ed25519:{public}") => Ok(()),
        _ => bad("keys must hold exactly one ed25519:<public key>".into()),
    }
}

impl E2eeService {
    pub(super) fn cross_signing_key(
        &self,
        user: &UserId,
        usage: KeyUsage,
    ) -> Result<Option<Value>> {
        self.get_json(Table::CrossSigningKeys, &cs_key(user, usage))
    }

    /// Whether replacing the user's keys with `keys` needs user-interactive auth (MSC3967): not
    /// for a first upload (no master key yet), nor for a retry of exactly the stored keys.
    pub(crate) fn signing_upload_needs_auth(
        &self,
        user: &UserId,
        keys: &SigningKeys,
    ) -> Result<bool> {
        if self.cross_signing_key(user, KeyUsage::Master)?.is_none() {
            return Ok(false);
        }
        for (usage, new) in [
            (KeyUsage::Master, &keys.master),
            (KeyUsage::SelfSigning, &keys.self_signing),
            (KeyUsage::UserSigning, &keys.user_signing),
        ] {
            if let Some(new) = new
                && self.cross_signing_key(user, usage)?.as_ref() != Some(new)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores the user's cross-signing keys (after the caller's auth check).
    pub(crate) async fn upload_signing_keys(
        &self,
        rooms: &RoomService,
        user: &UserId,
        keys: SigningKeys,
    ) -> Result<()> {
        if let Some(master) = &keys.master {
            validate(user, KeyUsage::Master, master)?;
        }
        let master = match &keys.master {
            Some(m) => Some(m.clone()),
            None => self.cross_signing_key(user, KeyUsage::Master)?,
        };
        let mut batch = Batch::new();
        for (usage, key) in [
            (KeyUsage::SelfSigning, &keys.self_signing),
            (KeyUsage::UserSigning, &keys.user_signing),
        ] {
            let Some(key) = key else { continue };
            validate(user, usage, key)?;
            let Some((master_id, master_public)) = master.as_ref().and_then(public_key) else {
                return Err(Error::missing_param("A master key must be uploaded first"));
            };
            if !verify(key, user.as_str(), &master_id, &master_public) {
                return Err(Error::matrix(
                    http::StatusCode::BAD_REQUEST,
                    "M_INVALID_SIGNATURE",
                    format!("The {usage} key is not signed by the master key"),
                ));
            }
            batch.put(Table::CrossSigningKeys, cs_key(user, usage), to_bytes(key));
        }
        if let Some(master) = &keys.master {
            batch.put(
                Table::CrossSigningKeys,
                cs_key(user, KeyUsage::Master),
                to_bytes(master),
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.stream
            .commit(|pos| {
                device_lists::record(&mut batch, pos, user);
                batch
            })
            .await?;
        self.wake_peers(rooms, user)
    }

    /// Adds `user`'s cross-signing keys to a query answer: master and self-signing keys for
    /// anyone, the user-signing key only for its owner.
    pub(super) fn add_cross_signing_keys(
        &self,
        out: &mut KeysQuery,
        requester: &UserId,
        user: &UserId,
    ) -> Result<()> {
        if let Some(mut master) = self.cross_signing_key(user, KeyUsage::Master)? {
            if let Some((_, public)) = public_key(&master) {
                self.merge_signatures(&mut master, user, &public, &[user, requester])?;
            }
            out.master_keys.insert(user.to_owned(), master);
        }
        if let Some(key) = self.cross_signing_key(user, KeyUsage::SelfSigning)? {
            out.self_signing_keys.insert(user.to_owned(), key);
        }
        if user == requester
            && let Some(key) = self.cross_signing_key(user, KeyUsage::UserSigning)?
        {
            out.user_signing_keys.insert(user.to_owned(), key);
        }
        Ok(())
    }

    /// `/keys/signatures/upload`: stores every signature that checks out, and says why the
    /// others were refused.
    pub(crate) async fn upload_signatures(
        &self,
        rooms: &RoomService,
        requester: &UserId,
        signed: &BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
    ) -> Result<BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>>> {
        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>> =
            BTreeMap::new();
        let mut batch = Batch::new();
        let mut targets = Vec::new();
        for (target, objects) in signed {
            for (key_id, object) in objects {
                match self.check_signature(requester, target, key_id, object) {
                    Ok(new) => {
                        self.add_signatures(&mut batch, target, key_id, requester, new)?;
                        if !targets.contains(target) {
                            targets.push(target.clone());
                        }
                    }
                    Err(failure) => {
                        failures
                            .entry(target.clone())
                            .or_default()
                            .insert(key_id.clone(), failure);
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.stream
                .commit(|pos| {
                    for target in &targets {
                        device_lists::record(&mut batch, pos, target);
                    }
                    batch
                })
                .await?;
            for target in &targets {
                self.wake_peers(rooms, target)?;
            }
        }
        Ok(failures)
    }

    /// Checks one uploaded signed object; returns the requester's signatures on it to store.
    fn check_signature(
        &self,
        requester: &UserId,
        target: &UserId,
        key_id: &str,
        object: &Value,
    ) -> Result<Map<String, Value>, SignatureFailure> {
        let fail = |errcode: &'static str, error: &str| SignatureFailure {
            errcode,
            error: error.to_owned(),
        };
        let internal = |_| fail("M_UNKNOWN", "Internal error");
        let target_master = self
            .cross_signing_key(target, KeyUsage::Master)
            .map_err(internal)?;
        let is_master = target_master
            .as_ref()
            .and_then(public_key)
            .is_some_and(|(_, public)| public == key_id);
        // What the signature must be made with: (stored key, signer key id, signer public key).
        let (stored, signers): (Value, Vec<(String, String)>) = if target == requester {
            if is_master {
                // A device vouches for its user's master key.
                let mut signers = Vec::new();
                let sigs = object
                    .get("signatures")
                    .and_then(|s| s.get(requester.as_str()))
                    .and_then(Value::as_object);
                for id in sigs.into_iter().flat_map(|s| s.keys()) {
                    let device = id.strip_prefix("ed25519:").unwrap_or_default();
                    if let Some(keys) = self
                        .device_keys(requester, device.into())
                        .map_err(internal)?
                        && let Some(public) = keys["keys"][id].as_str()
                    {
                        signers.push((id.clone(), public.to_owned()));
                    }
                }
                (target_master.expect("is_master"), signers)
            } else {
                let Some(device) = self.device_keys(target, key_id.into()).map_err(internal)?
                else {
                    return Err(fail("M_NOT_FOUND", "Unknown key"));
                };
                let self_signing = self
                    .cross_signing_key(requester, KeyUsage::SelfSigning)
                    .map_err(internal)?;
                (
                    device,
                    self_signing
                        .as_ref()
                        .and_then(public_key)
                        .into_iter()
                        .collect(),
                )
            }
        } else {
            if !is_master {
                return Err(fail("M_NOT_FOUND", "Unknown key"));
            }
            let user_signing = self
                .cross_signing_key(requester, KeyUsage::UserSigning)
                .map_err(internal)?;
            (
                target_master.expect("is_master"),
                user_signing
                    .as_ref()
                    .and_then(public_key)
                    .into_iter()
                    .collect(),
            )
        };
        if signed_part(&stored) != signed_part(object) {
            return Err(fail(
                "M_INVALID_SIGNATURE",
                "Key does not match the stored key",
            ));
        }
        let mut verified = Map::new();
        for (id, public) in signers {
            if verify(object, requester.as_str(), &id, &public) {
                verified.insert(
                    id.clone(),
                    object["signatures"][requester.as_str()][&id].clone(),
                );
            }
        }
        if verified.is_empty() {
            return Err(fail("M_INVALID_SIGNATURE", "Invalid signature"));
        }
        Ok(verified)
    }
}
