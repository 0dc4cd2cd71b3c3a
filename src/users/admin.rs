//! What administrators see of accounts and change on them beyond what users do themselves:
//! the account list, the admin flag, reactivation.

use ruma::{OwnedUserId, UserId};

use super::{UserRecord, UserService};
use crate::{
    error::{Error, Result},
    storage::Table,
};

/// Which accounts to list (Synapse's `GET /_synapse/admin/v2/users` parameters).
#[derive(Debug, Default)]
pub(crate) struct UserQuery {
    /// Offset into the filtered list, in user id order.
    pub(crate) from: usize,
    pub(crate) limit: usize,
    /// Only accounts whose user id or display name contains this (case-insensitive).
    pub(crate) name: Option<String>,
    pub(crate) include_deactivated: bool,
    /// Only administrators (`Some(true)`) or only others (`Some(false)`).
    pub(crate) admins: Option<bool>,
}

/// One page of accounts, and how many match in all.
pub(crate) struct UserPage {
    pub(crate) users: Vec<(OwnedUserId, UserRecord)>,
    pub(crate) total: usize,
}

impl UserService {
    /// The accounts matching `query`. Scans the accounts table: an admin-rate request, one key
    /// per account, and the total must count them all anyway.
    pub(crate) fn list(&self, query: &UserQuery) -> Result<UserPage> {
        let needle = query.name.as_deref().map(str::to_lowercase);
        let mut users = Vec::new();
        let mut total = 0;
        for entry in self.store.scan_prefix(Table::Users, b"") {
            let (key, value) = entry?;
            let Ok(user) = UserId::parse(String::from_utf8_lossy(&key).as_ref()) else {
                continue;
            };
            let record: UserRecord =
                serde_json::from_slice(&value).map_err(|e| Error::internal(e.to_string()))?;
            if record.deactivated && !query.include_deactivated {
                continue;
            }
            if query.admins.is_some_and(|admins| admins != record.admin) {
                continue;
            }
            if let Some(needle) = &needle {
                let in_id = user.as_str().to_lowercase().contains(needle.as_str());
                let in_name = record
                    .displayname
                    .as_deref()
                    .is_some_and(|d| d.to_lowercase().contains(needle.as_str()));
                if !in_id && !in_name {
                    continue;
                }
            }
            if total >= query.from && users.len() < query.limit {
                users.push((user, record));
            }
            total += 1;
        }
        Ok(UserPage { users, total })
    }

    /// Grants or takes the server admin flag.
    pub(crate) async fn set_admin(&self, user: &UserId, admin: bool) -> Result<()> {
        let mut record = self
            .get(user)?
            .ok_or_else(|| Error::not_found("User not found"))?;
        if record.admin != admin {
            record.admin = admin;
            self.put(user, &record).await?;
        }
        Ok(())
    }

    /// Lifts a deactivation; the account logs in again once it has a password.
    pub(crate) async fn reactivate(&self, user: &UserId) -> Result<()> {
        let mut record = self
            .get(user)?
            .ok_or_else(|| Error::not_found("User not found"))?;
        if record.deactivated {
            record.deactivated = false;
            self.put(user, &record).await?;
            tracing::info!(user = %user, "account reactivated");
        }
        Ok(())
    }
}
