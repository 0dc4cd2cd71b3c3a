//! `/api/support/v1/`: the agent and admin REST API of the support desk.
//!
//! JSON in and out, authenticated with the user's Matrix access token. Handlers check who asks
//! (admin, agent, or a participant; `support::access` says who sees what, and what a caller may
//! not see answers 404) and call `support::actions`, which make the very state events an
//! agent's chat command would. Errors are Matrix error bodies; a bad field adds
//! `"field"` naming it. The OpenAPI description is `docs/support-api.json`, served here too.

mod admin;
mod conversations;
mod notes;
mod tickets;

use std::sync::Arc;

use axum::{
    Router,
    extract::FromRequestParts,
    routing::{get, post},
};
use http::{StatusCode, request::Parts};
use ruma::OwnedUserId;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{
    api::ruma::{AuthRequirement, authenticate},
    error::{Error, Result},
    services::Services,
    support::{Role, access::Viewer},
};

pub const PREFIX: &str = "/api/support/v1";

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let p = |path: &str| format!("{PREFIX}{path}");
    r.route(
        &p("/conversations"),
        get(conversations::list).post(conversations::create),
    )
    .route(
        &p("/conversations/{room_id}"),
        get(conversations::get_one).patch(conversations::update),
    )
    .route(
        &p("/conversations/{room_id}/assign"),
        post(conversations::assign),
    )
    .route(
        &p("/conversations/{room_id}/unassign"),
        post(conversations::unassign),
    )
    .route(
        &p("/conversations/{room_id}/notes"),
        get(notes::list).post(notes::create),
    )
    .route(&p("/tickets"), get(tickets::list).post(tickets::create))
    .route(
        &p("/tickets/{number}"),
        get(tickets::get_one).patch(tickets::update),
    )
    .route(&p("/agents"), get(admin::agents))
    .route(&p("/metrics"), get(admin::metrics))
    .route(&p("/audit"), get(admin::audit))
    .route(&p("/openapi.json"), get(admin::openapi))
}

/// The authenticated user and their role on the desk.
pub struct Caller {
    pub user: OwnedUserId,
    pub role: Role,
}

impl Caller {
    /// Who asks, for the desk's visibility rules.
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            user: &self.user,
            role: self.role,
        }
    }

    /// `403` unless the caller is an agent or admin.
    pub fn require_staff(&self) -> Result<()> {
        match self.role {
            Role::None => Err(Error::forbidden(
                "Only support agents and admins may do this",
            )),
            _ => Ok(()),
        }
    }

    pub fn require_admin(&self) -> Result<()> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(Error::forbidden("Only support admins may do this")),
        }
    }
}

impl FromRequestParts<Arc<Services>> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Services>) -> Result<Self> {
        let who = authenticate(s, parts, AuthRequirement::Required)?
            .ok_or_else(|| Error::missing_token("Missing access token"))?;
        Ok(Caller {
            role: s.support.role(&who.user_id),
            user: who.user_id,
        })
    }
}

/// `400 M_INVALID_PARAM` naming the field at fault.
pub fn field_error(field: &str, message: impl Into<String>) -> Error {
    Error::Matrix {
        status: StatusCode::BAD_REQUEST,
        errcode: "M_INVALID_PARAM",
        message: message.into().into(),
        extra: Some(json!({ "field": field })),
    }
}

/// Parses a JSON body: `M_NOT_JSON` when it is not JSON, `M_BAD_JSON` when it has the wrong
/// shape (with serde's description of what is wrong).
pub fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let bytes = if bytes.is_empty() {
        b"{}" as &[u8]
    } else {
        bytes
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| Error::not_json("Body is not JSON"))?;
    if !value.is_object() {
        return Err(Error::bad_json("Body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| Error::bad_json(e.to_string()))
}

/// A `limit` query parameter: default 50, at most 500.
pub fn limit(value: Option<&str>) -> Result<usize> {
    match value {
        None => Ok(50),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=500).contains(&n) => Ok(n),
            _ => Err(field_error(
                "limit",
                "limit must be an integer from 1 to 500",
            )),
        },
    }
}
