//! The federation listener's router (`[federation] listen`): the Server-Server API.
//!
//! Without authentication (the answers sign themselves): this server's keys
//! (`GET /_matrix/key/v2/server`), the keys it vouches for as a notary (`key_query.rs`), its
//! version. Everything else is signed (`peer.rs` checks it before the handler runs), one
//! handler file per area. Every other path answers `404 M_UNRECOGNIZED`, as Synapse does for an
//! endpoint it lacks, so peers fall back rather than retry.

mod events;
mod invite;
mod key_query;
mod media;
mod membership;
mod peer;
mod query;
mod send;
mod user_keys;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::{Method, StatusCode},
    routing::{get, post, put},
};
use serde_json::{Value, json};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{error::Error, services::Services};

/// Largest request body a peer may send: a transaction of 50 PDUs and 100 EDUs fits (Synapse
/// caps PDUs at 64 KiB).
const MAX_BODY: usize = 4 << 20;

pub fn router(services: Arc<Services>) -> Router {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        .route(
            "/_matrix/key/v2/query",
            post(key_query::query).layer(DefaultBodyLimit::max(key_query::MAX_BODY)),
        )
        .route(
            "/_matrix/key/v2/query/{server_name}",
            get(key_query::query_one),
        )
        .route("/_matrix/federation/v1/version", get(version))
        .route("/_matrix/federation/v1/query/profile", get(query::profile))
        .route(
            "/_matrix/federation/v1/publicRooms",
            get(query::public_rooms).post(query::public_rooms),
        )
        .route(
            "/_matrix/federation/v1/query/directory",
            get(query::directory),
        )
        .route(
            "/_matrix/federation/v1/user/keys/query",
            post(user_keys::query),
        )
        .route(
            "/_matrix/federation/v1/user/keys/claim",
            post(user_keys::claim),
        )
        .route(
            "/_matrix/federation/v1/user/devices/{user_id}",
            get(user_keys::devices),
        )
        .route(
            "/_matrix/federation/v1/send/{txn_id}",
            put(send::transaction),
        )
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(media::download),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(media::thumbnail),
        )
        .route(
            "/_matrix/federation/v1/event/{event_id}",
            get(events::event),
        )
        .route("/_matrix/federation/v1/state/{room_id}", get(events::state))
        .route(
            "/_matrix/federation/v1/state_ids/{room_id}",
            get(events::state_ids),
        )
        .route(
            "/_matrix/federation/v1/backfill/{room_id}",
            get(events::backfill),
        )
        .route(
            "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
            get(events::event_auth),
        )
        .route(
            "/_matrix/federation/v1/get_missing_events/{room_id}",
            post(events::get_missing_events),
        )
        .route(
            "/_matrix/federation/v2/invite/{room_id}/{event_id}",
            put(invite::invite),
        )
        .route(
            "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
            get(membership::make_join),
        )
        .route(
            "/_matrix/federation/v2/send_join/{room_id}/{event_id}",
            put(membership::send_join),
        )
        .route(
            "/_matrix/federation/v1/make_leave/{room_id}/{user_id}",
            get(membership::make_leave),
        )
        .route(
            "/_matrix/federation/v1/make_knock/{room_id}/{user_id}",
            get(membership::make_knock),
        )
        .route(
            "/_matrix/federation/v1/send_knock/{room_id}/{event_id}",
            put(membership::send_knock),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{room_id}/{event_id}",
            put(membership::send_leave),
        )
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            tracing::debug!(%method, path = uri.path(), "unrecognized federation endpoint");
            Error::unrecognized(StatusCode::NOT_FOUND)
        })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(Error::internal(
                    "request handler panicked",
                ))
            },
        ))
        .with_state(services)
}

async fn server_keys(State(s): State<Arc<Services>>) -> Result<Json<Value>, Error> {
    let now = u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get());
    crate::federation::keys::server_keys(&s.rooms.key, now).map(Json)
}

async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Charla", "version": env!("CARGO_PKG_VERSION") } }))
}

/// The federation service: present whenever this router serves (`[federation] enabled`).
fn federation(s: &Services) -> Result<&crate::federation::Federation, Error> {
    s.federation
        .as_deref()
        .ok_or_else(|| Error::forbidden("Federation is disabled on this server"))
}
