//! Accounts in the admin API: Charla's `/_charla/admin/v1/users…` (what `charla admin user`
//! calls) and Synapse's `/_synapse/admin/v{1,2}/users…`, `deactivate` and `reset_password` in
//! Synapse's shapes (compared field by field with Synapse 1.163).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::StatusCode;
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Administrator, Body, PREFIX, user_param};
use crate::{
    admin::{AccountChange, NewUser},
    error::{Error, Result},
    services::Services,
    support::Role,
    users::{UserRecord, admin::UserQuery},
};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route(&format!("{PREFIX}/users"), get(list).post(create))
        .route(&format!("{PREFIX}/users/{{user_id}}"), get(show))
        .route(
            &format!("{PREFIX}/users/{{user_id}}/deactivate"),
            post(deactivate),
        )
        .route(
            &format!("{PREFIX}/users/{{user_id}}/password"),
            post(reset_password),
        )
        .route("/_synapse/admin/v2/users", get(synapse_list))
        .route(
            "/_synapse/admin/v2/users/{user_id}",
            get(synapse_show).put(synapse_put),
        )
        .route(
            "/_synapse/admin/v1/deactivate/{user_id}",
            post(synapse_deactivate),
        )
        .route(
            "/_synapse/admin/v1/reset_password/{user_id}",
            post(synapse_reset_password),
        )
        .route(
            "/_synapse/admin/v1/users/{user_id}/admin",
            get(synapse_is_admin).put(synapse_set_admin),
        )
        .route(
            "/_synapse/admin/v1/users/{user_id}/joined_rooms",
            get(synapse_joined_rooms),
        )
        .route("/_synapse/admin/v1/server_version", get(server_version))
}

/// The largest page a list answers.
const MAX_LIMIT: usize = 1_000;

fn query_of(q: &HashMap<String, String>, default_deactivated: bool) -> Result<UserQuery> {
    let number = |name: &str, default: usize| -> Result<usize> {
        q.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| Error::invalid_param(format!("{name} must be a non-negative integer")))
        })
    };
    let flag = |name: &str| -> Result<Option<bool>> {
        q.get(name)
            .map(|v| match v.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Error::invalid_param(format!(
                    "{name} must be true or false"
                ))),
            })
            .transpose()
    };
    Ok(UserQuery {
        from: number("from", 0)?,
        limit: number("limit", 100)?.min(MAX_LIMIT),
        // Synapse: `name` searches ids and display names; `user_id` ids only.
        name: q.get("name").or_else(|| q.get("user_id")).cloned(),
        include_deactivated: flag("deactivated")?.unwrap_or(default_deactivated),
        admins: flag("admins")?,
    })
}

/// `next_token`: a string, present only when more accounts match.
fn paged(users: Vec<Value>, total: usize, query: &UserQuery) -> Value {
    let mut out = json!({ "users": users, "total": total });
    let next = query.from + query.limit;
    if next < total {
        out["next_token"] = json!(next.to_string());
    }
    out
}

// Charla's API.

/// An account as `charla admin` shows it: profile, admin flag, desk role.
fn charla_user(s: &Services, user: &UserId, r: &UserRecord) -> Value {
    let role = match s.support.role(user) {
        Role::Admin => "admin",
        Role::Agent => "agent",
        Role::None => "user",
    };
    json!({
        "user_id": user,
        "displayname": r.displayname,
        "avatar_url": r.avatar_url,
        "admin": r.admin,
        "deactivated": r.deactivated,
        "role": role,
        "capacity": s.support.capacity(user),
        "created_ts": r.created_ts,
    })
}

async fn list(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let query = query_of(&q, false)?;
    let page = s.users.list(&query)?;
    let users = page
        .users
        .iter()
        .map(|(user, record)| charla_user(&s, user, record))
        .collect();
    Ok(Json(paged(users, page.total, &query)))
}

#[derive(Deserialize)]
struct CreateBody {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    displayname: Option<String>,
}

