//! `GET /_matrix/app/v1/thirdparty/*`: a bridge describes the third-party networks it serves.
//!
//! The homeserver asks here when its users call `/thirdparty/*` on the Client-Server API (the
//! protocols an appservice lists in its registration's `protocols`). The answers come from the
//! optional [`Handler`] methods `thirdparty_protocol`, `thirdparty_users` and
//! `thirdparty_locations`; a bridge that implements none answers 404 `M_NOT_FOUND` everywhere,
//! which homeservers take as "nothing here". As the spec says, an empty lookup is 404 too.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::endpoint::{ServerState, authorize, internal};
use crate::error::ApiError;
use crate::handler::Handler;

type AppState<H> = Arc<ServerState<H>>;

/// Adds the third-party routes to the appservice router.
pub(crate) fn routes<H: Handler>(router: Router<AppState<H>>) -> Router<AppState<H>> {
    let p = "/_matrix/app/v1/thirdparty";
    router
        .route(&format!("{p}/protocol/{{protocol}}"), get(protocol::<H>))
        .route(&format!("{p}/user/{{protocol}}"), get(users::<H>))
        .route(&format!("{p}/location/{{protocol}}"), get(locations::<H>))
        .route(&format!("{p}/user"), get(user_by_id::<H>))
        .route(&format!("{p}/location"), get(location_by_alias::<H>))
}

/// The query as lookup fields, without the legacy `access_token`.
fn fields(query: Option<&str>) -> BTreeMap<String, String> {
    let mut fields: BTreeMap<String, String> = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    fields.remove("access_token");
    fields
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", what.to_owned())
}

/// A non-empty list as JSON; an empty one is the spec's 404.
fn list<T: Serialize>(items: Vec<T>, none: &str) -> Result<Response, ApiError> {
    if items.is_empty() {
        return Err(not_found(none));
    }
    Ok(axum::Json(items).into_response())
}

async fn protocol<H: Handler>(
    State(state): State<AppState<H>>,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.hs_token, &headers, query.as_deref())?;
    match state.handler.thirdparty_protocol(&protocol).await {
        Ok(Some(info)) => Ok(axum::Json(info).into_response()),
        Ok(None) => Err(not_found("Unknown protocol")),
        Err(e) => Err(internal("third-party protocol query failed", e)),
    }
}

async fn users<H: Handler>(
    State(state): State<AppState<H>>,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.hs_token, &headers, query.as_deref())?;
    let fields = fields(query.as_deref());
    match state
        .handler
        .thirdparty_users(Some(&protocol), &fields)
        .await
    {
        Ok(found) => list(found, "No users were found"),
        Err(e) => Err(internal("third-party user query failed", e)),
    }
}

async fn locations<H: Handler>(
    State(state): State<AppState<H>>,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.hs_token, &headers, query.as_deref())?;
    let fields = fields(query.as_deref());
    match state
        .handler
        .thirdparty_locations(Some(&protocol), &fields)
        .await
    {
        Ok(found) => list(found, "No locations were found"),
        Err(e) => Err(internal("third-party location query failed", e)),
    }
}

/// The one required key of a reverse lookup, alone.
fn required(query: Option<&str>, key: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let value = fields(query).remove(key).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
            format!("Missing query parameter '{key}'"),
        )
    })?;
    Ok(BTreeMap::from([(key.to_owned(), value)]))
}

async fn user_by_id<H: Handler>(
    State(state): State<AppState<H>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.hs_token, &headers, query.as_deref())?;
    let fields = required(query.as_deref(), "userid")?;
    match state.handler.thirdparty_users(None, &fields).await {
        Ok(found) => list(found, "No users were found"),
        Err(e) => Err(internal("third-party user query failed", e)),
    }
}

async fn location_by_alias<H: Handler>(
    State(state): State<AppState<H>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state.hs_token, &headers, query.as_deref())?;
    let fields = required(query.as_deref(), "alias")?;
    match state.handler.thirdparty_locations(None, &fields).await {
        Ok(found) => list(found, "No locations were found"),
        Err(e) => Err(internal("third-party location query failed", e)),
    }
}
