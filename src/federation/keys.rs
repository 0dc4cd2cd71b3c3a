//! The server's published signing keys: `GET /_matrix/key/v2/server`.
//!
//! Peers verify every event and request this server signs with the key this document lists, so
//! the document is itself signed by that key (the spec's "self-signed" key response). The key is
//! the one PDUs are signed with (`rooms/signing_key.rs`): created on first start, kept forever.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    events::SigningKey,
};

/// How long peers may use the document before asking again: Synapse's default
/// (`key_refresh_interval`, a day). Peers use the lesser of it and seven days.
pub(crate) const VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// The key document, valid until `now_ms` plus [`VALIDITY`], signed with `key`.
pub(crate) fn server_keys(key: &SigningKey, now_ms: u64) -> Result<Value> {
    let pair = &key.key_pair;
    let key_id = format!("ed25519:{}", pair.version());
    let document = json!({
        "server_name": key.server_name,
        "valid_until_ts": now_ms + VALIDITY.as_millis() as u64,
        "verify_keys": { &key_id: { "key": STANDARD_NO_PAD.encode(pair.public_key()) } },
        "old_verify_keys": {},
    });
    let mut object: CanonicalJsonObject = serde_json::from_value(document)
        .map_err(|e| Error::internal(format!("key document: {e}")))?;
    ruma::signatures::sign_json(key.server_name.as_str(), pair, &mut object)
        .map_err(|e| Error::internal(format!("signing the key document: {e}")))?;
    serde_json::to_value(CanonicalJsonValue::Object(object))
        .map_err(|e| Error::internal(format!("key document: {e}")))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::signatures::{PublicKeyMap, verify_json};

    use super::*;

    #[test]
    fn the_document_lists_the_key_and_is_signed_by_it() {
        let key = SigningKey::spec_test_key();
        let doc = server_keys(&key, 1_000).unwrap();
        assert_eq!(doc["server_name"], "domain");
        assert_eq!(doc["valid_until_ts"], 1_000 + 86_400_000);
        assert_eq!(doc["old_verify_keys"], json!({}));
        // The key PDUs are signed with, unpadded base64.
        let public = STANDARD_NO_PAD.encode(key.key_pair.public_key());
        assert_eq!(doc["verify_keys"]["ed25519:1"]["key"], public.as_str());
        let object: CanonicalJsonObject = serde_json::from_value(doc.clone()).unwrap();
        let keys = BTreeMap::from([(
            "ed25519:1".to_owned(),
            ruma::serde::Base64::parse(&public).unwrap(),
        )]);
        let map: PublicKeyMap = BTreeMap::from([("domain".to_owned(), keys)]);
        verify_json(&map, &object).unwrap();
        // Changed after signing, it no longer verifies.
        let mut forged = object;
        forged.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer(9_999.into()),
        );
        assert!(verify_json(&map, &forged).is_err());
    }
}
