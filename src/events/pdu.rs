//! PDUs: the signed, hashed form of a room event, and the client format derived from it.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, TransactionId, UInt, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    signatures::{hash_and_sign_event, reference_hash},
};
use serde::{Deserialize, Serialize};
use serde_json::value::{RawValue as RawJsonValue, to_raw_value};

use super::SigningKey;
use crate::error::{Error, Result};

/// What a local user asks to add to a room; the room service turns it into a [`Pdu`].
#[derive(Debug, Clone)]
pub(crate) struct EventTemplate {
    pub(crate) kind: TimelineEventType,
    pub(crate) content: Box<RawJsonValue>,
    pub(crate) state_key: Option<String>,
    /// Overrides the timestamp (appservices' `?ts=`); `None` means now.
    pub(crate) timestamp: Option<MilliSecondsSinceUnixEpoch>,
}

impl EventTemplate {
    pub(crate) fn message(kind: impl Into<TimelineEventType>, content: Box<RawJsonValue>) -> Self {
        Self {
            kind: kind.into(),
            content,
            state_key: None,
            timestamp: None,
        }
    }

    pub(crate) fn state(
        kind: impl Into<StateEventType>,
        state_key: impl Into<String>,
        content: Box<RawJsonValue>,
    ) -> Self {
        let kind: StateEventType = kind.into();
        Self {
            kind: kind.to_string().into(),
            content,
            state_key: Some(state_key.into()),
            timestamp: None,
        }
    }

    /// A state event whose content is a serializable value (the server's own events).
    pub(crate) fn state_json(
        kind: impl Into<StateEventType>,
        state_key: impl Into<String>,
        content: &impl Serialize,
    ) -> Self {
        Self::state(
            kind,
            state_key,
            to_raw_value(content).expect("content serializes"),
        )
    }
}

/// A parsed PDU. The stored JSON stays the source of truth; this is the view services read.
#[derive(Debug, Clone)]
pub(crate) struct Pdu {
    pub(crate) event_id: OwnedEventId,
    pub(crate) room_id: OwnedRoomId,
    pub(crate) sender: OwnedUserId,
    pub(crate) origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub(crate) kind: TimelineEventType,
    pub(crate) content: Box<RawJsonValue>,
    pub(crate) state_key: Option<String>,
    pub(crate) prev_events: Vec<OwnedEventId>,
    pub(crate) auth_events: Vec<OwnedEventId>,
    pub(crate) depth: UInt,
    pub(crate) redacts: Option<OwnedEventId>,
}

#[derive(Deserialize)]
struct PduFields {
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    #[serde(default)]
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    depth: UInt,
    #[serde(default)]
    redacts: Option<OwnedEventId>,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses stored PDU JSON. Since room version 3 the event id is not part of the JSON.
    pub(crate) fn parse(event_id: OwnedEventId, json: &str) -> serde_json::Result<Self> {
        let f: PduFields = serde_json::from_str(json)?;
        // Room version 11 moved `redacts` into the content.
        let redacts = match f.redacts {
            Some(id) => Some(id),
            None if f.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(f.content.get())
                    .ok()
                    .and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Pdu {
            event_id,
            room_id: f.room_id,
            sender: f.sender,
            origin_server_ts: f.origin_server_ts,
            kind: f.kind,
            content: f.content,
            state_key: f.state_key,
            prev_events: f.prev_events,
            auth_events: f.auth_events,
            depth: f.depth,
            redacts,
        })
    }

