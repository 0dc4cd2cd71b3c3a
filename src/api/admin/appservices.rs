//! The admin API's application services: the registrations in use (the config's files and
//! those added here), registering and unregistering at runtime, and the spec's ping.
//!
//! A registration added here is in use from the answer on (its `as_token` authenticates, its
//! namespaces are its own, its pusher runs) and survives a restart; one removed stops at once.
//! Tokens are never shown.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    routing::{delete, get, post},
};
use serde_json::{Value, json};

use super::{Administrator, PREFIX};
use crate::{
    api::{client::appservice::ping_error, support::field_error},
    appservice::AppService,
    error::{Error, Result},
    services::Services,
};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let p = |path: &str| format!("{PREFIX}/appservices{path}");
    r.route(&p(""), get(list).post(register))
        .route(&p("/{id}"), delete(unregister))
        .route(&p("/{id}/ping"), post(ping))
}

/// An appservice as the admin API shows it: everything but its tokens.
fn view(asv: &AppService) -> Value {
    let r = &asv.registration;
    json!({
        "id": r.id,
        "url": r.url,
        "sender": asv.sender,
        "namespaces": r.namespaces,
        "rate_limited": r.is_rate_limited(),
        "protocols": r.protocols.clone().unwrap_or_default(),
        "receive_ephemeral": asv.receive_ephemeral,
        "source": asv.source,
    })
}

async fn list(State(s): State<Arc<Services>>, _admin: Administrator) -> Result<Json<Value>> {
    let all = s.appservices.all();
    Ok(Json(
        json!({ "appservices": all.iter().map(|a| view(a)).collect::<Vec<_>>() }),
    ))
}

/// The body is the registration, YAML as Synapse takes it, or JSON. Checked like the config's
/// files; `409` when its id, a token or its sender is another's.
async fn register(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    body: Bytes,
) -> Result<Json<Value>> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| field_error("registration", "the registration must be UTF-8 text"))?;
    let actor = admin.actor(&s.support.bot);
    let asv = s.admin().register_appservice(&actor, text).await?;
    Ok(Json(view(&asv)))
}

/// Only registrations added at runtime: a config file's is refused (`403`), naming the file.
async fn unregister(
    State(s): State<Arc<Services>>,
    admin: Administrator,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let actor = admin.actor(&s.support.bot);
    let asv = s.admin().unregister_appservice(&actor, &id).await?;
    Ok(Json(view(&asv)))
}

/// The homeserver pings the appservice (`POST /_matrix/app/v1/ping`) and reports the round
/// trip; failures are the spec's ping errors.
async fn ping(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let asv = s
        .appservices
        .by_id(&id)
        .ok_or_else(|| Error::not_found(format!("No appservice {id:?}")))?;
    let ms = s.appservices.ping(&asv, None).await.map_err(ping_error)?;
    Ok(Json(json!({ "id": id, "duration_ms": ms })))
}
