//! `/conversations`: list with filters (and full text, `q`), read with history, create, change,
//! assign.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, field_error, json_body, limit, ms_param};
use crate::{
    error::{Error, Result},
    services::Services,
    support::{
        Conversation, ConversationRecord, Desk, Role, actions,
        conversation::{
            Channel, Contact, MAX_REFERENCE_CHARS, Priority, Status, valid_labels, valid_language,
        },
        filter::{Assignee, Filter, PageToken, Sort},
        queries,
    },
};

/// A conversation as the API shows it: the state event's content plus what the index knows.
pub(super) fn view(r: &ConversationRecord) -> Value {
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

/// The conversation as it is now, after a change.
pub(in crate::api) fn fresh(desk: &Desk<'_>, room_id: &RoomId) -> Result<Json<Value>> {
    Ok(Json(view(&queries::record(desk, room_id)?)))
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

/// `?assignee=`: a user id, `me`, or `none` (or empty) for the queue.
fn assignee_param(q: &HashMap<String, String>, caller: &Caller) -> Result<Assignee> {
    Ok(match q.get("assignee").map(String::as_str) {
        None => Assignee::Anyone,
        Some("none" | "") => Assignee::Unassigned,
        Some("me") => Assignee::User(caller.user.clone()),
        Some(u) => Assignee::User(
            UserId::parse(u)
                .map_err(|_| field_error("assignee", "a user id, \"me\" or \"none\""))?,
        ),
    })
}

/// The listing's filter from the query (without the caller's restriction, which
/// `support::queries` adds).
pub(super) fn filter(q: &HashMap<String, String>, caller: &Caller) -> Result<Filter> {
    Ok(Filter {
        status: enum_param(q, "status", Status::parse, Status::NAMES)?,
        assignee: assignee_param(q, caller)?,
        label: q.get("label").cloned(),
        channel: enum_param(q, "channel", Channel::parse, Channel::NAMES)?,
        priority: enum_param(q, "priority", Priority::parse, Priority::NAMES)?,
        organisation: q.get("organisation").cloned(),
        product_id: q.get("product_id").cloned(),
        order_id: q.get("order_id").cloned(),
        updated_since: ms_param(q, "updated_since")?,
        only_assignees: None,
        text: None,
    })
}

pub(in crate::api) async fn list(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    caller.require_staff()?;
    let mut filter = filter(&q, &caller)?;
    if let Some(words) = q.get("q") {
        s.search_limiter.check(caller.user.as_str())?;
        s.search.require_enabled()?;
        let words = super::search::words_param(words)?;
        filter.text = Some(s.search.room_text(words)?);
    }
    let sort = match q.get("sort").map(String::as_str) {
        None | Some("last_activity") => Sort::Activity,
        Some("waiting") => Sort::Waiting,
        Some(_) => return Err(field_error("sort", "sort must be last_activity or waiting")),
    };
    let from = q
        .get("from")
        .map(|t| PageToken::decode(t).ok_or_else(|| field_error("from", "not a page token")))
        .transpose()?;
    let limit = limit(q.get("limit").map(String::as_str))?;
    let viewer = caller.viewer();
    let (page, next) =
        queries::conversations(&s.desk(), &viewer, filter, sort, limit, from.as_ref())?;
    Ok(Json(json!({
        "conversations": page.iter().map(view).collect::<Vec<_>>(),
        "next": next.map(|t| t.encode()),
    })))
}

pub(in crate::api) async fn get_one(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let desk = s.desk();
    let viewer = caller.viewer();
    let room_id = parse_room(&room_id)?;
    let record = queries::conversation(&desk, &viewer, &room_id)?;
    let limit = limit(q.get("limit").map(String::as_str))?;
    let (history, deliveries) = queries::history(&desk, &viewer, &room_id, limit)?;
    let mut body = view(&record);
    body["history"] = json!(history);
    body["deliveries"] = Value::Object(deliveries);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewConversation {
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

/// The new conversation's content from the request's fields, checked (without the contact,
/// which depends on who asks).
fn new_content(req: &mut NewConversation) -> Result<Conversation> {
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
    Ok(Conversation {
        channel,
        priority,
        labels,
        product_id: req.product_id.take(),
        order_id: req.order_id.take(),
        ..Default::default()
    })
}

/// Opens a conversation in a room of the desk's (`support::owned_rooms`). Staff open them for
/// anyone (buyer/seller chats) with any priority, labels and contact; a customer only for
/// themselves, as a direct chat with the desk, a few times an hour
/// (`support.customer_conversations_*`).
pub(in crate::api) async fn create(
    State(s): State<Arc<Services>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>> {
    let mut req: NewConversation = json_body(&body)?;
    let staff = caller.role != Role::None;
    if !staff {
        refuse_customer_choices(&caller, &req)?;
    }
    let mut content = new_content(&mut req)?;
    let desk = s.desk();
    let participants = if staff {
        content.contact = req.contact.unwrap_or_default();
        participants(&s, &req.participants).await?
    } else {
        // Checked last: a refused request costs no token.
        s.support.customer_creations.check(caller.user.as_str())?;
        content.contact = actions::contact_of(&desk, &caller.user)?;
        vec![caller.user.clone()]
    };
    let actor = caller.actor();
    let new = actions::NewConversation {
        content,
        name: req.name,
        participants,
        is_direct: !staff,
        intent: None,
    };
    let (room_id, content) = actions::create_conversation(&desk, new, &actor).await?;
    if let Some(agent) = &content.assignee {
        actions::bring_in_agent(&desk, &room_id, agent, &actor).await?;
    }
    fresh(&desk, &room_id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Patch {
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

/// A checked [`Patch`]: what it changes.
struct Change {
    status: Option<Status>,
    priority: Option<Priority>,
    set: Option<Vec<String>>,
    add: Vec<String>,
    remove: Vec<String>,
    language: Option<String>,
}

impl Patch {
    fn check(self) -> Result<Change> {
        Ok(Change {
            status: self
                .status
                .as_deref()
                .map(|v| {
                    Status::parse(v).ok_or_else(|| field_error("status", "open, pending or closed"))
                })
                .transpose()?,
            priority: self
                .priority
                .as_deref()
                .map(|v| {
                    Priority::parse(v)
                        .ok_or_else(|| field_error("priority", "low, medium, high or urgent"))
                })
                .transpose()?,
            set: self
                .labels
                .as_deref()
                .map(|l| labels("labels", l))
                .transpose()?,
            add: labels("add_labels", &self.add_labels)?,
            remove: labels("remove_labels", &self.remove_labels)?,
            language: self
                .language
                .as_deref()
                .map(|l| {
                    valid_language(l)
                        .ok_or_else(|| field_error("language", "a tag such as es or pt-BR"))
                })
                .transpose()?,
        })
    }
}

impl Change {
    fn apply(self, c: &mut Conversation) {
        if let Some(st) = self.status {
            actions::set_status(c, st);
        }
        if let Some(p) = self.priority {
            c.priority = p;
        }
        if let Some(set) = self.set {
            c.labels.clear();
            c.labels.extend(set);
        }
        for l in self.add {
            if !c.labels.contains(&l) {
                c.labels.push(l);
            }
        }
        c.labels.retain(|l| !self.remove.contains(l));
        if let Some(language) = self.language {
            c.language = Some(language);
        }
    }
}

pub(in crate::api) async fn update(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let desk = s.desk();
    let room_id = caller.staff_conversation(&desk, &room_id)?;
    let change = json_body::<Patch>(&body)?.check()?;
    let actor = caller.actor();
    let details = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    actions::update(
        &desk,
        &room_id,
        &actor,
        "conversation.update",
        details,
        |c| {
            change.apply(c);
            Ok(())
        },
    )
    .await?;
    fresh(&desk, &room_id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignBody {
    user_id: String,
}

pub(in crate::api) async fn assign(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let desk = s.desk();
    let room_id = caller.staff_conversation(&desk, &room_id)?;
    let b: AssignBody = json_body(&body)?;
    let agent =
        UserId::parse(b.user_id.as_str()).map_err(|_| field_error("user_id", "not a user id"))?;
    if !s.support.is_staff(&agent) {
        return Err(field_error("user_id", format!("{agent} is not an agent")));
    }
    set_assignee(&desk, &caller, &room_id, Some(&agent)).await
}

pub(in crate::api) async fn unassign(
    State(s): State<Arc<Services>>,
    caller: Caller,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    let desk = s.desk();
    let room_id = caller.staff_conversation(&desk, &room_id)?;
    set_assignee(&desk, &caller, &room_id, None).await
}

async fn set_assignee(
    desk: &Desk<'_>,
    caller: &Caller,
    room_id: &RoomId,
    agent: Option<&UserId>,
) -> Result<Json<Value>> {
    let actor = caller.actor();
    actions::assign(desk, room_id, agent, &actor).await?;
    fresh(desk, room_id)
}