    /// Deserializes the content into a typed struct.
    pub(crate) fn content_as<'a, T: Deserialize<'a>>(&'a self) -> serde_json::Result<T> {
        serde_json::from_str(self.content.get())
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        Some(&self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

/// The parts of a PDU that the room's position in the DAG decides.
pub(crate) struct DagPosition<'a> {
    pub(crate) prev_events: &'a [OwnedEventId],
    pub(crate) auth_events: &'a [OwnedEventId],
    pub(crate) depth: UInt,
}

/// Builds, hashes and signs a PDU; returns its reference-hash event id and canonical JSON.
pub(crate) fn build_pdu(
    key: &SigningKey,
    room_version: &RoomVersionId,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    sender: &UserId,
    template: &EventTemplate,
    dag: DagPosition<'_>,
) -> Result<(OwnedEventId, CanonicalJsonObject)> {
    let mut object = pdu_object(room_version, room_id, sender, template, dag)?;
    let event_id = hash_and_sign(key, rules, &mut object)?;
    Ok((event_id, object))
}

/// The PDU before hashing and signing: the template's fields and its place in the DAG, laid
/// out as `room_version` wants them.
fn pdu_object(
    room_version: &RoomVersionId,
    room_id: &RoomId,
    sender: &UserId,
    template: &EventTemplate,
    dag: DagPosition<'_>,
) -> Result<CanonicalJsonObject> {
    let content: CanonicalJsonValue = serde_json::from_str(template.content.get())
        .map_err(|e| Error::bad_json(format!("content is not canonical JSON: {e}")))?;
    if !matches!(content, CanonicalJsonValue::Object(_)) {
        return Err(Error::bad_json("content must be a JSON object"));
    }
    let ts = template
        .timestamp
        .unwrap_or_else(MilliSecondsSinceUnixEpoch::now);
    let ids = |ids: &[OwnedEventId]| {
        CanonicalJsonValue::Array(
            ids.iter()
                .map(|id| CanonicalJsonValue::String(id.to_string()))
                .collect(),
        )
    };
    let mut object = CanonicalJsonObject::new();
    object.insert(
        "room_id".into(),
        CanonicalJsonValue::String(room_id.to_string()),
    );
    object.insert(
        "sender".into(),
        CanonicalJsonValue::String(sender.to_string()),
    );
    object.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ts.0.into()),
    );
    object.insert(
        "type".into(),
        CanonicalJsonValue::String(template.kind.to_string()),
    );
    object.insert(
        "depth".into(),
        CanonicalJsonValue::Integer(dag.depth.into()),
    );
    object.insert("prev_events".into(), ids(dag.prev_events));
    object.insert("auth_events".into(), ids(dag.auth_events));
    if let Some(state_key) = &template.state_key {
        object.insert(
            "state_key".into(),
            CanonicalJsonValue::String(state_key.clone()),
        );
    }
    // Before v11 `redacts` was a top-level key of redaction events; keep it there for those rooms.
    if template.kind == TimelineEventType::RoomRedaction
        && !matches!(room_version, RoomVersionId::V11)
        && let CanonicalJsonValue::Object(c) = &content
        && let Some(redacts) = c.get("redacts")
    {
        object.insert("redacts".into(), redacts.clone());
    }
    object.insert("content".into(), content);
    Ok(object)
}

/// Seals a PDU: adds its content hash (`hashes.sha256`) and the server's signature of its
/// redacted form, then derives its event id from the reference hash (spec, server-server API:
/// "Calculating the reference hash for an event"; URL-safe base64 since room version 4).
pub(crate) fn hash_and_sign(
    key: &SigningKey,
    rules: &RoomVersionRules,
    object: &mut CanonicalJsonObject,
) -> Result<OwnedEventId> {
    hash_and_sign_event(
        key.server_name.as_str(),
        &key.key_pair,
        object,
        &rules.redaction,
    )
    .map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => Error::too_large("event is too large"),
        e => Error::bad_json(format!("cannot sign event: {e}")),
    })?;
    let hash = reference_hash(object, rules)
        .map_err(|_| Error::too_large("event is larger than 65536 bytes"))?;
    EventId::parse(format!("${hash}")).map_err(|e| Error::internal(e.to_string()))
}

/// `unsigned` data of a client-format event.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Unsigned<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) age: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) transaction_id: Option<&'a TransactionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prev_content: Option<&'a RawJsonValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prev_sender: Option<&'a UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) replaces_state: Option<&'a EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) redacted_because: Option<&'a RawJsonValue>,
    /// Bundled aggregations of the event's children (edits, threads, references).
    #[serde(rename = "m.relations", skip_serializing_if = "Option::is_none")]
    pub(crate) relations: Option<&'a RawJsonValue>,
}

#[derive(Serialize)]
struct ClientEvent<'a> {
    content: &'a RawJsonValue,
    event_id: &'a EventId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a RoomId>,
    sender: &'a UserId,
    #[serde(rename = "type")]
    kind: &'a TimelineEventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a EventId>,
    unsigned: &'a Unsigned<'a>,
}

/// Whether the client format carries `room_id` (it does not inside `/sync` room sections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFormat {
    WithRoomId,
    Sync,
}

