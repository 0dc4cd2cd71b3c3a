//! The authorization rules, applied through ruma's state-res before anything is stored.

use ruma::{
    EventId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};
use serde_json::value::RawValue as RawJsonValue;

use super::Pdu;
use crate::error::{Error, Result};

/// The `(type, state_key)` pairs whose current events become a new event's `auth_events`.
pub fn auth_types(
    rules: &RoomVersionRules,
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &RawJsonValue,
) -> Result<Vec<(StateEventType, String)>> {
    state_res::auth_types_for_event(kind, sender, state_key, content, &rules.authorization)
        .map_err(|e| Error::bad_json(format!("invalid event content: {e}")))
}

/// Checks `pdu` against the authorization rules: its own `auth_events` (state-independent
/// rules) and the room's current state (state-dependent rules). A refusal is `M_FORBIDDEN`
/// with the rule that failed, which is what Synapse tells clients too.
pub fn check_auth(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<()> {
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)
        .and_then(|()| {
            state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
        })
        .map_err(|reason| {
            tracing::debug!(event_id = %pdu.event_id, %reason, "event refused by auth rules");
            Error::forbidden(reason)
        })
}
