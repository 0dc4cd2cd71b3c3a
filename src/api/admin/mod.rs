//! The admin API: `/_charla/admin/v1/` for everything `charla admin` does, and Synapse's admin
//! endpoints in Synapse's shapes, so synapse-admin and scripts written for Synapse work.
//!
//! Every handler takes an [`Administrator`] before anything else: the extractor runs before the
//! body is read or anything is looked up, and answers 401 to a caller without a valid token and
//! 403 `M_FORBIDDEN` to one who is not an administrator. Administrators are accounts with the
//! admin flag, the desk's admins (`[support] admins` and roles set with `user set-role`), and the
//! holder of `admin.token` (`users::admin_token`). Handlers call services; every change they
//! make is written to the audit log with who asked (`support::audit`).

mod appservices;
mod backup;
mod conversations;
mod register;
mod roles;
mod rooms;
mod search;
mod stats;
mod tickets;
mod users;

use std::sync::Arc;

use axum::{
    Router,
    extract::{FromRequest, FromRequestParts, Request},
};
use http::request::Parts;
use ruma::{OwnedUserId, UserId};
use serde::de::DeserializeOwned;

use crate::{
    api::{
        ruma::{AuthRequirement, access_token, authenticate, read_body},
        support::{Caller, Door, json_body},
    },
    error::{Error, Result},
    services::Services,
    support::{Role, actor::Actor},
};

/// Charla's own admin API.
pub(crate) const PREFIX: &str = "/_charla/admin/v1";

pub(crate) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = register::routes(r);
    let r = users::routes(r);
    let r = stats::routes(r);
    let r = conversations::routes(r);
    let r = tickets::routes(r);
    let r = appservices::routes(r);
    let r = roles::routes(r);
    let r = backup::routes(r);
    let r = search::routes(r);
    rooms::routes(r)
}

/// A caller the admin API serves.
pub(crate) struct Administrator {
    /// The administrator's account; `None` for the holder of `admin.token`.
    pub(crate) user: Option<OwnedUserId>,
}

impl Administrator {
    /// Who asks, for the desk and the audit log: the admin's account, or the bot the
    /// `admin.token` holder acts through.
    pub(crate) fn actor<'a>(&'a self, bot: &'a UserId) -> Actor<'a> {
        match &self.user {
            Some(user) => Actor::Admin { user, token: false },
            None => Actor::Admin {
                user: bot,
                token: true,
            },
        }
    }
}

impl Administrator {
    /// The administrator as a caller of the support API's conversations and tickets: a support
    /// admin (who sees everything), whose changes are audited as made through the admin API.
    pub(crate) fn caller(&self, bot: &UserId) -> Caller {
        Caller {
            user: self.user.clone().unwrap_or_else(|| bot.to_owned()),
            role: Role::Admin,
            door: Door::Admin {
                token: self.user.is_none(),
            },
        }
    }
}

impl FromRequestParts<Arc<Services>> for Administrator {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Services>) -> Result<Self> {
        if access_token(parts).is_some_and(|token| s.admin_token.matches(&token)) {
            return Ok(Administrator { user: None });
        }
        let who = authenticate(s, parts, AuthRequirement::Required)?
            .ok_or_else(|| Error::missing_token("Missing access token"))?;
        let flagged = s
            .users
            .get(&who.user_id)?
            .is_some_and(|account| account.admin && !account.deactivated);
        if flagged || s.support.role(&who.user_id) == Role::Admin {
            Ok(Administrator {
                user: Some(who.user_id),
            })
        } else {
            Err(Error::forbidden("You are not a server admin"))
        }
    }
}

/// A JSON body, read within `limits.max_request_bytes` once the handler's [`Administrator`] is
/// established (extractors run in order, the body last). Empty means `{}`: Synapse's tools send
/// bodiless POSTs and DELETEs.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<Arc<Services>> for Body<T> {
    type Rejection = Error;

    async fn from_request(request: Request, s: &Arc<Services>) -> Result<Self> {
        let bytes = read_body(s, request.into_body()).await?;
        json_body(&bytes).map(Body)
    }
}

/// A user id from the path: a full id, or a localpart of this server.
pub(crate) fn user_param(s: &Services, user: &str) -> Result<OwnedUserId> {
    let parsed = if user.starts_with('@') {
        UserId::parse(user).ok()
    } else {
        UserId::parse_with_server_name(user, &s.config.server_name).ok()
    };
    parsed.ok_or_else(|| Error::invalid_param(format!("{user:?} is not a user id")))
}

/// A room id from the path.
pub(crate) fn room_param(room: &str) -> Result<ruma::OwnedRoomId> {
    ruma::RoomId::parse(room)
        .map_err(|_| Error::invalid_param(format!("{room:?} is not a room id")))
}