impl Pdu {
    /// Serializes the event as clients see it.
    pub(crate) fn to_client(
        &self,
        format: ClientFormat,
        unsigned: &Unsigned<'_>,
    ) -> Box<RawJsonValue> {
        let event = ClientEvent {
            content: &self.content,
            event_id: &self.event_id,
            origin_server_ts: self.origin_server_ts,
            room_id: (format == ClientFormat::WithRoomId).then_some(&*self.room_id),
            sender: &self.sender,
            kind: &self.kind,
            state_key: self.state_key.as_deref(),
            redacts: self.redacts.as_deref(),
            unsigned,
        };
        to_raw_value(&event).expect("client events serialize")
    }
}

#[cfg(test)]
mod tests {
    //! PDU building against the spec's published test vectors (Appendices, "Cryptographic
    //! test vectors") and, where the spec publishes none (the reference hash), against the
    //! algorithm as the spec states it, computed here independently of ruma.

    use base64::Engine;
    use ruma::{
        CanonicalJsonObject, owned_event_id, room_id,
        signatures::{PublicKeyMap, Verified, sign_json, verify_event},
        user_id,
    };
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::events::redaction::redact;

    fn object(v: Value) -> CanonicalJsonObject {
        serde_json::from_value(v).unwrap()
    }

    fn signature(object: &CanonicalJsonObject) -> String {
        serde_json::to_value(object).unwrap()["signatures"]["domain"]["ed25519:1"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The spec's vectors were made with the original redaction rules (room version 1):
    /// both keep `origin` and `event_id`, which these events carry.
    const SPEC_VECTOR_RULES: RoomVersionRules = RoomVersionRules::V1;

    #[test]
    fn json_signing_matches_the_spec_vectors() {
        let key = SigningKey::spec_test_key();
        for (json, expected) in [
            (
                json!({}),
                "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ",
            ),
            (
                json!({ "one": 1, "two": "Two" }),
                "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
            ),
        ] {
            let mut signed = object(json);
            sign_json(key.server_name.as_str(), &key.key_pair, &mut signed).unwrap();
            assert_eq!(signature(&signed), expected);
        }
    }

    #[test]
    fn event_signing_matches_the_spec_vector_for_a_minimal_event() {
        let mut event = object(json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
            "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
            "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
            "unsigned": { "age_ts": 1000000 },
        }));
        hash_and_sign(&SigningKey::spec_test_key(), &SPEC_VECTOR_RULES, &mut event).unwrap();
        let event = serde_json::to_value(&event).unwrap();
        assert_eq!(
            event["hashes"],
            json!({ "sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos" })
        );
        assert_eq!(
            event["signatures"],
            json!({ "domain": { "ed25519:1":
                "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg" } })
        );
        // Nothing else changes.
        assert_eq!(event["unsigned"], json!({ "age_ts": 1000000 }));
        assert_eq!(event["depth"], json!(3));
    }

    #[test]
    fn event_signing_matches_the_spec_vector_for_redactable_content() {
        let mut event = object(json!({
            "content": { "body": "Here is the message content" }, "event_id": "$0:domain",
            "origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message",
            "room_id": "!r:domain", "sender": "@u:domain", "signatures": {},
            "unsigned": { "age_ts": 1000000 },
        }));
        hash_and_sign(&SigningKey::spec_test_key(), &SPEC_VECTOR_RULES, &mut event).unwrap();
        let event = serde_json::to_value(&event).unwrap();
        assert_eq!(
            event["hashes"],
            json!({ "sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g" })
        );
        // The signature covers the redacted form: the message body is not part of it.
        assert_eq!(
            event["signatures"],
            json!({ "domain": { "ed25519:1":
                "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA" } })
        );
    }

    fn message(body: &str) -> EventTemplate {
        let mut template = EventTemplate::message(
            "m.room.message",
            to_raw_value(&json!({ "msgtype": "m.text", "body": body })).unwrap(),
        );
        template.timestamp = Some(MilliSecondsSinceUnixEpoch(1_000_000u32.into()));
        template
    }

    fn build(version: &RoomVersionId, template: &EventTemplate) -> (OwnedEventId, Value) {
        let rules = version.rules().unwrap();
        let (event_id, object) = build_pdu(
            &SigningKey::spec_test_key(),
            version,
            &rules,
            room_id!("!r:domain"),
            user_id!("@u:domain"),
            template,
            DagPosition {
                prev_events: &[owned_event_id!("$prev")],
                auth_events: &[owned_event_id!("$create"), owned_event_id!("$levels")],
                depth: 7u32.into(),
            },
        )
        .unwrap();
        (event_id, serde_json::to_value(&object).unwrap())
    }

