//! Discovery: `/versions`, `/.well-known/matrix/client`, `/capabilities`, and for other servers
//! `/.well-known/matrix/server` (the federation delegation).

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, Router, extract::State, routing::get};
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{Capabilities, RoomVersionStability, RoomVersionsCapability},
    },
    get_supported_versions,
};

use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    events::SUPPORTED_ROOM_VERSIONS,
    services::Services,
};

/// The spec versions whose client-server API this server implements.
const SPEC_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16",
];

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, versions);
    let r = route(r, well_known);
    let r = r.route("/.well-known/matrix/server", get(server_well_known));
    route(r, capabilities)
}

/// Where other servers reach this one's federation listener, when `[federation]
/// well_known_server` delegates it; `404` otherwise (peers then use the server name's host on
/// port 8448, as with Synapse's default).
async fn server_well_known(State(s): State<Arc<Services>>) -> Result<Json<serde_json::Value>> {
    let federation = &s.config.federation;
    let delegated = federation.well_known_server.trim();
    if !federation.enabled || delegated.is_empty() {
        return Err(Error::not_found("This server does not delegate federation"));
    }
    Ok(Json(serde_json::json!({ "m.server": delegated })))
}

async fn versions(
    _: Arc<Services>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(
        SPEC_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
    );
    response.unstable_features = BTreeMap::from([("org.matrix.msc3827.stable".to_owned(), true)]);
    Ok(response)
}

async fn well_known(
    s: Arc<Services>,
    _: Ruma<discover_homeserver::Request>,
) -> Result<discover_homeserver::Response> {
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(
        s.config.public_base_url(),
    )))
}

async fn capabilities(
    s: Arc<Services>,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<get_capabilities::v3::Response> {
    let mut caps = Capabilities::new();
    caps.room_versions = RoomVersionsCapability::new(
        s.config.rooms.default_version.clone(),
        SUPPORTED_ROOM_VERSIONS
            .iter()
            .map(|v| (v.clone(), RoomVersionStability::Stable))
            .collect(),
    );
    caps.change_password.enabled = true;
    Ok(get_capabilities::v3::Response::new(caps))
}
