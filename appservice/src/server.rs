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

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ruma::events::{AnyTimelineEvent, AnyToDeviceEvent};
use ruma::serde::Raw;
use ruma::thirdparty::{Location, Protocol, User};
use ruma::{OwnedRoomAliasId, OwnedUserId, RoomAliasId, UserId};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, HandlerError};
use crate::events::{EphemeralEvent, Transaction};
use crate::txn_store::TxnStore;

/// Largest request body accepted. A transaction holds at most ~100 events of at most 64 KiB
/// each plus EDUs; this leaves room for homeservers that batch more.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What a bridge or bot implements to receive what the homeserver pushes. Every method has a
/// default, so a bot overrides only what it needs. Transactions are handled one at a time;
/// queries and pings may run while a transaction is being handled.
pub trait Handler: Send + Sync + 'static {
    /// A new transaction. The default hands each timeline event to [`Handler::on_event`] in
    /// order, then each EDU to [`Handler::on_ephemeral`], then each to-device message to
    /// [`Handler::on_to_device`], and stops at the first error (the whole transaction is then
    /// redelivered, so handlers should tolerate seeing its first events again).
    fn on_transaction(
        &self,
        txn: &Transaction,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            for raw in &txn.events {
                match raw.deserialize() {
                    Ok(event) => self.on_event(event, raw).await?,
                    Err(error) => self.on_invalid_event(raw, error).await?,
                }
            }
            for raw in &txn.ephemeral {
                match raw.deserialize() {
                    Ok(edu) => self.on_ephemeral(edu).await?,
                    Err(error) => {
                        tracing::warn!(txn_id = %txn.id, %error, "skipping an EDU that does not parse")
                    }
                }
            }
            for raw in &txn.to_device {
                self.on_to_device(raw).await?;
            }
            Ok(())
        }
    }

    /// One timeline event, typed; `raw` has every field, also those ruma does not model.
    fn on_event(
        &self,
        event: AnyTimelineEvent,
        raw: &Raw<AnyTimelineEvent>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (event, raw);
        async { Ok(()) }
    }

    /// A timeline event that does not deserialize (e.g. a known type with malformed content).
    /// The default logs and skips it: retrying would not make it parse.
    fn on_invalid_event(
        &self,
        raw: &Raw<AnyTimelineEvent>,
        error: serde_json::Error,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let event_id = raw.get_field::<String>("event_id").ok().flatten();
        tracing::warn!(?event_id, %error, "skipping a timeline event that does not parse");
        async { Ok(()) }
    }

    /// One EDU (receipt, typing or presence).
    fn on_ephemeral(
        &self,
        edu: EphemeralEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = edu;
        async { Ok(()) }
    }

    /// One to-device message (MSC2409); `to_user_id` and `to_device_id` are fields of `raw`.
    fn on_to_device(
        &self,
        raw: &Raw<AnyToDeviceEvent>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = raw;
        async { Ok(()) }
    }

    /// The homeserver asks whether `user_id` (in our namespace) exists. Return `true` after
    /// creating it (e.g. with [`crate::Intent::ensure_registered`]); `false` answers 404.
    fn query_user(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        let _ = user_id;
        async { Ok(false) }
    }

    /// The homeserver asks whether `alias` exists. Return `true` after creating the room with
    /// that alias; `false` answers 404.
    fn query_room_alias(
        &self,
        alias: &RoomAliasId,
    ) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        let _ = alias;
        async { Ok(false) }
    }

    /// A ping from the homeserver, with the `transaction_id` the appservice gave to
    /// `POST /_matrix/client/v1/appservice/{id}/ping`, if any.
    fn on_ping(&self, transaction_id: Option<&str>) -> impl Future<Output = ()> + Send {
        let _ = transaction_id;
        async {}
    }

    /// The metadata of a third-party `protocol` this bridge serves (listed in its
    /// registration's `protocols`); `None` answers 404.
    fn thirdparty_protocol(
        &self,
        protocol: &str,
    ) -> impl Future<Output = Result<Option<Protocol>, HandlerError>> + Send {
        let _ = protocol;
        async { Ok(None) }
    }

    /// Third-party users matching `fields` on `protocol`, or with `protocol` `None` the ones a
    /// Matrix user stands for (`fields` then holds just `userid`). Empty answers 404.
    fn thirdparty_users(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<User>, HandlerError>> + Send {
        let _ = (protocol, fields);
        async { Ok(Vec::new()) }
    }

    /// Third-party locations (portal rooms) matching `fields` on `protocol`, or with `protocol`
    /// `None` the ones a room alias bridges to (`fields` then holds just `alias`). Empty
    /// answers 404.
    fn thirdparty_locations(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Location>, HandlerError>> + Send {
        let _ = (protocol, fields);
        async { Ok(Vec::new()) }
    }
}

pub(crate) struct ServerState<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) hs_token: String,
    txns: TxnStore,
    /// Held for the whole processing of a transaction: transactions are handled strictly one
    /// after the other, and a retry that arrives while its first attempt still runs waits and
    /// then finds the txnId done.
    serial: tokio::sync::Mutex<()>,
}

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

/// Checks the homeserver's token: 401 when none is given, 403 when it is wrong.
pub(crate) fn authorize(
    expected: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), ApiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let from_query = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    });
    let given: Vec<&str> = from_header
        .into_iter()
        .chain(from_query.as_deref())
        .collect();
    if given.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "Missing homeserver token",
        ));
    }
    let matches = |t: &str| bool::from(t.as_bytes().ct_eq(expected.as_bytes()));
    if given.iter().all(|t| matches(t)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Invalid homeserver token",
        ))
    }
}

fn ok_empty() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response()
}

pub(crate) fn internal(what: &str, error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "{what}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", what)
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

/// A shared handler is a handler, so a bridge can keep an `Arc` to the state its handler
/// updates.
impl<H: Handler> Handler for Arc<H> {
    fn on_transaction(
        &self,
        txn: &Transaction,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).on_transaction(txn)
    }

    fn query_user(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        (**self).query_user(user_id)
    }

    fn query_room_alias(
        &self,
        alias: &RoomAliasId,
    ) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        (**self).query_room_alias(alias)
    }

    fn on_ping(&self, transaction_id: Option<&str>) -> impl Future<Output = ()> + Send {
        (**self).on_ping(transaction_id)
    }

    fn thirdparty_protocol(
        &self,
        protocol: &str,
    ) -> impl Future<Output = Result<Option<Protocol>, HandlerError>> + Send {
        (**self).thirdparty_protocol(protocol)
    }

    fn thirdparty_users(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<User>, HandlerError>> + Send {
        (**self).thirdparty_users(protocol, fields)
    }

    fn thirdparty_locations(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Location>, HandlerError>> + Send {
        (**self).thirdparty_locations(protocol, fields)
    }
}
