//! `/tickets`: list with filters, read, create (escalate a conversation), update. A ticket is
//! seen by whoever sees its conversation (`support::access`); anything else answers 404.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
};
use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, field_error, json_body, limit};
use crate::{
    error::{Error, Result},
    services::Services,
    support::{
        Ticket,
        actions::Actor,
        conversation::Priority,
        escalation::{self, TicketPatch},
        tickets::{TicketFilter, TicketStatus},
    },
};

fn number(raw: &str) -> Result<u64> {
    raw.trim_start_matches('#')
        .parse()
        .map_err(|_| field_error("number", "a ticket number"))
}

/// The ticket, if the caller sees its conversation; `404` otherwise (existence does not leak).
fn get_ticket(s: &Services, caller: &Caller, n: u64) -> Result<Ticket> {
    match s.support.tickets.get(n)? {
        Some(t) if caller.viewer().sees_ticket(s, &t)? => Ok(t),
        _ => Err(Error::not_found(format!("No ticket #{n}"))),
    }
}

pub async fn list(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let filter = TicketFilter {
        status: q
            .get("status")
            .map(|v| {
                TicketStatus::parse(v).ok_or_else(|| {
                    field_error(
                        "status",
                        format!("one of {}", TicketStatus::NAMES.join(", ")),
                    )
                })
            })
            .transpose()?,
        assignee: match q.get("assignee").map(String::as_str) {
            None => None,
            Some("none") => Some(String::new()),
            Some(u) => Some(
                UserId::parse(u)
                    .map_err(|_| field_error("assignee", "a user id or \"none\""))?
                    .to_string(),
            ),
        },
        room_id: q
            .get("room_id")
            .map(|r| {
                RoomId::parse(r.as_str())
                    .map(|r| r.to_string())
                    .map_err(|_| field_error("room_id", "not a room id"))
            })
            .transpose()?,
        priority: q
            .get("priority")
            .map(|v| {
                Priority::parse(v)
                    .ok_or_else(|| field_error("priority", "low, medium, high or urgent"))
            })
            .transpose()?,
    };
    let before = q.get("from").map(|f| number(f)).transpose()?;
    let limit = limit(q.get("limit").map(String::as_str))?;
    let viewer = caller.viewer();
    let (tickets, next) = s
        .support
        .tickets
        .list(&filter, limit, before, |t| viewer.sees_ticket(&s, t))?;
    Ok(Json(
        json!({ "tickets": tickets, "next": next.map(|n| n.to_string()) }),
    ))
}

pub async fn get_one(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    Ok(Json(json!(get_ticket(&s, &caller, number(&raw)?)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
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

pub async fn create(
    State(s): State<Arc<Services>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let req: NewTicket = json_body(&body)?;
    let room_id =
        RoomId::parse(req.room_id.as_str()).map_err(|_| field_error("room_id", "not a room id"))?;
    let title = check_title(&req.title)?;
    let priority = req
        .priority
        .as_deref()
        .map(|p| {
            Priority::parse(p).ok_or_else(|| field_error("priority", "low, medium, high or urgent"))
        })
        .transpose()?;
    if caller.viewer().conversation(&s, &room_id)?.is_none() {
        return Err(Error::not_found("No such conversation"));
    }
    let actor = Actor {
        user: &caller.user,
        via: "api",
        txn: None,
    };
    let mut ticket = escalation::create_ticket(&s, &room_id, &title, &actor, None).await?;
    if let Some(p) = priority.filter(|p| *p != ticket.priority) {
        let patch = TicketPatch {
            priority: Some(p),
            ..Default::default()
        };
        ticket = escalation::update_ticket(&s, ticket.number, patch, &actor).await?;
    }
    Ok(Json(json!(ticket)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
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

pub async fn update(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let n = number(&raw)?;
    get_ticket(&s, &caller, n)?;
    let req: Patch = json_body(&body)?;
    let patch = TicketPatch {
        title: req.title.as_deref().map(check_title).transpose()?,
        status: req
            .status
            .as_deref()
            .map(|v| {
                TicketStatus::parse(v).ok_or_else(|| {
                    field_error(
                        "status",
                        format!("one of {}", TicketStatus::NAMES.join(", ")),
                    )
                })
            })
            .transpose()?,
        priority: req
            .priority
            .as_deref()
            .map(|p| {
                Priority::parse(p)
                    .ok_or_else(|| field_error("priority", "low, medium, high or urgent"))
            })
            .transpose()?,
        assignee: match req.assignee {
            None => None,
            Some(None) => Some(None),
            Some(Some(u)) => {
                let user = UserId::parse(u.as_str())
                    .map_err(|_| field_error("assignee", "a user id or null"))?;
                if !s.support.is_staff(&user) {
                    return Err(field_error("assignee", format!("{user} is not an agent")));
                }
                Some(Some(user.to_string()))
            }
        },
    };
    let actor = Actor {
        user: &caller.user,
        via: "api",
        txn: None,
    };
    Ok(Json(json!(
        escalation::update_ticket(&s, n, patch, &actor).await?
    )))
}
