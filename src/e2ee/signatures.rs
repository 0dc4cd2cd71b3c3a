//! Ed25519 signatures on key objects, and the store of signatures users made on others' keys.
//!
//! A signature uploaded through `/keys/signatures/upload` is kept apart from the key it signs
//! (table `key_signatures`, by target user, target key id and signer), so that a key's owner
//! re-uploading it cannot drop them and a query can choose whose signatures a requester sees.

use std::collections::BTreeMap;

use base64::Engine;
use ruma::{
    CanonicalJsonValue, UserId,
    signatures::{SigningKeyAlgorithm, verify_canonical_json_bytes},
};
use serde_json::{Map, Value};

use super::{E2eeService, parse_stored, signed_part, to_bytes};
use crate::{
    error::Result,
    storage::{Batch, Key, Table, keys},
};

/// Whether `object` carries a valid signature by `signer` with the ed25519 key `key_id`
/// (`ed25519:<name>`) whose public half is `public_key` (unpadded base64).
pub(crate) fn verify(object: &Value, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let (Some(public_key), Some(signature)) = (decode(public_key), decode(signature)) else {
        return false;
    };
    let Ok(CanonicalJsonValue::Object(canonical)) =
        CanonicalJsonValue::try_from(signed_part(object))
    else {
        return false;
    };
    let bytes = CanonicalJsonValue::Object(canonical).to_string();
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        bytes.as_bytes(),
    )
    .is_ok()
}

/// Unpadded (or padded) standard base64, as Matrix keys and signatures are written.
fn decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

fn key(target: &UserId, key_id: &str, signer: &UserId) -> Vec<u8> {
    Key::new()
        .str(target.as_str())
        .str(key_id)
        .str(signer.as_str())
        .into_vec()
}

impl E2eeService {
    /// Adds `signer`'s signatures (`key id → signature`) on `target`'s key `key_id` to `batch`,
    /// merged with the ones stored before.
    pub(super) fn add_signatures(
        &self,
        batch: &mut Batch,
        target: &UserId,
        key_id: &str,
        signer: &UserId,
        new: Map<String, Value>,
    ) -> Result<()> {
        let k = key(target, key_id, signer);
        let mut merged = match self.get_json(Table::KeySignatures, &k)? {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        merged.extend(new);
        batch.put(Table::KeySignatures, k, to_bytes(&Value::Object(merged)));
        Ok(())
    }

    /// Merges into `object.signatures` what the given signers uploaded for `target`'s key.
    pub(super) fn merge_signatures(
        &self,
        object: &mut Value,
        target: &UserId,
        key_id: &str,
        signers: &[&UserId],
    ) -> Result<()> {
        let prefix = Key::new().str(target.as_str()).str(key_id).into_vec();
        let mut found: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for entry in self.store.scan_prefix(Table::KeySignatures, &prefix) {
            let (k, v) = entry?;
            let signer = keys::str_parts(&k[prefix.len()..])
                .next()
                .unwrap_or_default();
            if !signers.iter().any(|s| s.as_str() == signer) {
                continue;
            }
            if let Value::Object(sigs) = parse_stored(Table::KeySignatures, &v)? {
                found.entry(signer.to_owned()).or_default().extend(sigs);
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        let Some(obj) = object.as_object_mut() else {
            return Ok(());
        };
        let all = obj
            .entry("signatures")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(all) = all.as_object_mut() {
            for (signer, sigs) in found {
                if let Some(existing) = all
                    .entry(signer)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                {
                    existing.extend(sigs);
                }
            }
        }
        Ok(())
    }
}
