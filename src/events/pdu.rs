//! PDUs: the signed, hashed form of a room event, and the client format derived from it.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
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
pub struct EventTemplate {
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    /// Overrides the timestamp (appservices' `?ts=`); `None` means now.
    pub timestamp: Option<MilliSecondsSinceUnixEpoch>,
}

impl EventTemplate {
    pub fn message(kind: impl Into<TimelineEventType>, content: Box<RawJsonValue>) -> Self {
        Self {
            kind: kind.into(),
            content,
            state_key: None,
            timestamp: None,
        }
    }

    pub fn state(
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
    pub fn state_json(
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
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: UInt,
    pub redacts: Option<OwnedEventId>,
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
    pub fn parse(event_id: OwnedEventId, json: &str) -> serde_json::Result<Self> {
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

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// Deserializes the content into a typed struct.
    pub fn content_as<'a, T: Deserialize<'a>>(&'a self) -> serde_json::Result<T> {
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
pub struct DagPosition<'a> {
    pub prev_events: &'a [OwnedEventId],
    pub auth_events: &'a [OwnedEventId],
    pub depth: UInt,
}

/// Builds, hashes and signs a PDU; returns its reference-hash event id and canonical JSON.
pub fn build_pdu(
    key: &SigningKey,
    room_version: &RoomVersionId,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    sender: &UserId,
    template: &EventTemplate,
    dag: DagPosition<'_>,
) -> Result<(OwnedEventId, CanonicalJsonObject)> {
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

    hash_and_sign_event(
        key.server_name.as_str(),
        &key.key_pair,
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => Error::too_large("event is too large"),
        e => Error::bad_json(format!("cannot sign event: {e}")),
    })?;
    let hash = reference_hash(&object, rules)
        .map_err(|_| Error::too_large("event is larger than 65536 bytes"))?;
    let event_id =
        EventId::parse(format!("${hash}")).map_err(|e| Error::internal(e.to_string()))?;
    Ok((event_id, object))
}

/// `unsigned` data of a client-format event.
#[derive(Debug, Default, Serialize)]
pub struct Unsigned<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_content: Option<&'a RawJsonValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_sender: Option<&'a UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces_state: Option<&'a EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted_because: Option<&'a RawJsonValue>,
    /// Bundled aggregations of the event's children (edits, threads, references).
    #[serde(rename = "m.relations", skip_serializing_if = "Option::is_none")]
    pub relations: Option<&'a RawJsonValue>,
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
pub enum ClientFormat {
    WithRoomId,
    Sync,
}

impl Pdu {
    /// Serializes the event as clients see it.
    pub fn to_client(&self, format: ClientFormat, unsigned: &Unsigned<'_>) -> Box<RawJsonValue> {
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
