//! The admin API's support conversations: the support API's listing, reading and assignment as
//! a support admin sees them (same filters, same shapes), closing, and the export of a
//! conversation's whole history, a page at a time.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{Administrator, PREFIX};
use crate::{
    api::support::{conversations as support, field_error},
    error::Result,
    services::Services,
    support::{actions, conversation::Status, export},
};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let p = |path: &str| format!("{PREFIX}/conversations{path}");
    r.route(&p(""), get(list))
        .route(&p("/{room_id}"), get(show))
        .route(&p("/{room_id}/assign"), post(assign))
        .route(&p("/{room_id}/close"), post(close))
        .route(&p("/{room_id}/export"), get(export))
}

type Params = Query<HashMap<String, String>>;

/// `?status=&assignee=&label=` (and the support API's other filters), `limit`, `from`:
/// `{"conversations": [...], "next": token|null}`.
async fn list(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    q: Params,
) -> Result<Json<Value>> {
    let caller = admin.caller(&s.support.bot);
    support::list(State(s), caller, q).await
}

/// The conversation with its recent history (`?limit=`).
async fn show(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    room_id: Path<String>,
    q: Params,
) -> Result<Json<Value>> {
    let caller = admin.caller(&s.support.bot);
    support::get_one(State(s), caller, room_id, q).await
}

/// `{"user_id": agent}`: assigns it, as the support API does.
async fn assign(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    room_id: Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let caller = admin.caller(&s.support.bot);
    support::assign(State(s), caller, room_id, body).await
}

/// Closes the conversation (closing a closed one changes nothing).
async fn close(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    let caller = admin.caller(&s.support.bot);
    let desk = s.desk();
    let room_id = caller.staff_conversation(&desk, &room_id)?;
    let details = json!({ "status": Status::Closed.as_str() });
    actions::close(&desk, &room_id, &caller.actor(), details).await?;
    support::fresh(&desk, &room_id)
}

/// Most timeline events one export page reads.
const MAX_EXPORT_PAGE: usize = 1000;

/// A page of the conversation's history for export, oldest first: `?from=` (the `next` of the
/// previous page) and `?limit=` (timeline events read, 1 to 1000, default 500). Answers the
/// conversation, its messages (`support::export`) and `next`, absent on the last page.
async fn export(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(room_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let caller = admin.caller(&s.support.bot);
    let desk = s.desk();
    let room_id = caller.staff_conversation(&desk, &room_id)?;
    let from = match q.get("from") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| field_error("from", "the next of the previous page"))?,
    };
    let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
        None => 500,
        Some(Ok(n)) if (1..=MAX_EXPORT_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(field_error(
                "limit",
                format!("limit must be an integer from 1 to {MAX_EXPORT_PAGE}"),
            ));
        }
    };
    let media_base = format!(
        "{}/_matrix/client/v1/media/download",
        s.config.public_base_url()
    );
    let page = export::page(&desk, &room_id, from, limit, &media_base)?;
    let Json(conversation) = support::fresh(&desk, &room_id)?;
    Ok(Json(json!({
        "room_id": room_id,
        "conversation": conversation,
        "messages": page.messages,
        "next": page.next.map(|n| n.to_string()),
    })))
}
