//! The encryption sections of a `/sync` response: to-device messages, device-list changes,
//! one-time key counts and unused fallback key types.

use ruma::{OneTimeKeyAlgorithm, UInt, api::client::sync::sync_events::v3, serde::Raw};

use crate::{error::Result, sync::SyncContext, sync::SyncToken};

/// Fills the response's encryption sections; returns the `to_device` part of the next token.
///
/// The token's `to_device` part acknowledges (and deletes) what the device was given with it;
/// the next messages follow, at most a batch per sync.
pub fn fill(
    ctx: &SyncContext<'_>,
    since: Option<SyncToken>,
    head: u64,
    response: &mut v3::Response,
) -> Result<u64> {
    let e2ee = &ctx.s.e2ee;
    let (user, device) = (&ctx.who.user_id, ctx.who.device_id.as_str());
    let acknowledged = since.map_or(0, |t| t.to_device);
    let (events, last) = e2ee.to_device_batch(user, device, acknowledged, head)?;
    response.to_device.events = events.into_iter().map(Raw::from_json).collect();

    if let Some(since) = since {
        let changes = e2ee.device_list_changes(ctx.s.rooms, user, since.pos, head)?;
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
