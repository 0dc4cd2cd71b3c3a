//! Synapse-compatible shared-secret registration (`/_synapse/admin/v1/register`), the way
//! `register_new_matrix_user` and many provisioning scripts create accounts.
//!
//! GET returns a nonce; POST carries the nonce, the account and an HMAC-SHA1 over
//! `nonce\0username\0password\0admin|notadmin` keyed with the shared secret.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    services::Services,
    users::{NewAccount, shared_secret::MacInput},
};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route("/_synapse/admin/v1/register", get(nonce).post(register))
}

async fn nonce(State(s): State<Arc<Services>>) -> Result<Json<Value>> {
    Ok(Json(json!({ "nonce": s.shared_secret.nonce()? })))
}

#[derive(Deserialize)]
struct RegisterBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    displayname: Option<String>,
    mac: String,
}

async fn register(
    State(s): State<Arc<Services>>,
    request: axum::extract::Request,
) -> Result<Json<Value>> {
    // The MAC is the authentication, and it is in the body: refuse before reading it when the
    // feature is off; the body limit bounds what is read.
    s.shared_secret.check_enabled()?;
    let body = crate::api::ruma::read_body(&s, request.into_body()).await?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|_| Error::not_json("Content not JSON."))?;
    let body: RegisterBody =
        serde_json::from_value(value).map_err(|e| Error::bad_json(e.to_string()))?;
    s.shared_secret.verify(
        &MacInput {
            nonce: &body.nonce,
            username: &body.username,
            password: &body.password,
            admin: body.admin,
        },
        &body.mac,
    )?;
    let localpart = body.username.to_lowercase();
    let user_id = s.users.user_id_for(&localpart)?;
    // An appservice's exclusive namespace is its alone, whoever holds the shared secret.
    if s.appservices.exclusive_user_owner(&user_id).is_some() {
        return Err(Error::exclusive(
            "This user ID is reserved by an application service",
        ));
    }
    let user_id = s
        .users
        .create(NewAccount {
            localpart: &localpart,
            password: Some(&body.password),
            admin: body.admin,
            displayname: body.displayname,
        })
        .await?;
    let session = s.users.open_session(&user_id, None, None).await?;
    Ok(Json(json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": s.config.server_name,
    })))
}