    /// The reference hash as the spec defines it: redact, drop `signatures` and `unsigned`,
    /// SHA-256 of the canonical JSON, URL-safe unpadded base64 (room versions 4+).
    fn spec_event_id(pdu: &Value, rules: &RoomVersionRules) -> String {
        let mut essential = object_from_str(&redact(&pdu.to_string(), rules).unwrap());
        essential.remove("signatures");
        essential.remove("unsigned");
        // Canonical JSON: keys sorted (a B-tree map), no insignificant whitespace.
        let canonical = serde_json::to_string(&essential).unwrap();
        let hash = Sha256::digest(canonical.as_bytes());
        format!(
            "${}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash)
        )
    }

    fn public_keys() -> PublicKeyMap {
        let key = SigningKey::spec_test_key();
        let public = ruma::serde::Base64::new(key.key_pair.public_key().to_vec());
        PublicKeyMap::from([(
            "domain".to_owned(),
            [("ed25519:1".to_owned(), public)].into(),
        )])
    }

    #[test]
    fn a_built_pdu_has_the_spec_fields_a_verifying_signature_and_its_reference_hash_as_id() {
        let version = RoomVersionId::V11;
        let rules = version.rules().unwrap();
        let (event_id, pdu) = build(&version, &message("hello"));
        let mut keys: Vec<&str> = pdu
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "auth_events",
                "content",
                "depth",
                "hashes",
                "origin_server_ts",
                "prev_events",
                "room_id",
                "sender",
                "signatures",
                "type",
            ]
        );
        assert_eq!(
            (&pdu["prev_events"], &pdu["auth_events"], &pdu["depth"]),
            (&json!(["$prev"]), &json!(["$create", "$levels"]), &json!(7))
        );
        assert_eq!(pdu["origin_server_ts"], json!(1_000_000));
        assert_eq!(event_id.as_str(), spec_event_id(&pdu, &rules));

        // The server's signature and the content hash both verify ...
        let object = object(pdu.clone());
        assert!(matches!(
            verify_event(&public_keys(), &object, &rules),
            Ok(Verified::All)
        ));
        // ... the redacted event keeps a valid signature but not its content hash ...
        let redacted = object_from_str(&redact(&pdu.to_string(), &rules).unwrap());
        assert!(matches!(
            verify_event(&public_keys(), &redacted, &rules),
            Ok(Verified::Signatures)
        ));
        // ... and its reference hash, hence its id, is unchanged by redaction.
        let redacted: Value = serde_json::to_value(&redacted).unwrap();
        assert_eq!(spec_event_id(&redacted, &rules), event_id.as_str());

        // A changed body is a different event.
        let (other, _) = build(&version, &message("hello!"));
        assert_ne!(other, event_id);
    }

    fn object_from_str(json: &str) -> CanonicalJsonObject {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn redacts_is_top_level_before_v11_and_in_the_content_since() {
        let template = EventTemplate::message(
            TimelineEventType::RoomRedaction,
            to_raw_value(&json!({ "redacts": "$target" })).unwrap(),
        );
        let (_, v10) = build(&RoomVersionId::V10, &template);
        assert_eq!(v10["redacts"], json!("$target"));
        let (_, v11) = build(&RoomVersionId::V11, &template);
        assert_eq!(v11.get("redacts"), None);
        assert_eq!(v11["content"]["redacts"], json!("$target"));
    }

    #[test]
    fn content_that_is_not_an_object_or_not_canonical_is_refused() {
        for content in ["[]", "\"text\"", r#"{"n": 1.5}"#] {
            let template = EventTemplate::message(
                "m.room.message",
                RawJsonValue::from_string(content.into()).unwrap(),
            );
            let err = build_pdu(
                &SigningKey::spec_test_key(),
                &RoomVersionId::V11,
                &RoomVersionRules::V11,
                room_id!("!r:domain"),
                user_id!("@u:domain"),
                &template,
                DagPosition {
                    prev_events: &[],
                    auth_events: &[],
                    depth: 1u32.into(),
                },
            )
            .unwrap_err();
            assert!(
                err.to_string().starts_with("M_BAD_JSON"),
                "{content}: {err}"
            );
        }
    }
}
