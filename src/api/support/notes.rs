//! `/conversations/{room_id}/notes`: a conversation's private notes, for the staff who see it.
//! They live in the conversation's staff-only notes room (`support::notes`), never in the
//! conversation, so the customer never reads them.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, field_error, json_body, limit};
use crate::{
    error::Result,
    services::Services,
    support::notes::{self, MAX_NOTE_CHARS},
};

/// The notes, newest first: `limit`, and `from` (the `next` of the previous page).
pub(super) async fn list(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let desk = s.desk();
    let room_id = caller.staff_conversation(&desk, &room_id)?;
    let limit = limit(q.get("limit").map(String::as_str))?;
    let from = q
        .get("from")
        .map(|f| f.parse().map_err(|_| field_error("from", "a page token")))
        .transpose()?;
    let (notes, next) = notes::list(&desk, &room_id, limit, from)?;
    Ok(Json(
        json!({ "notes": notes, "next": next.map(|n| n.to_string()) }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewNote {
    text: String,
}

pub(super) async fn create(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let desk = s.desk();
    let room_id = caller.staff_conversation(&desk, &room_id)?;
    let req: NewNote = json_body(&body)?;
    let text = req.text.trim();
    if text.is_empty() || text.chars().count() > MAX_NOTE_CHARS {
        return Err(field_error(
            "text",
            format!("a note is 1 to {MAX_NOTE_CHARS} characters"),
        ));
    }
    let actor = caller.actor();
    Ok(Json(json!(
        notes::write(&desk, &room_id, &actor, text).await?
    )))
}
