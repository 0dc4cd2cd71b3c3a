//! `GET /api/support/v1/search?q=…`: messages of the desk's conversations that match, each
//! with its conversation, for staff within what they see (`support::search`).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
};
use serde_json::{Value, json};

use super::{Caller, conversations, field_error, limit};
use crate::{
    error::Result,
    search::{
        Order, PageKey,
        desk::{MessageSearch, messages},
    },
    services::Services,
    support::queries,
};

/// Longest `q`, in bytes.
const MAX_Q_BYTES: usize = 1024;
/// Results per page unless `limit` says.
const DEFAULT_LIMIT: usize = 20;

/// A `q` parameter: words to search for, not empty, not huge.
pub(super) fn words_param(q: &str) -> Result<&str> {
    let q = q.trim();
    if q.is_empty() {
        return Err(field_error("q", "q must not be empty"));
    }
    if q.len() > MAX_Q_BYTES {
        return Err(field_error(
            "q",
            format!("q must be at most {MAX_Q_BYTES} bytes"),
        ));
    }
    Ok(q)
}

pub(super) async fn search(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    s.search_limiter.check(caller.user.as_str())?;
    s.search.require_enabled()?;
    let words = words_param(
        q.get("q")
            .ok_or_else(|| field_error("q", "q is required"))?,
    )?;
    let order = match q.get("order").map(String::as_str) {
        None | Some("recent") => Order::Recent,
        Some("rank") => Order::Rank,
        Some(_) => return Err(field_error("order", "order must be recent or rank")),
    };
    let after = q
        .get("from")
        .map(|t| PageKey::decode(t).ok_or_else(|| field_error("from", "not a page token")))
        .transpose()?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => limit(Some(l))?.min(100),
    };
    let desk = s.desk();
    let viewer = caller.viewer();
    let filter = queries::restricted(&desk, &viewer, conversations::filter(&q, &caller)?)?;
    let (found, next) = messages(
        &desk,
        &s.search,
        &viewer,
        &MessageSearch {
            words,
            filter: &filter,
            order,
            after,
            limit,
        },
    )?;
    let results: Vec<Value> = found
        .iter()
        .map(|m| {
            let pdu = &m.event.pdu;
            json!({
                "event_id": pdu.event_id,
                "room_id": pdu.room_id,
                "sender": pdu.sender,
                "origin_server_ts": pdu.origin_server_ts,
                "body": m.text,
                "rank": m.hit.score,
                "conversation": conversations::view(&m.conversation),
            })
        })
        .collect();
    Ok(Json(json!({
        "results": results,
        "next": next.map(|k| k.encode()),
    })))
}
