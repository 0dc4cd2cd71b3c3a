//! The encryption sections of a `/sync` response: to-device messages, device-list changes,
//! one-time key counts and unused fallback key types.

use ruma::{OneTimeKeyAlgorithm, UInt, api::client::sync::sync_events::v3, serde::Raw};

use super::E2eeService;
use crate::{error::Result, rooms::RoomService, users::Identity};

/// Where the syncing device's previous sync ended, in what the encryption sections read (the
/// parts of its sync token they need).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Since {
    /// The global stream position: device-list changes after it.
    pub pos: u64,
    /// The last to-device message delivered with that sync.
    pub to_device: u64,
}

/// Fills the response's encryption sections for the device `who` syncs as; returns the
/// `to_device` part of the next token.
///
/// `since.to_device` acknowledges (and deletes) what the device was given with the previous
/// sync; the next messages follow, at most a batch per sync.
pub(crate) fn fill(
    e2ee: &E2eeService,
    rooms: &RoomService,
    who: &Identity,
    since: Option<Since>,
    head: u64,
    response: &mut v3::Response,
) -> Result<u64> {
    let (user, device) = (&who.user_id, &who.device_id);
    let acknowledged = since.map_or(0, |t| t.to_device);
    let (events, last) = e2ee.to_device_batch(user, device, acknowledged, head)?;
    response.to_device.events = events.into_iter().map(Raw::from_json).collect();

    if let Some(since) = since {
        let changes = e2ee.device_list_changes(rooms, user, since.pos, head)?;
        response.device_lists.changed = changes.changed;
        response.device_lists.left = changes.left;
    }

    response.device_one_time_keys_count = e2ee
        .one_time_key_counts(user, device)?
        .into_iter()
        .map(|(alg, n)| {
            (
                OneTimeKeyAlgorithm::from(alg.as_str()),
                UInt::try_from(n).unwrap_or(UInt::MAX),
            )
        })
        .collect();
    response.device_unused_fallback_key_types = Some(
        e2ee.unused_fallback_key_types(user, device)?
            .iter()
            .map(|a| OneTimeKeyAlgorithm::from(a.as_str()))
            .collect(),
    );
    Ok(last.unwrap_or(acknowledged))
}
