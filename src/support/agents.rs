//! Agents: who is available for a conversation, and whose turn it is.
//!
//! One rule says whether an agent can take a conversation now, used by automatic assignment and
//! shown by `GET /agents`: online, and holding fewer open or pending conversations than their
//! capacity. Among the available, conversations go round-robin: least recently given one first.

use std::collections::HashMap;

use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId};

use super::{Desk, changes::ChangeGuard};
use crate::{config::AgentConfig, error::Result};

/// An agent as assignment sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentStatus {
    /// The presence they last set (`offline` when they never did).
    pub(crate) presence: String,
    /// Open and pending conversations assigned to them.
    pub(crate) load: usize,
    /// Whether they can take a conversation now: online and under capacity.
    pub(crate) available: bool,
}

/// Where `agent` stands now.
pub(crate) fn status(desk: &Desk<'_>, agent: &AgentConfig) -> Result<AgentStatus> {
    let presence = desk
        .presence
        .get(&agent.user)
        .map_or_else(|| "offline".to_owned(), |p| p.presence.to_string());
    let load = desk.support.index.load(&agent.user)?;
    Ok(AgentStatus {
        available: can_take(desk.presence.is_online(&agent.user), load, agent),
        presence,
        load,
    })
}

/// The rule: an agent can take a conversation when online and under capacity.
fn can_take(online: bool, load: usize, agent: &AgentConfig) -> bool {
    online && load < agent.capacity as usize
}

/// The next agent in turn who is available, to give a conversation to. Under the desk's change
/// lock, which the caller holds: loads only change under it, so two conversations decided at
/// once cannot both take an agent's last place.
pub(crate) fn next_available(
    desk: &Desk<'_>,
    _held: &ChangeGuard<'_>,
) -> Result<Option<OwnedUserId>> {
    first_available(desk)
}

/// Whether some agent looks available, without the change lock: a cheap look before deciding
/// under it, which may be wrong by the time the lock is taken.
pub(crate) fn anyone_available(desk: &Desk<'_>) -> Result<bool> {
    Ok(first_available(desk)?.is_some())
}

fn first_available(desk: &Desk<'_>) -> Result<Option<OwnedUserId>> {
    let staff = desk.support.roster.staff();
    let agents = staff.agents();
    for i in desk.support.turns.order(agents) {
        let agent = &agents[i];
        // Presence first: it is in memory, the load is an index scan.
        let online = desk.presence.is_online(&agent.user);
        if online && can_take(online, desk.support.index.load(&agent.user)?, agent) {
            return Ok(Some(agent.user.clone()));
        }
    }
    Ok(None)
}

/// When each agent was last given a conversation: the round-robin order.
#[derive(Default)]
pub(crate) struct RoundRobin(Mutex<HashMap<OwnedUserId, u64>>);

impl RoundRobin {
    /// Indexes into `agents` in turn: least recently given a conversation first, then in
    /// configuration order.
    pub(crate) fn order(&self, agents: &[AgentConfig]) -> Vec<usize> {
        let last = self.0.lock();
        let mut order: Vec<usize> = (0..agents.len()).collect();
        order.sort_by_key(|&i| (last.get(&agents[i].user).copied().unwrap_or(0), i));
        order
    }

    /// Records that `agent` was just given a conversation.
    pub(crate) fn mark(&self, agent: &UserId) {
        let mut last = self.0.lock();
        let next = last.values().max().copied().unwrap_or(0) + 1;
        last.insert(agent.to_owned(), next);
    }
}

#[cfg(test)]
mod tests {
    use ruma::owned_user_id;

    use super::*;

    #[test]
    fn turns_go_to_the_least_recently_given_then_in_config_order() {
        let agent = |user: OwnedUserId| AgentConfig { user, capacity: 1 };
        let agents = [
            agent(owned_user_id!("@a:x")),
            agent(owned_user_id!("@b:x")),
            agent(owned_user_id!("@c:x")),
        ];
        let turns = RoundRobin::default();
        assert_eq!(turns.order(&agents), [0, 1, 2]);
        turns.mark(&agents[0].user);
        assert_eq!(turns.order(&agents), [1, 2, 0]);
        turns.mark(&agents[2].user);
        assert_eq!(turns.order(&agents), [1, 0, 2]);
        turns.mark(&agents[1].user);
        assert_eq!(turns.order(&agents), [0, 2, 1]);
    }
}
