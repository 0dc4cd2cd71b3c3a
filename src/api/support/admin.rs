//! `/agents`, `/metrics`, `/audit` and the OpenAPI description.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
    response::IntoResponse,
};
use serde_json::{Value, json};

use super::{Caller, field_error, limit, ms_param};
use crate::{
    error::Result,
    services::Services,
    support::{now_ms, queries},
};

/// The OpenAPI 3.1 description of this API, kept in `docs/`.
const OPENAPI: &str = include_str!("../../../docs/support-api.json");

pub(super) async fn openapi() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Every agent with their availability and current load.
pub(super) async fn agents(State(s): State<Arc<Services>>, caller: Caller) -> Result<Json<Value>> {
    caller.require_staff()?;
    let agents = queries::agents(&s.desk())?;
    let out: Vec<Value> = agents
        .into_iter()
        .map(|(agent, status)| {
            json!({
                "user_id": agent.user,
                "capacity": agent.capacity,
                "presence": status.presence,
                "load": status.load,
                "available": status.available,
            })
        })
        .collect();
    Ok(Json(json!({ "agents": out })))
}

/// Response times and volumes of the conversations created in `[from, to)` (default: the
/// last 30 days).
pub(super) async fn metrics(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let now = now_ms();
    let to = ms_param(&q, "to")?.unwrap_or(now + 1);
    let from = ms_param(&q, "from")?.unwrap_or(to.saturating_sub(30 * 86_400_000));
    if from > to {
        return Err(field_error("from", "from must not be after to"));
    }
    let m = queries::metrics(&s.desk(), &caller.viewer(), from, to)?;
    Ok(Json(json!(m)))
}

/// The audit log, newest first (admins only).
pub(super) async fn audit(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    caller.require_admin()?;
    let before = q
        .get("from")
        .map(|v| {
            v.parse()
                .map_err(|_| field_error("from", "an audit entry id"))
        })
        .transpose()?;
    let limit = limit(q.get("limit").map(String::as_str))?;
    let (entries, next) = queries::audit(&s.desk(), limit, before)?;
    Ok(Json(
        json!({ "entries": entries, "next": next.map(|n| n.to_string()) }),
    ))
}
