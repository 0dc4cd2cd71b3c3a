//! Third-party networks (`/thirdparty/*`): protocols the bridges serve and lookups of their
//! users and locations (portal rooms), answered by the appservices (see
//! `appservice::thirdparty`). Any signed-in user may ask; bridges decide what they reveal.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use http::request::Parts;
use ruma::{RoomAliasId, UserId};
use serde_json::Value;

use crate::{
    api::ruma::{AuthRequirement, authenticate},
    appservice::ThirdPartyKind,
    error::{Error, Result},
    services::Services,
    users::Identity,
};

pub fn routes(mut r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    for prefix in ["/_matrix/client/v3", "/_matrix/client/r0"] {
        r = r
            .route(&format!("{prefix}/thirdparty/protocols"), get(protocols))
            .route(
                &format!("{prefix}/thirdparty/protocol/{{protocol}}"),
                get(protocol),
            )
            .route(
                &format!("{prefix}/thirdparty/location/{{protocol}}"),
                get(locations),
            )
            .route(
                &format!("{prefix}/thirdparty/user/{{protocol}}"),
                get(users),
            )
            .route(
                &format!("{prefix}/thirdparty/location"),
                get(location_by_alias),
            )
            .route(&format!("{prefix}/thirdparty/user"), get(user_by_id));
    }
    r
}

fn signed_in(s: &Services, parts: &Parts) -> Result<Identity> {
    Ok(authenticate(s, parts, AuthRequirement::Required)?.expect("required"))
}

/// The query string as lookup fields, without what addresses the homeserver: the access
/// token, and an appservice's asserted `user_id`.
fn fields(parts: &Parts, who: &Identity) -> BTreeMap<String, String> {
    let mut fields: BTreeMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    fields.remove("access_token");
    if who.appservice.is_some() {
        fields.remove("user_id");
    }
    fields
}

fn unknown_protocol() -> Error {
    Error::not_found("Unknown protocol")
}

/// `GET /thirdparty/protocols`
async fn protocols(State(s): State<Arc<Services>>, parts: Parts) -> Result<Json<Value>> {
    signed_in(&s, &parts)?;
    let all = s.appservices.thirdparty_protocols(None).await;
    Ok(Json(Value::Object(all.into_iter().collect())))
}

/// `GET /thirdparty/protocol/{protocol}`
async fn protocol(
    State(s): State<Arc<Services>>,
    Path(protocol): Path<String>,
    parts: Parts,
) -> Result<Json<Value>> {
    signed_in(&s, &parts)?;
    let mut found = s.appservices.thirdparty_protocols(Some(&protocol)).await;
    found
        .remove(&protocol)
        .map(Json)
        .ok_or_else(unknown_protocol)
}

/// `GET /thirdparty/location/{protocol}`
async fn locations(
    State(s): State<Arc<Services>>,
    Path(protocol): Path<String>,
    parts: Parts,
) -> Result<Json<Vec<Value>>> {
    lookup(&s, &parts, ThirdPartyKind::Location, &protocol).await
}

/// `GET /thirdparty/user/{protocol}`
async fn users(
    State(s): State<Arc<Services>>,
    Path(protocol): Path<String>,
    parts: Parts,
) -> Result<Json<Vec<Value>>> {
    lookup(&s, &parts, ThirdPartyKind::User, &protocol).await
}

async fn lookup(
    s: &Services,
    parts: &Parts,
    kind: ThirdPartyKind,
    protocol: &str,
) -> Result<Json<Vec<Value>>> {
    let who = signed_in(s, parts)?;
    if !s.appservices.serves_protocol(protocol) {
        return Err(unknown_protocol());
    }
    let fields = fields(parts, &who);
    Ok(Json(
        s.appservices
            .thirdparty_lookup(kind, Some(protocol), &fields)
            .await,
    ))
}

/// `GET /thirdparty/location?alias=`: the third-party locations a room alias bridges to.
async fn location_by_alias(
    State(s): State<Arc<Services>>,
    parts: Parts,
) -> Result<Json<Vec<Value>>> {
    let who = signed_in(&s, &parts)?;
    let alias = required(&fields(&parts, &who), "alias")?;
    RoomAliasId::parse(&alias).map_err(|_| Error::invalid_param("alias is not a room alias"))?;
    reverse_lookup(&s, ThirdPartyKind::Location, "alias", alias).await
}

/// `GET /thirdparty/user?userid=`: the third-party users a Matrix user stands for.
async fn user_by_id(State(s): State<Arc<Services>>, parts: Parts) -> Result<Json<Vec<Value>>> {
    let who = signed_in(&s, &parts)?;
    let user = required(&fields(&parts, &who), "userid")?;
    UserId::parse(&user).map_err(|_| Error::invalid_param("userid is not a user ID"))?;
    reverse_lookup(&s, ThirdPartyKind::User, "userid", user).await
}

fn required(fields: &BTreeMap<String, String>, name: &str) -> Result<String> {
    fields
        .get(name)
        .cloned()
        .ok_or_else(|| Error::missing_param(format!("Missing query parameter '{name}'")))
}

async fn reverse_lookup(
    s: &Services,
    kind: ThirdPartyKind,
    key: &str,
    value: String,
) -> Result<Json<Vec<Value>>> {
    let fields = BTreeMap::from([(key.to_owned(), value)]);
    Ok(Json(
        s.appservices.thirdparty_lookup(kind, None, &fields).await,
    ))
}
