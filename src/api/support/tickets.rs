//! `/tickets`: list with filters, read, create (escalate a conversation), update. A ticket is
//! seen by whoever sees its conversation (`support::access`); anything else answers 404.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
};
use ruma::{OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, field_error, json_body, limit};
use crate::{
    error::Result,
    services::Services,
    support::{
        conversation::Priority,
        escalation::{self, TicketPatch},
        filter::Assignee,
        queries,
        tickets::{TicketFilter, TicketStatus},
    },
};

fn number(raw: &str) -> Result<u64> {
    raw.trim_start_matches('#')
        .parse()
        .map_err(|_| field_error("number", "a ticket number"))
}

fn status(value: &str) -> Result<TicketStatus> {
    TicketStatus::parse(value).ok_or_else(|| {
        field_error(
            "status",
            format!("one of {}", TicketStatus::NAMES.join(", ")),
        )
    })
}

fn priority(value: &str) -> Result<Priority> {
    Priority::parse(value).ok_or_else(|| field_error("priority", "low, medium, high or urgent"))
}

/// The listing's filter from the query.
fn filter(q: &HashMap<String, String>) -> Result<TicketFilter> {
    Ok(TicketFilter {
        status: q.get("status").map(|v| status(v)).transpose()?,
        assignee: match q.get("assignee").map(String::as_str) {
            None => Assignee::Anyone,
            Some("none") => Assignee::Unassigned,
            Some(u) => Assignee::User(
                UserId::parse(u).map_err(|_| field_error("assignee", "a user id or \"none\""))?,
            ),
        },
        room_id: q
            .get("room_id")
            .map(|r| RoomId::parse(r.as_str()).map_err(|_| field_error("room_id", "not a room id")))
            .transpose()?,
        priority: q.get("priority").map(|v| priority(v)).transpose()?,
    })
}

pub(in crate::api) async fn list(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let filter = filter(&q)?;
    let before = q.get("from").map(|f| number(f)).transpose()?;
    let limit = limit(q.get("limit").map(String::as_str))?;
    let (tickets, next) = queries::tickets(&s.desk(), &caller.viewer(), &filter, limit, before)?;
    Ok(Json(
        json!({ "tickets": tickets, "next": next.map(|n| n.to_string()) }),
    ))
}

pub(in crate::api) async fn get_one(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let ticket = queries::ticket(&s.desk(), &caller.viewer(), number(&raw)?)?;
    Ok(Json(json!(ticket)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTicket {
    room_id: String,
    title: String,
    #[serde(default)]
    priority: Option<String>,
}

fn check_title(title: &str) -> Result<String> {
    let t = title.trim();
    if t.is_empty() || t.chars().count() > 200 {
        return Err(field_error("title", "title must be 1 to 200 characters"));
    }
    Ok(t.to_owned())
}

pub(in crate::api) async fn create(
    State(s): State<Arc<Services>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let req: NewTicket = json_body(&body)?;
    let room_id =
        RoomId::parse(req.room_id.as_str()).map_err(|_| field_error("room_id", "not a room id"))?;
    let title = check_title(&req.title)?;
    let priority = req.priority.as_deref().map(priority).transpose()?;
    let desk = s.desk();
    queries::conversation(&desk, &caller.viewer(), &room_id)?;
    let actor = caller.actor();
    let mut ticket = escalation::create_ticket(&desk, &room_id, &title, &actor, None).await?;
    if let Some(p) = priority.filter(|p| *p != ticket.priority) {
        let patch = TicketPatch {
            priority: Some(p),
            ..Default::default()
        };
        ticket = escalation::update_ticket(&desk, ticket.number, patch, &actor).await?;
    }
    Ok(Json(json!(ticket)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Patch {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    /// A user id, or `null` to unassign; absent leaves it.
    #[serde(default, deserialize_with = "present")]
    assignee: Option<Option<String>>,
}

/// Tells an explicit `null` (unassign) from an absent key (leave as is).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?))
}

/// A ticket's new assignee: staff only.
fn assignee(s: &Services, user: &str) -> Result<OwnedUserId> {
    let user = UserId::parse(user).map_err(|_| field_error("assignee", "a user id or null"))?;
    if !s.support.is_staff(&user) {
        return Err(field_error("assignee", format!("{user} is not an agent")));
    }
    Ok(user)
}

pub(in crate::api) async fn update(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let n = number(&raw)?;
    let desk = s.desk();
    queries::ticket(&desk, &caller.viewer(), n)?;
    let req: Patch = json_body(&body)?;
    let patch = TicketPatch {
        title: req.title.as_deref().map(check_title).transpose()?,
        status: req.status.as_deref().map(status).transpose()?,
        priority: req.priority.as_deref().map(priority).transpose()?,
        assignee: match req.assignee {
            None => None,
            Some(None) => Some(None),
            Some(Some(u)) => Some(Some(assignee(&s, &u)?)),
        },
    };
    let actor = caller.actor();
    let ticket = escalation::update_ticket(&desk, n, patch, &actor).await?;
    Ok(Json(json!(ticket)))
}
