//! `/conversations`: list with filters, read with history, create, change, assign.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, field_error, json_body, limit};
use crate::{
    error::{Error, Result},
    events::ClientFormat,
    rooms::{Direction, EventView},
    services::Services,
    support::{
        Conversation, ConversationRecord, Role,
        actions::{self, Actor},
        conversation::{
            Channel, Contact, MAX_REFERENCE_CHARS, Priority, Status, valid_labels, valid_language,
        },
        index::{Filter, PageToken, Sort},
    },
};

/// A conversation as the API shows it: the state event's content plus what the index knows.
pub fn view(r: &ConversationRecord) -> Value {
    let mut v = r.content.to_json();
    v["room_id"] = json!(r.room_id);
    v["created_ts"] = json!(r.created_ts);
    v["last_activity_ts"] = json!(r.last_activity_ts);
    v["waiting_since"] = json!(r.waiting_since);
    v["message_count"] = json!(r.messages);
    v
}

fn parse_room(room_id: &str) -> Result<OwnedRoomId> {
    RoomId::parse(room_id).map_err(|_| field_error("room_id", "not a valid room id"))
}

/// The conversation the caller named, if they may see it; `404` otherwise (existence does not
/// leak).
pub fn visible(s: &Services, caller: &Caller, room_id: &str) -> Result<OwnedRoomId> {
    Ok(visible_record(s, caller, room_id)?.0)
}

fn visible_record(
    s: &Services,
    caller: &Caller,
    room_id: &str,
) -> Result<(OwnedRoomId, ConversationRecord)> {
    let room_id = parse_room(room_id)?;
    match caller.viewer().conversation(s, &room_id)? {
        Some(r) => Ok((room_id, r)),
        None => Err(Error::not_found("No such conversation")),
    }
}

fn enum_param<T>(
    q: &HashMap<String, String>,
    field: &str,
    parse: fn(&str) -> Option<T>,
    names: &[&str],
) -> Result<Option<T>> {
    q.get(field)
        .map(|v| {
            parse(v).ok_or_else(|| {
                field_error(
                    field,
                    format!("{field} must be one of {}", names.join(", ")),
                )
            })
        })
        .transpose()
}

pub async fn list(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let assignee = match q.get("assignee").map(String::as_str) {
        None => None,
        Some("none" | "") => Some(String::new()),
        Some("me") => Some(caller.user.to_string()),
        Some(u) => Some(
            UserId::parse(u)
                .map_err(|_| field_error("assignee", "a user id, \"me\" or \"none\""))?
                .to_string(),
        ),
    };
    let only_assignees = caller.viewer().assignees(&s);
    if let (Some(allowed), Some(a)) = (&only_assignees, &assignee)
        && !allowed.contains(a)
    {
        return Err(Error::forbidden(
            "Agents see only their own conversations and the queue",
        ));
    }
    let filter = Filter {
        status: enum_param(&q, "status", Status::parse, Status::NAMES)?,
        assignee,
        label: q.get("label").cloned(),
        channel: enum_param(&q, "channel", Channel::parse, Channel::NAMES)?,
        priority: enum_param(&q, "priority", Priority::parse, Priority::NAMES)?,
        organisation: q.get("organisation").cloned(),
        product_id: q.get("product_id").cloned(),
        order_id: q.get("order_id").cloned(),
        updated_since: q
            .get("updated_since")
            .map(|v| {
                v.parse()
                    .map_err(|_| field_error("updated_since", "milliseconds since the epoch"))
            })
            .transpose()?,
        only_assignees,
    };
    let sort = match q.get("sort").map(String::as_str) {
        None | Some("last_activity") => Sort::Activity,
        Some("waiting") => Sort::Waiting,
        Some(_) => return Err(field_error("sort", "sort must be last_activity or waiting")),
    };
    if q.contains_key("q") {
        return Err(field_error("q", "full-text search is not available yet"));
    }
    let from = q
        .get("from")
        .map(|t| PageToken::decode(t).ok_or_else(|| field_error("from", "not a page token")))
        .transpose()?;
    let limit = limit(q.get("limit").map(String::as_str))?;
    let (page, next) = s.support.index.list(&filter, sort, limit, from.as_ref())?;
    Ok(Json(json!({
        "conversations": page.iter().map(view).collect::<Vec<_>>(),
        "next": next.map(|t| t.encode()),
    })))
}

