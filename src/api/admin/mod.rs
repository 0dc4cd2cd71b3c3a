//! The admin API: `/_charla/admin/v1/` for everything `charla admin` does, and Synapse's admin
//! endpoints in Synapse's shapes, so synapse-admin and scripts written for Synapse work.
//!
//! Every handler takes an [`Administrator`] before anything else: the extractor runs before the
//! body is read or anything is looked up, and answers 401 to a caller without a valid token and
//! 403 `M_FORBIDDEN` to one who is not an administrator. Administrators are accounts with the
//! admin flag, the desk's admins (`[support] admins` and roles set with `user set-role`), and the
//! holder of `admin.token` (`users::admin_token`). Handlers call services; every change they
//! make is written to the audit log with who asked (`support::audit`).

mod register;
mod rooms;
mod users;

use std::sync::Arc;

use axum::{Router, extract::FromRequestParts};
use http::request::Parts;
use ruma::{OwnedUserId, UserId};

use crate::{
    api::ruma::{AuthRequirement, access_token, authenticate},
    error::{Error, Result},
    services::Services,
    support::{Role, actor::Actor},
};

/// Charla's own admin API.
pub(crate) const PREFIX: &str = "/_charla/admin/v1";

pub(crate) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = register::routes(r);
    let r = users::routes(r);
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
