//! PDUs from other servers: what a received event is once its id is derived, its signatures
//! are checked and its content hash is compared (spec v1.16, server-server API, "Checks
//! performed on receipt of a PDU", steps 1–3). Pure: the keys come from the caller.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName,
    room_version_rules::RoomVersionRules,
    signatures::{PublicKeyMap, Verified, reference_hash, verify_event},
};

use super::Pdu;
use crate::error::{Error, Result};

/// The largest PDU, in canonical JSON, any room version accepts.
pub(crate) const MAX_PDU_BYTES: usize = 65_536;

/// A received PDU that passed the checks: its id, the JSON to store (redacted when its content
/// hash did not match) and its parsed form.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) event_id: OwnedEventId,
    pub(crate) json: String,
    pub(crate) pdu: Pdu,
}

/// A received PDU as canonical JSON, without what is not signed (`unsigned`) and what room
/// versions 3+ derive (`event_id`). `M_BAD_JSON` when it is not a JSON object in canonical form
/// or exceeds the PDU size limit.
pub(crate) fn parse_object(json: &str) -> Result<CanonicalJsonObject> {
    if json.len() > MAX_PDU_BYTES * 2 {
        return Err(Error::too_large("event is larger than 65536 bytes"));
    }
    let mut object: CanonicalJsonObject = serde_json::from_str(json)
        .map_err(|e| Error::bad_json(format!("event is not canonical JSON: {e}")))?;
    object.remove("unsigned");
    object.remove("event_id");
    Ok(object)
}

/// The servers whose signatures the event needs, each with the key ids it signed with.
pub(crate) fn signers(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<Vec<(OwnedServerName, Vec<String>)>> {
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(object, &rules.signatures)
            .map_err(|e| Error::bad_json(format!("cannot tell who signed the event: {e}")))?;
    let signatures = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(s)) => s,
        _ => return Err(Error::bad_json("event without signatures")),
    };
    servers
        .into_iter()
        .map(|server| {
            let key_ids = match signatures.get(server.as_str()) {
                Some(CanonicalJsonValue::Object(keys)) => keys.keys().cloned().collect(),
                _ => Vec::new(),
            };
            if key_ids.is_empty() {
                return Err(Error::forbidden(format!("event is not signed by {server}")));
            }
            Ok((server, key_ids))
        })
        .collect()
}

/// The event id the object's reference hash gives (room versions 4+).
pub(crate) fn event_id_of(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId> {
    let hash = reference_hash(object, rules)
        .map_err(|_| Error::too_large("event is larger than 65536 bytes"))?;
    EventId::parse(format!("${hash}")).map_err(|e| Error::internal(e.to_string()))
}

/// Checks the signatures with `keys` (every server [`signers`] named) and the content hash:
/// a bad signature refuses the event (`M_FORBIDDEN`), a content hash that does not match
/// keeps it redacted, as the spec says.
pub(crate) fn verify(
    object: CanonicalJsonObject,
    rules: &RoomVersionRules,
    keys: &PublicKeyMap,
) -> Result<Incoming> {
    let event_id = event_id_of(&object, rules)?;
    let verified = verify_event(keys, &object, rules).map_err(|e| {
        Error::forbidden(format!("event {event_id} fails its signature check: {e}"))
    })?;
    let object = match verified {
        Verified::All => object,
        Verified::Signatures => {
            tracing::info!(%event_id, "content hash mismatch: the event is kept redacted");
            ruma::canonical_json::redact(object, &rules.redaction, None)
                .map_err(|e| Error::bad_json(e.to_string()))?
        }
    };
    let json = serde_json::to_string(&object).map_err(|e| Error::internal(e.to_string()))?;
    if json.len() > MAX_PDU_BYTES {
        return Err(Error::too_large("event is larger than 65536 bytes"));
    }
    let pdu = Pdu::parse(event_id.clone(), &json)
        .map_err(|e| Error::bad_json(format!("event {event_id} is not a PDU: {e}")))?;
    Ok(Incoming {
        event_id,
        json,
        pdu,
    })
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, owned_room_id, user_id};
    use serde_json::json;

    use super::*;
    use crate::events::{DagPosition, EventTemplate, SigningKey, build_pdu};

    fn signed(key: &SigningKey, body: &str) -> CanonicalJsonObject {
        let template = EventTemplate::message(
            "m.room.message",
            serde_json::value::to_raw_value(&json!({"msgtype": "m.text", "body": body})).unwrap(),
        );
        let sender = format!("@a:{}", key.server_name);
        let (_, object) = build_pdu(
            key,
            &RoomVersionId::V11,
            &RoomVersionRules::V11,
            &owned_room_id!("!r:domain"),
            <&ruma::UserId>::try_from(sender.as_str()).unwrap(),
            &template,
            DagPosition {
                prev_events: &[],
                auth_events: &[],
                depth: 1u32.into(),
            },
        )
        .unwrap();
        object
    }

    fn keys_of(key: &SigningKey) -> PublicKeyMap {
        key.public_keys()
    }

    #[test]
    fn a_signed_event_verifies_and_keeps_its_id_and_content() {
        let key = SigningKey::spec_test_key();
        let object = signed(&key, "hello");
        let id = event_id_of(&object, &RoomVersionRules::V11).unwrap();
        assert_eq!(
            signers(&object, &RoomVersionRules::V11).unwrap(),
            vec![(key.server_name.clone(), vec![key.key_id()])]
        );
        let incoming = verify(object, &RoomVersionRules::V11, &keys_of(&key)).unwrap();
        assert_eq!(incoming.event_id, id);
        assert_eq!(incoming.pdu.sender, user_id!("@a:domain"));
        assert!(incoming.json.contains("hello"));
    }

    #[test]
    fn a_changed_content_is_redacted_and_a_changed_envelope_refused() {
        let key = SigningKey::spec_test_key();
        let mut object = signed(&key, "hello");
        object.insert(
            "content".into(),
            serde_json::from_value(json!({"msgtype": "m.text", "body": "forged"})).unwrap(),
        );
        let incoming = verify(object, &RoomVersionRules::V11, &keys_of(&key)).unwrap();
        assert!(!incoming.json.contains("forged"), "{}", incoming.json);
        assert_eq!(incoming.pdu.content.get(), "{}");

        let mut object = signed(&key, "hello");
        object.insert("depth".into(), CanonicalJsonValue::Integer(7u32.into()));
        let refused = verify(object, &RoomVersionRules::V11, &keys_of(&key)).unwrap_err();
        assert_eq!(refused.errcode(), "M_FORBIDDEN");
    }

    #[test]
    fn an_event_signed_by_another_key_is_refused() {
        let key = SigningKey::spec_test_key();
        let other = SigningKey::generate(key.server_name.clone());
        let refused = verify(signed(&key, "x"), &RoomVersionRules::V11, &keys_of(&other));
        assert_eq!(refused.unwrap_err().errcode(), "M_FORBIDDEN");
    }
}