pub async fn get_one(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let (room_id, record) = visible_record(&s, &caller, &room_id)?;
    let limit = limit(q.get("limit").map(String::as_str))?;
    let room = s.rooms.room(&room_id)?;
    let positions = s
        .rooms
        .timeline_positions(room.short, u64::MAX, Direction::Backward, limit)?;
    let view_as = EventView {
        user: &caller.user,
        device: None,
        format: ClientFormat::WithRoomId,
    };
    let mut history = Vec::with_capacity(positions.len());
    for pos in positions.into_iter().rev() {
        let raw = s.rooms.client_event(pos, view_as)?;
        history.push(
            serde_json::from_str::<Value>(raw.get()).map_err(|e| Error::internal(e.to_string()))?,
        );
    }
    let event_ids = history
        .iter()
        .filter_map(|event| event["event_id"].as_str());
    let deliveries = s.support.deliveries.of(&room.room_id, event_ids);
    let mut body = view(&record);
    body["history"] = json!(history);
    body["deliveries"] = Value::Object(deliveries);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    #[serde(default)]
    participants: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    product_id: Option<String>,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    contact: Option<Contact>,
}

/// Most participants staff may open a conversation with.
const MAX_PARTICIPANTS: usize = 50;
/// Longest room name.
const MAX_NAME_CHARS: usize = 255;

/// What a customer may not choose: the desk sets priority, labels, contact and channel, and a
/// customer opens a conversation for themselves only.
fn refuse_customer_choices(caller: &Caller, req: &NewConversation) -> Result<()> {
    let forbidden = |field: &str, message: &str| Error::Matrix {
        status: http::StatusCode::FORBIDDEN,
        errcode: "M_FORBIDDEN",
        message: message.to_owned().into(),
        extra: Some(json!({ "field": field })),
    };
    if req.participants.iter().any(|p| p != caller.user.as_str()) {
        return Err(forbidden(
            "participants",
            "You may only open a conversation for yourself with the desk",
        ));
    }
    let chosen = [
        ("priority", req.priority.is_some()),
        ("labels", req.labels.is_some()),
        ("contact", req.contact.is_some()),
        ("channel", req.channel.is_some()),
    ];
    if let Some((field, _)) = chosen.into_iter().find(|(_, set)| *set) {
        return Err(forbidden(
            field,
            &format!("The desk sets the {field} of a conversation"),
        ));
    }
    Ok(())
}

/// The participants staff named: existing users, at most [`MAX_PARTICIPANTS`], not the bot.
async fn participants(s: &Services, named: &[String]) -> Result<Vec<OwnedUserId>> {
    if named.is_empty() || named.len() > MAX_PARTICIPANTS {
        return Err(field_error(
            "participants",
            format!("between 1 and {MAX_PARTICIPANTS} user ids"),
        ));
    }
    let mut out: Vec<OwnedUserId> = Vec::new();
    for p in named {
        let user = UserId::parse(p.as_str())
            .map_err(|_| field_error("participants", format!("{p} is not a user id")))?;
        if !s.user_is_active(&user).await? {
            return Err(field_error("participants", format!("{p} does not exist")));
        }
        if !out.contains(&user) && user != s.support.bot {
            out.push(user);
        }
    }
    Ok(out)
}

