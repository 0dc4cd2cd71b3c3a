//! The admin API's tickets: the support API's listing, reading and changes, as a support admin
//! sees them (same filters, same shapes).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    routing::get,
};
use serde_json::Value;

use super::{Administrator, PREFIX};
use crate::{api::support::tickets as support, error::Result, services::Services};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route(&format!("{PREFIX}/tickets"), get(list)).route(
        &format!("{PREFIX}/tickets/{{number}}"),
        get(show).patch(update),
    )
}

/// `?status=&assignee=` (and the support API's other filters), `limit`, `from`:
/// `{"tickets": [...], "next": number|null}`, newest first.
async fn list(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    q: Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let caller = admin.caller(&s.support.bot);
    support::list(State(s), caller, q).await
}

async fn show(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    number: Path<String>,
) -> Result<Json<Value>> {
    let caller = admin.caller(&s.support.bot);
    support::get_one(State(s), caller, number).await
}

/// `{"status", "assignee", "priority", "title"}`, each optional (`"assignee": null` unassigns).
async fn update(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    number: Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let caller = admin.caller(&s.support.bot);
    support::update(State(s), caller, number, body).await
}
