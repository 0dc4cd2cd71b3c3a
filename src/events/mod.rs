//! Room events as room versions define them: PDU building, hashing, signing, the authorization
//! rules and redaction. Everything here is pure; storage and ordering live in `rooms`.

mod auth;
pub(crate) mod incoming;
mod pdu;
mod power_levels;
mod redaction;
mod signing_key;

pub(crate) use auth::{auth_types, check_against_state, check_auth, check_auth_events};
pub(crate) use incoming::Incoming;
pub(crate) use pdu::{
    ClientFormat, DagPosition, EventTemplate, Pdu, Unsigned, build_pdu, hash_and_sign,
};
pub(crate) use power_levels::PowerLevels;
pub(crate) use redaction::redact;
pub use signing_key::SigningKey;

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

use crate::error::{Error, Result};

/// The room versions this server creates and serves.
pub(crate) const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 2] =
    [RoomVersionId::V10, RoomVersionId::V11];

/// The rules of a supported room version, or `M_UNSUPPORTED_ROOM_VERSION`.
pub(crate) fn rules_for(version: &RoomVersionId) -> Result<RoomVersionRules> {
    if !SUPPORTED_ROOM_VERSIONS.contains(version) {
        return Err(Error::unsupported_room_version(format!(
            "room version {version} is not supported"
        )));
    }
    version
        .rules()
        .ok_or_else(|| Error::unsupported_room_version("unknown room version"))
}