/// Opens a conversation in a room of the desk's (`support::desk`). Staff open them for anyone
/// (buyer/seller chats) with any priority, labels and contact; a customer only for themselves,
/// as a direct chat with the desk, a few times an hour (`support.customer_conversations_*`).
pub async fn create(
    State(s): State<Arc<Services>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: NewConversation = json_body(&body)?;
    let staff = caller.role != Role::None;
    if !staff {
        refuse_customer_choices(&caller, &req)?;
    }
    if req
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
    {
        return Err(field_error(
            "name",
            format!("at most {MAX_NAME_CHARS} characters"),
        ));
    }
    for (field, v) in [("product_id", &req.product_id), ("order_id", &req.order_id)] {
        if v.as_ref()
            .is_some_and(|v| v.is_empty() || v.chars().count() > MAX_REFERENCE_CHARS)
        {
            return Err(field_error(
                field,
                format!("{field} must be 1 to {MAX_REFERENCE_CHARS} characters"),
            ));
        }
    }
    let channel = match req.channel.as_deref() {
        None => Channel::Matrix,
        Some(c) => {
            Channel::parse(c).ok_or_else(|| field_error("channel", "whatsapp, web or matrix"))?
        }
    };
    let priority = match req.priority.as_deref() {
        None => Priority::Medium,
        Some(p) => Priority::parse(p)
            .ok_or_else(|| field_error("priority", "low, medium, high or urgent"))?,
    };
    let labels = valid_labels(req.labels.as_deref().unwrap_or_default())
        .map_err(|e| field_error("labels", e))?;
    let (participants, contact) = if staff {
        (
            participants(&s, &req.participants).await?,
            req.contact.unwrap_or_default(),
        )
    } else {
        // Checked last: a refused request costs no token.
        s.support.customer_creations.check(caller.user.as_str())?;
        (
            vec![caller.user.clone()],
            actions::contact_of(&s, &caller.user)?,
        )
    };
    let content = Conversation {
        channel,
        priority,
        labels,
        product_id: req.product_id,
        order_id: req.order_id,
        contact,
        ..Default::default()
    };
    let actor = Actor {
        user: &caller.user,
        via: "api",
        txn: None,
    };
    let new = actions::NewConversation {
        content,
        name: req.name,
        participants,
        is_direct: !staff,
        intent: None,
    };
    let (room_id, content) = actions::create_conversation(&s, new, &actor).await?;
    if let Some(agent) = content
        .assignee
        .as_deref()
        .and_then(|a| UserId::parse(a).ok())
    {
        actions::bring_in_agent(&s, &room_id, &agent, &actor).await?;
    }
    fresh(&s, &room_id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    add_labels: Vec<String>,
    #[serde(default)]
    remove_labels: Vec<String>,
    #[serde(default)]
    language: Option<String>,
}

fn labels(field: &str, list: &[String]) -> Result<Vec<String>> {
    valid_labels(list).map_err(|e| field_error(field, e))
}

pub async fn update(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let room_id = visible(&s, &caller, &room_id)?;
    let patch: Patch = json_body(&body)?;
    let status = patch
        .status
        .as_deref()
        .map(|v| Status::parse(v).ok_or_else(|| field_error("status", "open, pending or closed")))
        .transpose()?;
    let priority = patch
        .priority
        .as_deref()
        .map(|v| {
            Priority::parse(v).ok_or_else(|| field_error("priority", "low, medium, high or urgent"))
        })
        .transpose()?;
    let set = patch
        .labels
        .as_deref()
        .map(|l| labels("labels", l))
        .transpose()?;
    let add = labels("add_labels", &patch.add_labels)?;
    let remove = labels("remove_labels", &patch.remove_labels)?;
    let language = patch
        .language
        .as_deref()
        .map(|l| {
            valid_language(l).ok_or_else(|| field_error("language", "a tag such as es or pt-BR"))
        })
        .transpose()?;
    let actor = Actor {
        user: &caller.user,
        via: "api",
        txn: None,
    };
    let details = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    actions::update(&s, &room_id, &actor, "conversation.update", details, |c| {
        if let Some(st) = status {
            actions::set_status(c, st);
        }
        if let Some(p) = priority {
            c.priority = p;
        }
        if let Some(set) = set {
            c.labels.clear();
            for l in set {
                if !c.labels.contains(&l) {
                    c.labels.push(l);
                }
            }
        }
        for l in add {
            if !c.labels.contains(&l) {
                c.labels.push(l);
            }
        }
        c.labels.retain(|l| !remove.contains(l));
        if let Some(language) = language {
            c.language = Some(language);
        }
        Ok(())
    })
    .await?;
    fresh(&s, &room_id)
}

fn fresh(s: &Services, room_id: &RoomId) -> Result<Json<Value>> {
    let record = s
        .support
        .index
        .get(room_id.as_str())?
        .ok_or_else(|| Error::not_found("No such conversation"))?;
    Ok(Json(view(&record)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    user_id: String,
}

pub async fn assign(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let room_id = visible(&s, &caller, &room_id)?;
    let b: AssignBody = json_body(&body)?;
    let agent =
        UserId::parse(b.user_id.as_str()).map_err(|_| field_error("user_id", "not a user id"))?;
    if !s.support.is_staff(&agent) {
        return Err(field_error("user_id", format!("{agent} is not an agent")));
    }
    let actor = Actor {
        user: &caller.user,
        via: "api",
        txn: None,
    };
    actions::assign(&s, &room_id, Some(&agent), &actor).await?;
    fresh(&s, &room_id)
}

pub async fn unassign(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let room_id = visible(&s, &caller, &room_id)?;
    let actor = Actor {
        user: &caller.user,
        via: "api",
        txn: None,
    };
    actions::assign(&s, &room_id, None, &actor).await?;
    fresh(&s, &room_id)
}
