//! Who works on the desk: its admins, and its agents with their capacity.
//!
//! `[support] admins` and `[[support.agents]]` in the config are the bootstrap; roles an
//! administrator sets at runtime (`charla admin user set-role`, the admin API) are kept in the
//! store and override the config's for their user, so a stored `user` takes a config grant
//! away. The config stays readable as the starting point, and a role given at 3 a.m. survives
//! a restart without anyone editing files.
//!
//! Roles are read on every request (the API's role checks) and every event the bot handles, so
//! readers get an in-memory snapshot ([`Staff`]) that a change replaces whole, after the
//! change is on disk: a reader never sees a role the store could lose, nor a half-applied one.
//! Changes run under the desk's change lock, which assignment also holds, so an agent's
//! capacity never changes in the middle of a decision about them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use parking_lot::RwLock;
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Desk, Role, actor::Actor};
use crate::{
    config::{AgentConfig, SupportConfig},
    error::{Error, Result},
    storage::{Batch, Store, Table},
};

/// A role as an administrator sets it, and as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub(crate) enum Grant {
    Admin,
    Agent {
        capacity: u32,
    },
    /// No role on the desk, whatever the config says.
    User,
}

/// The desk's staff at one moment: who has which role, and the agents in assignment order.
#[derive(Debug, Default)]
pub(crate) struct Staff {
    roles: HashMap<OwnedUserId, Role>,
    /// The config's agents in its order, then the store's by user id.
    agents: Vec<AgentConfig>,
}

impl Staff {
    /// The config with the stored roles laid over it.
    fn combine(
        admins: &[OwnedUserId],
        agents: &[AgentConfig],
        stored: &BTreeMap<OwnedUserId, Grant>,
    ) -> Self {
        let mut staff = Staff::default();
        for agent in agents {
            match stored.get(&agent.user) {
                None => staff.add_agent(&agent.user, agent.capacity),
                Some(Grant::Agent { capacity }) => staff.add_agent(&agent.user, *capacity),
                Some(_) => {}
            }
        }
        for (user, grant) in stored {
            if let Grant::Agent { capacity } = grant
                && !agents.iter().any(|a| a.user == *user)
            {
                staff.add_agent(user, *capacity);
            }
        }
        // Admins win over agents, as in the config, where one may be listed in both.
        for admin in admins.iter().filter(|a| !stored.contains_key(*a)) {
            staff.roles.insert(admin.clone(), Role::Admin);
        }
        for (user, grant) in stored {
            match grant {
                Grant::Admin => {
                    staff.roles.insert(user.clone(), Role::Admin);
                }
                Grant::User => {
                    staff.roles.remove(user);
                }
                Grant::Agent { .. } => {}
            }
        }
        staff
    }

    fn add_agent(&mut self, user: &UserId, capacity: u32) {
        self.roles.insert(user.to_owned(), Role::Agent);
        self.agents.push(AgentConfig {
            user: user.to_owned(),
            capacity,
        });
    }

    pub(crate) fn role(&self, user: &UserId) -> Role {
        self.roles.get(user).copied().unwrap_or(Role::None)
    }

    /// An agent's capacity; `None` for users who are not agents.
    pub(crate) fn capacity(&self, user: &UserId) -> Option<u32> {
        self.agents
            .iter()
            .find(|a| a.user == user)
            .map(|a| a.capacity)
    }

    /// The agents, in assignment order.
    pub(crate) fn agents(&self) -> &[AgentConfig] {
        &self.agents
    }

    /// Agents and admins.
    pub(crate) fn members(&self) -> impl Iterator<Item = &OwnedUserId> {
        self.roles.keys()
    }
}

/// The roles kept in the store and the staff they make with the config's.
struct Snapshot {
    stored: BTreeMap<OwnedUserId, Grant>,
    staff: Arc<Staff>,
}

pub(crate) struct Roster {
    store: Store,
    admins: Vec<OwnedUserId>,
    agents: Vec<AgentConfig>,
    current: RwLock<Snapshot>,
}

impl Roster {
    /// The config's roles with those in the store laid over them.
    pub(crate) fn open(store: Store, config: &SupportConfig) -> Result<Self> {
        let mut stored = BTreeMap::new();
        for entry in store.scan_prefix(Table::SupportRoles, &[]) {
            let (key, value) = entry?;
            let corrupt = |e: String| Error::internal(format!("corrupt desk role: {e}"));
            let user = std::str::from_utf8(&key)
                .ok()
                .and_then(|u| UserId::parse(u).ok())
                .ok_or_else(|| corrupt("bad user id".into()))?;
            let grant: Grant =
                serde_json::from_slice(&value).map_err(|e| corrupt(e.to_string()))?;
            stored.insert(user, grant);
        }
        let staff = Arc::new(Staff::combine(&config.admins, &config.agents, &stored));
        Ok(Roster {
            store,
            admins: config.admins.clone(),
            agents: config.agents.clone(),
            current: RwLock::new(Snapshot { stored, staff }),
        })
    }

    /// The staff as they are now. Cheap: a lock held for one `Arc` clone.
    pub(crate) fn staff(&self) -> Arc<Staff> {
        self.current.read().staff.clone()
    }

    /// The user's grant as it stands (stored or from the config).
    fn effective(&self, user: &UserId) -> Grant {
        let staff = self.staff();
        match (staff.role(user), staff.capacity(user)) {
            (Role::Admin, _) => Grant::Admin,
            (Role::Agent, Some(capacity)) => Grant::Agent { capacity },
            _ => Grant::User,
        }
    }
}

