//! The webhook Meta calls, at `/webhook` of the bridge's router (`/bridges/whatsapp/webhook`).
//!
//! - `GET` with `hub.mode=subscribe`, `hub.verify_token`, `hub.challenge`: the challenge back
//!   verbatim when the token matches, else 403.
//! - `POST`: only with a valid `X-Hub-Signature-256` (missing: 401; wrong: 403; both change
//!   nothing). The raw body goes to the durable inbox and is on disk before the 200, so an
//!   accepted webhook survives a crash right after; processing happens in the inbox worker, so
//!   the answer is fast and Meta does not time out and retry.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq;

use crate::bridge::Bridge;

/// Meta's webhook bodies are small; this bounds what an unauthenticated caller can make us read.
const MAX_WEBHOOK_BYTES: usize = 3 * 1024 * 1024;

pub fn routes(bridge: Arc<Bridge>) -> Router {
    Router::new()
        .route("/webhook", get(verify).post(receive))
        .with_state(bridge)
}

async fn verify(State(bridge): State<Arc<Bridge>>, RawQuery(query): RawQuery) -> Response {
    let mut mode = None;
    let mut token = None;
    let mut challenge = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "hub.mode" => mode = Some(v.into_owned()),
            "hub.verify_token" => token = Some(v.into_owned()),
            "hub.challenge" => challenge = Some(v.into_owned()),
            _ => {}
        }
    }
    let expected = bridge.config.verify_token.as_bytes();
    let token_ok = token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected)));
    match (mode.as_deref(), challenge) {
        (Some("subscribe"), Some(challenge)) if token_ok => {
            (StatusCode::OK, challenge).into_response()
        }
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

async fn receive(State(bridge): State<Arc<Bridge>>, headers: HeaderMap, body: Body) -> Response {
    // The signature covers the body, so the body must be read to check it; a request without
    // one is refused before anything is read.
    let Some(signature) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
    else {
        return (StatusCode::UNAUTHORIZED, "missing X-Hub-Signature-256").into_response();
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_WEBHOOK_BYTES).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large or unreadable",
        )
            .into_response();
    };
    if !crate::signature::verify(&bridge.config.app_secret, &body, signature) {
        tracing::warn!("webhook with a wrong signature refused");
        return (StatusCode::FORBIDDEN, "invalid signature").into_response();
    }
    if let Err(error) = bridge.store.push_inbox(&body).await {
        // Not accepted: Meta retries.
        tracing::error!(%error, "cannot store the webhook");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    bridge.inbox_wake.notify_one();
    StatusCode::OK.into_response()
}
