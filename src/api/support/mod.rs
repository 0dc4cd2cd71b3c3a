//! `/api/support/v1/`: the agent and admin REST API of the support desk.
//!
//! JSON in and out, authenticated with the user's Matrix access token. Handlers check who asks
//! (admin, agent, or a participant; `support::access` says who sees what, and what a caller may
//! not see answers 404) and call `support::queries` to read and `support::actions` to change,
//! which make the very state events an agent's chat command would. No handler reads or writes
//! the store. Errors are Matrix error bodies; a bad field adds
//! `"field"` naming it. The OpenAPI description is `docs/support-api.json`, served here too.

mod admin;
pub(in crate::api) mod conversations;
mod notes;
mod search;
pub(in crate::api) mod tickets;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    extract::FromRequestParts,
    routing::{get, post},
};
use http::request::Parts;
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde::de::DeserializeOwned;

use crate::{
    api::ruma::{AuthRequirement, authenticate},
    error::{Error, Result},
    services::Services,
    support::{Desk, Role, access::Viewer, actor::Actor, queries},
};

pub(crate) const PREFIX: &str = "/api/support/v1";

pub(crate) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
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
    .route(&p("/search"), get(search::search))
    .route(&p("/agents"), get(admin::agents))
    .route(&p("/metrics"), get(admin::metrics))
    .route(&p("/audit"), get(admin::audit))
    .route(&p("/openapi.json"), get(admin::openapi))
}

/// The authenticated user and their role on the desk.
pub(crate) struct Caller {
    pub(crate) user: OwnedUserId,
    pub(crate) role: Role,
    pub(crate) door: Door,
}

/// The API a caller came through, which the audit log records with their changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// `/api/support/v1/`.
    Support,
    /// The admin API, which serves the same conversations and tickets to administrators
    /// (`token`: the holder of `admin.token`, who acts as the support bot).
    Admin { token: bool },
}

impl Caller {
    /// Who asks for a change, for the desk's actions and the audit log.
    pub(crate) fn actor(&self) -> Actor<'_> {
        match self.door {
            Door::Support => Actor::Api { user: &self.user },
            Door::Admin { token } => Actor::Admin {
                user: &self.user,
                token,
            },
        }
    }

    /// Who asks, for the desk's visibility rules.
    pub(crate) fn viewer(&self) -> Viewer<'_> {
        Viewer {
            user: &self.user,
            role: self.role,
        }
    }

    /// The conversation the caller named, if they are staff and see it: `403` for others,
    /// `404` for a conversation they do not see (existence does not leak).
    pub(crate) fn staff_conversation(&self, desk: &Desk<'_>, room_id: &str) -> Result<OwnedRoomId> {
        self.require_staff()?;
        let room_id =
            RoomId::parse(room_id).map_err(|_| field_error("room_id", "not a valid room id"))?;
        queries::conversation(desk, &self.viewer(), &room_id)?;
        Ok(room_id)
    }

    /// `403` unless the caller is an agent or admin.
    pub(crate) fn require_staff(&self) -> Result<()> {
        match self.role {
            Role::None => Err(Error::forbidden(
                "Only support agents and admins may do this",
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn require_admin(&self) -> Result<()> {
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
            door: Door::Support,
        })
    }
}

/// `400 M_INVALID_PARAM` naming the field at fault.
pub(crate) fn field_error(field: &str, message: impl Into<String>) -> Error {
    Error::invalid_field(field, message.into())
}

/// Parses a JSON body: `M_NOT_JSON` when it is not JSON, `M_BAD_JSON` when it has the wrong
/// shape (with serde's description of what is wrong).
pub(crate) fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
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

/// A query parameter that is a time in milliseconds since the epoch, if given.
pub(crate) fn ms_param(q: &HashMap<String, String>, field: &str) -> Result<Option<u64>> {
    q.get(field)
        .map(|v| {
            v.parse()
                .map_err(|_| field_error(field, "milliseconds since the epoch"))
        })
        .transpose()
}

/// A `limit` query parameter: default 50, at most 500.
pub(crate) fn limit(value: Option<&str>) -> Result<usize> {
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
