//! Presence: set your own, read that of users you share a room with.

use std::{sync::Arc, time::Duration};

use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};

use crate::{
    api::ruma::{Ruma, route},
    ephemeral::co_members,
    error::{Error, Result},
    services::Services,
};

/// Longest status message kept, like Synapse's limit.
const MAX_STATUS_MSG: usize = 1024;

pub fn routes(r: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    let r = route(r, set);
    route(r, get)
}

async fn set(
    s: Arc<Services>,
    req: Ruma<set_presence::v3::Request>,
) -> Result<set_presence::v3::Response> {
    let b = &req.body;
    if b.user_id != *req.user_id() {
        return Err(Error::forbidden("You may only set your own presence"));
    }
    if !matches!(
        b.presence,
        PresenceState::Online | PresenceState::Unavailable | PresenceState::Offline
    ) {
        return Err(Error::invalid_param(format!(
            "Unknown presence state {}",
            b.presence
        )));
    }
    if b.status_msg
        .as_ref()
        .is_some_and(|m| m.len() > MAX_STATUS_MSG)
    {
        return Err(Error::invalid_param("status_msg is too long"));
    }
    s.presence.set(
        &s.rooms,
        req.user_id(),
        b.presence.clone(),
        b.status_msg.clone(),
    )?;
    Ok(set_presence::v3::Response::new())
}

async fn get(
    s: Arc<Services>,
    req: Ruma<get_presence::v3::Request>,
) -> Result<get_presence::v3::Response> {
    let target = &req.body.user_id;
    if target != req.user_id() {
        // Another server's user is known by the rooms shared with them.
        let local = target.server_name() == s.config.server_name;
        if local && !s.users.exists(target)? {
            return Err(Error::not_found("Unknown user"));
        }
        if !co_members(&s.rooms, target)?.contains(req.user_id()) {
            return Err(Error::forbidden("You do not share a room with this user"));
        }
    }
    let Some(view) = s.presence.get(target) else {
        return Ok(get_presence::v3::Response::new(PresenceState::Offline));
    };
    let mut response = get_presence::v3::Response::new(view.presence);
    response.status_msg = view.status_msg;
    response.currently_active = Some(view.currently_active);
    response.last_active_ago = Some(Duration::from_millis(view.last_active_ago));
    Ok(response)
}
