//! Accounts as administrators change them: create, modify (Synapse's `PUT …/users/<id>`),
//! deactivate, reset passwords.

use ruma::{OwnedUserId, UserId};
use serde_json::json;

use super::Admin;
use crate::{
    error::{Error, Result},
    rooms::MemberProfile,
    support::actor::Actor,
    users::NewAccount,
};

/// An account to create.
pub(crate) struct NewUser<'a> {
    pub(crate) localpart: &'a str,
    pub(crate) password: Option<&'a str>,
    pub(crate) admin: bool,
    pub(crate) displayname: Option<String>,
}

/// Changes to an existing account; `None` leaves a field as it is.
#[derive(Default)]
pub(crate) struct AccountChange<'a> {
    pub(crate) password: Option<&'a str>,
    /// Log the account's devices out when the password changes (Synapse's default: yes).
    pub(crate) logout_devices: bool,
    pub(crate) displayname: Option<Option<String>>,
    pub(crate) avatar_url: Option<Option<String>>,
    pub(crate) admin: Option<bool>,
    pub(crate) deactivated: Option<bool>,
}

impl Admin<'_> {
    /// Creates a local account; `M_USER_IN_USE` when the id is taken (deactivated ones too).
    pub(crate) async fn create_user(
        &self,
        actor: &Actor<'_>,
        user: NewUser<'_>,
    ) -> Result<OwnedUserId> {
        let user_id = self
            .users
            .create(NewAccount {
                localpart: user.localpart,
                password: user.password,
                admin: user.admin,
                displayname: user.displayname,
            })
            .await?;
        self.audit(
            actor,
            "user.create",
            &user_id,
            json!({ "admin": user.admin }),
        )
        .await?;
        Ok(user_id)
    }

    /// Applies `change` to an existing account, in the order a caller expects: deactivation
    /// last (it clears the profile), reactivation first (so a new password can log in).
    pub(crate) async fn modify_user(
        &self,
        actor: &Actor<'_>,
        user: &UserId,
        change: AccountChange<'_>,
    ) -> Result<()> {
        let Some(record) = self.users.get(user)? else {
            return Err(Error::not_found("User not found"));
        };
        if change.deactivated == Some(false) && record.deactivated {
            self.users.reactivate(user).await?;
        }
        if let Some(password) = change.password {
            self.set_password(user, password, change.logout_devices)
                .await?;
        }
        if change.displayname.is_some() || change.avatar_url.is_some() {
            let record = self
                .users
                .set_profile(user, change.displayname.clone(), change.avatar_url.clone())
                .await?;
            let profile = MemberProfile {
                displayname: record.displayname,
                avatar_url: record.avatar_url,
            };
            self.rooms.propagate_profile(user, &profile).await?;
        }
        if let Some(admin) = change.admin {
            self.users.set_admin(user, admin).await?;
        }
        let fields = json!({
            "password": change.password.is_some(),
            "displayname": change.displayname.is_some(),
            "avatar_url": change.avatar_url.is_some(),
            "admin": change.admin,
            "deactivated": change.deactivated,
        });
        self.audit(actor, "user.modify", user, fields).await?;
        if change.deactivated == Some(true) && !record.deactivated {
            self.deactivate(actor, user).await?;
        }
        Ok(())
    }

    /// Deactivates an account: it leaves its rooms, every device is logged out, it never logs in
    /// again. Deactivating a deactivated account changes nothing.
    pub(crate) async fn deactivate(&self, actor: &Actor<'_>, user: &UserId) -> Result<()> {
        let Some(record) = self.users.get(user)? else {
            return Err(Error::not_found("User not found"));
        };
        if record.deactivated {
            return Ok(());
        }
        self.rooms.leave_all(user).await?;
        self.users.deactivate(user).await?;
        self.audit(actor, "user.deactivate", user, json!({})).await
    }

    /// Sets a new password; logs the account's devices out unless told not to.
    pub(crate) async fn reset_password(
        &self,
        actor: &Actor<'_>,
        user: &UserId,
        password: &str,
        logout_devices: bool,
    ) -> Result<()> {
        if !self.users.exists(user)? {
            return Err(Error::not_found("User not found"));
        }
        self.set_password(user, password, logout_devices).await?;
        self.audit(
            actor,
            "user.reset_password",
            user,
            json!({ "logout_devices": logout_devices }),
        )
        .await
    }

    async fn set_password(
        &self,
        user: &UserId,
        password: &str,
        logout_devices: bool,
    ) -> Result<()> {
        if password.is_empty() || password.len() > 512 {
            return Err(Error::invalid_param("password must be 1 to 512 bytes"));
        }
        self.users.set_password(user, password).await?;
        if logout_devices {
            self.users.logout_all(user).await?;
        }
        Ok(())
    }

    async fn audit(
        &self,
        actor: &Actor<'_>,
        action: &str,
        user: &UserId,
        details: serde_json::Value,
    ) -> Result<()> {
        self.desk
            .support
            .audit
            .write(actor, action, user.as_str(), details)
            .await
    }
}
