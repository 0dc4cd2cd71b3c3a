//! HTTP: the router, the ruma extractor and the endpoint areas.

pub mod admin;
pub mod client;
pub mod client_ip;
pub mod federation;
pub mod ruma;
pub mod support;
pub mod webchat;

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{Method, StatusCode, header},
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
};

use crate::{error::Error, metrics::HttpMetrics, services::Services};

/// Every route of the server, with CORS for browser clients and `M_UNRECOGNIZED` for the rest;
/// with `metrics`, every request is counted and timed by its route template.
pub fn router(services: Arc<Services>, metrics: Option<&Arc<HttpMetrics>>) -> Router {
    let limit = services.config.limits.max_request_bytes;
    let r = Router::new();
    let r = client::routes(r);
    let r = admin::routes(r);
    let r = support::routes(r);
    let r = webchat::routes(r, services.webchat.is_some());
    let r = r
        .fallback(|method: Method, uri: http::Uri| async move {
            tracing::debug!(%method, path = uri.path(), "unrecognized endpoint");
            Error::unrecognized(StatusCode::NOT_FOUND)
        })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        })
        // The extractor enforces the configured limit with a Matrix error; this is the backstop.
        .layer(DefaultBodyLimit::max(limit.saturating_add(1)))
        .layer(
            CorsLayer::new()
                .allow_origin(allowed_origins(&services))
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::DELETE,
                    Method::PATCH,
                    Method::OPTIONS,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::ACCEPT,
                    header::HeaderName::from_static("x-requested-with"),
                ])
                // The web chat widget reads it on a 429.
                .expose_headers([header::RETRY_AFTER]),
        )
        // A bug that panics in a handler answers that request with a 500 instead of dropping the
        // connection. Nothing a handler shares is left poisoned: the server's locks don't poison.
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(Error::internal(
                    "request handler panicked",
                ))
            },
        ));
    crate::metrics::http::instrument(r, metrics).with_state(services)
}

/// Who may call from a browser: any page for the Matrix and admin APIs (clients run on any
/// origin, and every call carries a token), only `[webchat] allowed_origins` and the server's
/// own pages for the web chat API (its answers are the customer's conversation).
fn allowed_origins(services: &Arc<Services>) -> AllowOrigin {
    let services = services.clone();
    AllowOrigin::predicate(move |_origin, parts| {
        if !webchat::is_webchat_path(parts.uri.path()) {
            return true;
        }
        services
            .webchat
            .as_ref()
            .is_some_and(|web| webchat::check_origin(web, &parts.headers).is_ok())
    })
}
