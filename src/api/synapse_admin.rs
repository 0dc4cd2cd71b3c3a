//! Synapse-compatible shared-secret registration (`/_synapse/admin/v1/register`), the way
//! `register_new_matrix_user` and many provisioning scripts create accounts.
//!
//! GET returns a nonce; POST carries the nonce, the account and an HMAC-SHA1 over
//! `nonce\0username\0password\0admin|notadmin` keyed with the shared secret.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, routing::get};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Sha1;

use crate::{
    error::{Error, Result},
    services::Services,
    users::{NewAccount, random_string},
};

const NONCE_LIFETIME: Duration = Duration::from_secs(60);

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route("/_synapse/admin/v1/register", get(nonce).post(register))
}

/// Nonces handed out and not yet used, with when they were issued.
#[derive(Default)]
pub struct Nonces(Mutex<HashMap<String, Instant>>);

fn enabled(s: &Services) -> Result<&str> {
    let secret = s.config.registration.shared_secret.as_str();
    if secret.is_empty() {
        return Err(Error::matrix(
            http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Shared secret registration is not enabled",
        ));
    }
    Ok(secret)
}

async fn nonce(State(s): State<Arc<Services>>) -> Result<Json<Value>> {
    enabled(&s)?;
    let nonce = random_string(32);
    let mut map = s.nonces.0.lock();
    map.retain(|_, t| t.elapsed() < NONCE_LIFETIME);
    map.insert(nonce.clone(), Instant::now());
    Ok(Json(json!({ "nonce": nonce })))
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
    let secret = enabled(&s)?.to_owned();
    let body = crate::api::ruma::read_body(&s, request.into_body()).await?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|_| Error::not_json("Content not JSON."))?;
    let body: RegisterBody =
        serde_json::from_value(value).map_err(|e| Error::bad_json(e.to_string()))?;
    let fresh = s
        .nonces
        .0
        .lock()
        .remove(&body.nonce)
        .is_some_and(|t| t.elapsed() < NONCE_LIFETIME);
    if !fresh {
        return Err(Error::unknown("Unrecognised nonce"));
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    for (i, part) in [
        body.nonce.as_str(),
        body.username.as_str(),
        body.password.as_str(),
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            mac.update(b"\x00");
        }
        mac.update(part.as_bytes());
    }
    mac.update(b"\x00");
    mac.update(if body.admin { b"admin" } else { b"notadmin" });
    let expected = hex::decode(&body.mac).map_err(|_| Error::forbidden("HMAC incorrect"))?;
    mac.verify_slice(&expected)
        .map_err(|_| Error::forbidden("HMAC incorrect"))?;

    let user_id = s
        .users
        .create(NewAccount {
            localpart: &body.username.to_lowercase(),
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
