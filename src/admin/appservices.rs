//! Application services registered and unregistered at runtime: what it takes besides the
//! registration itself (`appservice::AppServices::add`/`remove`): the appservice's own
//! account, a sender that is no one else's, and the audit entry, written with the change.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use super::Admin;
use crate::{
    appservice::AppService,
    error::{Error, Result},
    storage::Batch,
    support::actor::Actor,
    users::{NewAccount, UserService},
};

impl Admin<'_> {
    /// Registers an appservice (its registration as YAML or JSON): checked like the config's
    /// files, its own user made, kept in the store with the audit entry, and in use at once,
    /// sent the events from now on. Bad input changes nothing.
    pub(crate) async fn register_appservice(
        &self,
        actor: &Actor<'_>,
        text: &str,
    ) -> Result<Arc<AppService>> {
        let appservices = self.desk.appservices;
        let asv = appservices.check_new(text)?;
        self.check_sender(&asv)?;
        ensure_appservice_user(self.users, &asv).await?;
        let mut batch = Batch::new();
        let details = json!({ "url": asv.registration.url, "sender": asv.sender });
        self.desk.support.audit.record(
            &mut batch,
            actor,
            "appservice.register",
            asv.id(),
            details,
        )?;
        appservices.add(asv, self.stream.head(), batch).await
    }

    /// Unregisters an appservice registered at runtime, audited; its pusher stops.
    pub(crate) async fn unregister_appservice(
        &self,
        actor: &Actor<'_>,
        id: &str,
    ) -> Result<Arc<AppService>> {
        let mut batch = Batch::new();
        self.desk.support.audit.record(
            &mut batch,
            actor,
            "appservice.unregister",
            id,
            json!({}),
        )?;
        self.desk.appservices.remove(id, batch).await
    }

    /// An appservice's own user must be its alone: not the support bot, not a person's
    /// account (one with a password), whom the appservice would then act as.
    fn check_sender(&self, asv: &AppService) -> Result<()> {
        let taken = asv.sender == self.desk.bot()
            || self
                .users
                .get(&asv.sender)?
                .is_some_and(|account| account.password_hash.is_some());
        if taken {
            return Err(Error::Matrix {
                status: StatusCode::CONFLICT,
                errcode: "M_INVALID_PARAM",
                message: format!("{} is an existing account", asv.sender).into(),
                extra: Some(json!({ "field": "sender_localpart" })),
            });
        }
        Ok(())
    }
}

/// The appservice's own user exists from its registration on, like Synapse's.
pub(crate) async fn ensure_appservice_user(users: &UserService, asv: &AppService) -> Result<()> {
    if !users.exists(&asv.sender)? {
        users
            .create(NewAccount {
                localpart: asv.sender.localpart(),
                password: None,
                admin: false,
                displayname: None,
            })
            .await?;
    }
    Ok(())
}
