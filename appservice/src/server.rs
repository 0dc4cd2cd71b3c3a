//! The appservice side of the Application Service API: the HTTP endpoints a homeserver calls.
//!
//! - `PUT /_matrix/app/v1/transactions/{txnId}`: events, EDUs and to-device messages. Processed
//!   one transaction at a time, in arrival order; answered `{}` only after the [`Handler`]
//!   finished and the txnId is on disk, so a 200 means "done" and a retry of a done txnId is a
//!   no-op. A handler error answers 500 and does not record the txnId: the homeserver retries.
//! - `GET /_matrix/app/v1/users/{userId}`, `GET /_matrix/app/v1/rooms/{roomAlias}`: queries.
//! - `POST /_matrix/app/v1/ping`.
//! - `GET /_matrix/app/v1/thirdparty/*`: third-party protocols and lookups (`thirdparty.rs`).
//! - The unprefixed legacy paths (`/transactions/…`, `/users/…`, `/rooms/…`) that homeservers
//!   fall back to.
//!
//! Every endpoint checks the `hs_token` (`Authorization: Bearer`, or the legacy `access_token`
//! query parameter; both must match if both are sent): none → 401 `M_UNAUTHORIZED`, a wrong one
//! → 403 `M_FORBIDDEN`. Unknown paths answer 404 and known paths with another method 405, both
//! `M_UNRECOGNIZED`, as the spec asks.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ruma::events::{AnyTimelineEvent, AnyToDeviceEvent};
use ruma::serde::Raw;
use ruma::{OwnedRoomAliasId, OwnedUserId};
use serde::Deserialize;

use crate::endpoint::{ServerState, authorize, internal};
use crate::error::ApiError;
use crate::events::{EphemeralEvent, Transaction};
pub use crate::handler::Handler;
use crate::txn_store::TxnStore;

/// Largest request body accepted. A transaction holds at most ~100 events of at most 64 KiB
/// each plus EDUs; this leaves room for homeservers that batch more.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The appservice router. Serve it with `axum::serve`. It has its own fallbacks (the spec's
/// `M_UNRECOGNIZED`), so to serve other routes on the same port (a bridge's webhooks), merge
/// routers *without* a fallback into it: `router(..).merge(webhooks)`.
pub fn router<H: Handler>(handler: Arc<H>, hs_token: impl Into<String>, txns: TxnStore) -> Router {
    let state = Arc::new(ServerState {
        handler,
        hs_token: hs_token.into(),
        txns,
        serial: tokio::sync::Mutex::new(()),
    });
    let mut router = Router::new().route("/_matrix/app/v1/ping", post(ping::<H>));
    for prefix in ["/_matrix/app/v1", ""] {
        router = router
            .route(
                &format!("{prefix}/transactions/{{txn_id}}"),
                put(transaction::<H>),
            )
            .route(&format!("{prefix}/users/{{user_id}}"), get(query_user::<H>))
            .route(
                &format!("{prefix}/rooms/{{room_alias}}"),
                get(query_room_alias::<H>),
            );
    }
    crate::thirdparty::routes(router)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "M_UNRECOGNIZED",
                "Unrecognized request",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "M_UNRECOGNIZED",
                "Unrecognized request",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn ok_empty() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response()
}

/// Reads the body, or answers the Matrix error for one that is too large or unreadable. Called
/// only after [`authorize`]: whoever lacks the homeserver's token gets nothing read.
async fn body_bytes(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "M_TOO_LARGE",
                    "Request body too large",
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", "Unreadable body")
            }
        })
}

/// Parses a JSON body: `M_NOT_JSON` for text that is not JSON, `M_BAD_JSON` for JSON of the
/// wrong shape. An empty body counts as `{}`.
fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", e.to_string()))?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", e.to_string()))
}

/// The transaction body. `null` for a list is taken as empty; the stable keys win over MSC2409's
/// when a homeserver sends both (Synapse does when both flags are set).
#[derive(Deserialize)]
struct TransactionBody {
    #[serde(default)]
    events: Option<Vec<Raw<AnyTimelineEvent>>>,
    #[serde(default)]
    ephemeral: Option<Vec<Raw<EphemeralEvent>>>,
    #[serde(default, rename = "de.sorunome.msc2409.ephemeral")]
    ephemeral_unstable: Option<Vec<Raw<EphemeralEvent>>>,
    #[serde(default)]
    to_device: Option<Vec<Raw<AnyToDeviceEvent>>>,
    #[serde(default, rename = "de.sorunome.msc2409.to_device")]
    to_device_unstable: Option<Vec<Raw<AnyToDeviceEvent>>>,
}

async fn transaction<H: Handler>(
    State(state): State<Arc<ServerState<H>>>,
    Path(txn_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state.hs_token, &headers, query.as_deref())?;
    let body: TransactionBody = parse_json(&body_bytes(body).await?)?;
    let txn = Transaction {
        id: txn_id,
        events: body.events.unwrap_or_default(),
        ephemeral: body
            .ephemeral
            .or(body.ephemeral_unstable)
            .unwrap_or_default(),
        to_device: body
            .to_device
            .or(body.to_device_unstable)
            .unwrap_or_default(),
    };

    let _serial = state.serial.lock().await;
    if state
        .txns
        .is_done(&txn.id)
        .map_err(|e| internal("transaction store failed", e))?
    {
        tracing::debug!(txn_id = %txn.id, "transaction already processed");
        return Ok(ok_empty());
    }
    if let Err(error) = state.handler.on_transaction(&txn).await {
        tracing::warn!(txn_id = %txn.id, %error, "handler failed; the homeserver will retry");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "The appservice could not process the transaction",
        ));
    }
    state
        .txns
        .mark_done(&txn.id)
        .await
        .map_err(|e| internal("transaction store failed", e))?;
    Ok(ok_empty())
}

async fn query_user<H: Handler>(
    State(state): State<Arc<ServerState<H>>>,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.hs_token, &headers, query.as_deref())?;
    let user_id = OwnedUserId::try_from(user_id).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            format!("Invalid user ID: {e}"),
        )
    })?;
    match state.handler.query_user(&user_id).await {
        Ok(true) => Ok(ok_empty()),
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            "No such user",
        )),
        Err(e) => Err(internal("user query failed", e)),
    }
}

async fn query_room_alias<H: Handler>(
    State(state): State<Arc<ServerState<H>>>,
    Path(alias): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.hs_token, &headers, query.as_deref())?;
    let alias = OwnedRoomAliasId::try_from(alias).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            format!("Invalid room alias: {e}"),
        )
    })?;
    match state.handler.query_room_alias(&alias).await {
        Ok(true) => Ok(ok_empty()),
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            "No such room alias",
        )),
        Err(e) => Err(internal("room alias query failed", e)),
    }
}

#[derive(Deserialize)]
struct PingBody {
    #[serde(default)]
    transaction_id: Option<String>,
}

async fn ping<H: Handler>(
    State(state): State<Arc<ServerState<H>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state.hs_token, &headers, query.as_deref())?;
    let body: PingBody = parse_json(&body_bytes(body).await?)?;
    state.handler.on_ping(body.transaction_id.as_deref()).await;
    Ok(ok_empty())
}
