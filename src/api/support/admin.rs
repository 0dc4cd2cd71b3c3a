//! `/agents`, `/metrics`, `/audit` and the OpenAPI description.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
    response::IntoResponse,
};
use serde_json::{Value, json};

use super::{Caller, field_error, limit};
use crate::{
    error::Result,
    services::Services,
    support::{metrics, now_ms},
};

/// The OpenAPI 3.1 description of this API, kept in `docs/`.
const OPENAPI: &str = include_str!("../../../docs/support-api.json");

pub async fn openapi() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Every agent with their availability and current load.
pub async fn agents(State(s): State<Arc<Services>>, caller: Caller) -> Result<Json<Value>> {
    caller.require_staff()?;
    let mut out = Vec::new();
    for a in &s.config.support.agents {
        let presence = s
            .presence
            .get(&a.user)
            .map(|p| p.presence.to_string())
            .unwrap_or_else(|| "offline".into());
        let load = s.support.index.load(a.user.as_str())?;
        let online = s.presence.is_online(&a.user);
        out.push(json!({
            "user_id": a.user,
            "capacity": a.capacity,
            "presence": presence,
            "load": load,
            "available": online && load < a.capacity as usize,
        }));
    }
    Ok(Json(json!({ "agents": out })))
}

fn ms_param(q: &HashMap<String, String>, field: &str, default: u64) -> Result<u64> {
    q.get(field)
        .map(|v| {
            v.parse()
                .map_err(|_| field_error(field, "milliseconds since the epoch"))
        })
        .transpose()
        .map(|v| v.unwrap_or(default))
}

/// Response times and volumes of the conversations created in `[from, to)` (default: the
/// last 30 days).
pub async fn metrics(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let now = now_ms();
    let to = ms_param(&q, "to", now + 1)?;
    let from = ms_param(&q, "from", to.saturating_sub(30 * 86_400_000))?;
    if from > to {
        return Err(field_error("from", "from must not be after to"));
    }
    let records = s.support.index.created_between(from, to)?;
    let mut m = metrics::compute(from, to, &records);
    if caller.role == crate::support::Role::Agent {
        // Agents see the overall figures and their own, not their colleagues'.
        m.per_agent.retain(|a, _| a == caller.user.as_str());
    }
    Ok(Json(json!(m)))
}

/// The audit log, newest first (admins only).
pub async fn audit(
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
    let (entries, next) = s.support.audit.list(limit, before)?;
    Ok(Json(
        json!({ "entries": entries, "next": next.map(|n| n.to_string()) }),
    ))
}