async fn create(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Body(body): Body<CreateBody>,
) -> Result<Response> {
    let user = user_param(&s, &body.username)?;
    if user.server_name() != s.config.server_name {
        return Err(Error::invalid_param("Can only create local users"));
    }
    let actor = admin.actor(&s.support.bot);
    let created = s
        .admin()
        .create_user(
            &actor,
            NewUser {
                localpart: user.localpart(),
                password: body.password.as_deref(),
                admin: body.admin,
                displayname: body.displayname,
            },
        )
        .await?;
    let record = found(&s, &created)?;
    Ok((
        StatusCode::CREATED,
        Json(charla_user(&s, &created, &record)),
    )
        .into_response())
}

async fn show(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    let user = user_param(&s, &user)?;
    let record = found(&s, &user)?;
    let mut out = charla_user(&s, &user, &record);
    let devices = s.users.devices(&user)?;
    out["devices"] = json!(devices.len());
    out["last_seen_ts"] = json!(devices.iter().filter_map(|d| d.last_seen_ts).max());
    out["rooms"] = json!(s.rooms.joined_rooms(&user)?.len());
    Ok(Json(out))
}

async fn deactivate(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    let user = user_param(&s, &user)?;
    s.admin()
        .deactivate(&admin.actor(&s.support.bot), &user)
        .await?;
    Ok(Json(json!({ "user_id": user, "deactivated": true })))
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

async fn reset_password(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(user): Path<String>,
    Body(body): Body<PasswordBody>,
) -> Result<Json<Value>> {
    let user = user_param(&s, &user)?;
    s.admin()
        .reset_password(
            &admin.actor(&s.support.bot),
            &user,
            &body.password,
            body.logout_devices,
        )
        .await?;
    Ok(Json(
        json!({ "user_id": user, "logout_devices": body.logout_devices }),
    ))
}

fn found(s: &Services, user: &UserId) -> Result<UserRecord> {
    s.users
        .get(user)?
        .ok_or_else(|| Error::not_found("User not found"))
}

// Synapse's shapes.

/// An account as Synapse's list shows it (`creation_ts` in milliseconds there).
fn synapse_listed(user: &UserId, r: &UserRecord, last_seen: Option<u64>) -> Value {
    json!({
        "name": user,
        "user_type": null,
        "is_guest": false,
        "admin": r.admin,
        "deactivated": r.deactivated,
        "shadow_banned": false,
        "displayname": r.displayname,
        "avatar_url": r.avatar_url,
        "creation_ts": r.created_ts,
        "erased": false,
        "last_seen_ts": last_seen,
        "locked": false,
    })
}

/// An account as Synapse's `GET /v2/users/<id>` shows it (`creation_ts` in seconds there).
fn synapse_details(s: &Services, user: &UserId, r: &UserRecord) -> Result<Value> {
    let appservice = s
        .appservices
        .exclusive_user_owner(user)
        .map(|a| a.id().to_owned());
    Ok(json!({
        "name": user,
        "admin": r.admin,
        "deactivated": r.deactivated,
        "locked": false,
        "shadow_banned": false,
        "creation_ts": r.created_ts / 1000,
        "appservice_id": appservice,
        "consent_server_notice_sent": null,
        "consent_version": null,
        "consent_ts": null,
        "user_type": null,
        "is_guest": false,
        "suspended": false,
        "displayname": r.displayname,
        "avatar_url": r.avatar_url,
        "threepids": [],
        "external_ids": [],
        "erased": false,
        "last_seen_ts": last_seen(s, user)?,
    }))
}

fn last_seen(s: &Services, user: &UserId) -> Result<Option<u64>> {
    Ok(s.users
        .devices(user)?
        .iter()
        .filter_map(|d| d.last_seen_ts)
        .max())
}

async fn synapse_list(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let query = query_of(&q, false)?;
    let page = s.users.list(&query)?;
    let mut users = Vec::with_capacity(page.users.len());
    for (user, record) in &page.users {
        users.push(synapse_listed(user, record, last_seen(&s, user)?));
    }
    Ok(Json(paged(users, page.total, &query)))
}

async fn synapse_show(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    let user = user_param(&s, &user)?;
    let record = found(&s, &user)?;
    Ok(Json(synapse_details(&s, &user, &record)?))
}

/// Synapse's create-or-modify body. `null` and absent both leave a field alone, except the
/// profile fields, where `null` clears.
#[derive(Deserialize, Default)]
struct PutBody {
    #[serde(default)]
    password: Option<String>,
    #[serde(default = "yes")]
    logout_devices: bool,
    #[serde(default, deserialize_with = "present")]
    displayname: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    avatar_url: Option<Option<String>>,
    #[serde(default)]
    admin: Option<bool>,
    #[serde(default)]
    deactivated: Option<bool>,
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `201` with the new account when it creates, `200` when it updates.
async fn synapse_put(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(user): Path<String>,
    Body(body): Body<PutBody>,
) -> Result<Response> {
    let user = user_param(&s, &user)?;
    if user.server_name() != s.config.server_name {
        return Err(Error::invalid_param(
            "This endpoint can only be used with local users",
        ));
    }
    let actor = admin.actor(&s.support.bot);
    let status = if s.users.exists(&user)? {
        let change = AccountChange {
            password: body.password.as_deref(),
            logout_devices: body.logout_devices,
            displayname: body.displayname,
            avatar_url: body.avatar_url,
            admin: body.admin,
            deactivated: body.deactivated,
        };
        s.admin().modify_user(&actor, &user, change).await?;
        StatusCode::OK
    } else {
        s.admin()
            .create_user(
                &actor,
                NewUser {
                    localpart: user.localpart(),
                    password: body.password.as_deref(),
                    admin: body.admin.unwrap_or(false),
                    displayname: body.displayname.flatten(),
                },
            )
            .await?;
        if body.avatar_url.as_ref().is_some_and(Option::is_some) {
            let change = AccountChange {
                avatar_url: body.avatar_url,
                ..AccountChange::default()
            };
            s.admin().modify_user(&actor, &user, change).await?;
        }
        StatusCode::CREATED
    };
    let record = found(&s, &user)?;
    Ok((status, Json(synapse_details(&s, &user, &record)?)).into_response())
}

async fn synapse_deactivate(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(user): Path<String>,
    Body(_body): Body<Value>,
) -> Result<Json<Value>> {
    let user = user_param(&s, &user)?;
    s.admin()
        .deactivate(&admin.actor(&s.support.bot), &user)
        .await?;
    Ok(Json(json!({ "id_server_unbind_result": "success" })))
}

#[derive(Deserialize)]
struct SynapsePasswordBody {
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
}

async fn synapse_reset_password(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(user): Path<String>,
    Body(body): Body<SynapsePasswordBody>,
) -> Result<Json<Value>> {
    let user = user_param(&s, &user)?;
    s.admin()
        .reset_password(
            &admin.actor(&s.support.bot),
            &user,
            &body.new_password,
            body.logout_devices,
        )
        .await?;
    Ok(Json(json!({})))
}

async fn synapse_is_admin(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    let user = user_param(&s, &user)?;
    Ok(Json(json!({ "admin": found(&s, &user)?.admin })))
}

#[derive(Deserialize)]
struct AdminFlag {
    admin: bool,
}

async fn synapse_set_admin(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(user): Path<String>,
    Body(body): Body<AdminFlag>,
) -> Result<Json<Value>> {
    let user = user_param(&s, &user)?;
    if admin.user.as_deref() == Some(&*user) && !body.admin {
        return Err(Error::forbidden("You may not demote yourself."));
    }
    let change = AccountChange {
        admin: Some(body.admin),
        ..AccountChange::default()
    };
    s.admin()
        .modify_user(&admin.actor(&s.support.bot), &user, change)
        .await?;
    Ok(Json(json!({})))
}

async fn synapse_joined_rooms(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    let user = user_param(&s, &user)?;
    let rooms = s.rooms.joined_rooms(&user)?;
    Ok(Json(json!({ "total": rooms.len(), "joined_rooms": rooms })))
}

/// Answers without a token, as Synapse does: tools probe it to recognize the server.
async fn server_version() -> Json<Value> {
    Json(json!({ "server_version": env!("CARGO_PKG_VERSION") }))
}