/// A role to set: an agent's capacity is kept (or the config's default given) when not named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewRole {
    Admin,
    Agent { capacity: Option<u32> },
    User,
}

/// Sets a local user's role on the desk (kept in the store, overriding the config's), audited.
/// Returns the role they now have.
pub(crate) async fn set_role(
    desk: &Desk<'_>,
    user: &UserId,
    role: NewRole,
    actor: &Actor<'_>,
) -> Result<Grant> {
    if user.server_name() != desk.bot().server_name() {
        return Err(Error::invalid_field(
            "user_id",
            format!("{user} is not a user of this server"),
        ));
    }
    if user == desk.bot() {
        return Err(Error::invalid_field(
            "user_id",
            "the support bot has no role on the desk",
        ));
    }
    if !desk.users.exists(user)? {
        return Err(Error::not_found(format!("No such user {user}")));
    }
    let roster = &desk.support.roster;
    let held = desk.support.changes.lock().await;
    let grant = match role {
        NewRole::Admin => Grant::Admin,
        NewRole::User => Grant::User,
        NewRole::Agent { capacity } => Grant::Agent {
            capacity: capacity
                .or_else(|| roster.staff().capacity(user))
                .unwrap_or_else(crate::config::default_capacity),
        },
    };
    if let Grant::Agent { capacity: 0 } = grant {
        return Err(Error::invalid_field(
            "capacity",
            "capacity must be at least 1",
        ));
    }
    let mut stored = roster.current.read().stored.clone();
    stored.insert(user.to_owned(), grant);
    let staff = Arc::new(Staff::combine(&roster.admins, &roster.agents, &stored));
    let mut batch = Batch::new();
    batch.put(
        Table::SupportRoles,
        user.as_bytes().to_vec(),
        serde_json::to_vec(&grant).map_err(|e| Error::internal(e.to_string()))?,
    );
    let details = serde_json::to_value(grant).unwrap_or_else(|_| json!({}));
    desk.support
        .audit
        .record(&mut batch, actor, "role.set", user.as_str(), details)?;
    roster.store.write_durable(batch).await?;
    *roster.current.write() = Snapshot { stored, staff };
    drop(held);
    Ok(roster.effective(user))
}

#[cfg(test)]
mod tests {
    use ruma::owned_user_id;

    use super::*;

    fn agent(user: &str, capacity: u32) -> AgentConfig {
        AgentConfig {
            user: UserId::parse(user).unwrap(),
            capacity,
        }
    }

    #[test]
    fn stored_roles_override_the_config_for_their_user_only() {
        let admins = [owned_user_id!("@boss:x"), owned_user_id!("@root:x")];
        let agents = [agent("@ana:x", 1), agent("@bob:x", 5), agent("@root:x", 2)];
        let none = Staff::combine(&admins, &agents, &BTreeMap::new());
        assert_eq!(none.role(&owned_user_id!("@boss:x")), Role::Admin);
        // Listed as both: an admin who also takes conversations, as before.
        assert_eq!(none.role(&owned_user_id!("@root:x")), Role::Admin);
        assert_eq!(none.capacity(&owned_user_id!("@root:x")), Some(2));
        assert_eq!(none.role(&owned_user_id!("@zoe:x")), Role::None);

        let stored = BTreeMap::from([
            (owned_user_id!("@ana:x"), Grant::User),
            (owned_user_id!("@bob:x"), Grant::Agent { capacity: 9 }),
            (owned_user_id!("@boss:x"), Grant::Agent { capacity: 3 }),
            (owned_user_id!("@dan:x"), Grant::Agent { capacity: 2 }),
            (owned_user_id!("@eve:x"), Grant::Admin),
            (owned_user_id!("@carl:x"), Grant::Agent { capacity: 4 }),
        ]);
        let staff = Staff::combine(&admins, &agents, &stored);
        assert_eq!(staff.role(&owned_user_id!("@ana:x")), Role::None);
        assert_eq!(staff.capacity(&owned_user_id!("@ana:x")), None);
        assert_eq!(staff.capacity(&owned_user_id!("@bob:x")), Some(9));
        assert_eq!(staff.role(&owned_user_id!("@boss:x")), Role::Agent);
        assert_eq!(staff.role(&owned_user_id!("@eve:x")), Role::Admin);
        assert_eq!(staff.role(&owned_user_id!("@root:x")), Role::Admin);
        let order: Vec<&str> = staff.agents().iter().map(|a| a.user.as_str()).collect();
        // The config's order first, then the store's by user id.
        assert_eq!(order, ["@bob:x", "@root:x", "@boss:x", "@carl:x", "@dan:x"]);
        let mut members: Vec<&str> = staff.members().map(|u| u.as_str()).collect();
        members.sort_unstable();
        assert_eq!(
            members,
            [
                "@bob:x", "@boss:x", "@carl:x", "@dan:x", "@eve:x", "@root:x"
            ]
        );
    }

    #[test]
    fn grants_are_stored_as_tagged_json() {
        let agent = Grant::Agent { capacity: 3 };
        assert_eq!(
            serde_json::to_value(agent).unwrap(),
            json!({"role": "agent", "capacity": 3})
        );
        assert_eq!(
            serde_json::from_value::<Grant>(json!({"role": "user"})).unwrap(),
            Grant::User
        );
    }
}
