//! Automatic assignment: round-robin over the agents who are online and under capacity.

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::Value;

use crate::{
    error::Result,
    services::Services,
    support::{
        actions::{self, Actor},
        index::{Filter, Sort},
    },
};

/// Conversations looked at per drain: the queue's oldest.
const QUEUE_BATCH: usize = 500;

/// The next agent in turn who is online and under capacity.
pub fn next_available(s: &Services) -> Result<Option<OwnedUserId>> {
    for agent in s.support.agents_in_turn() {
        let capacity = s.support.capacity(&agent).unwrap_or(0) as usize;
        if s.presence.is_online(&agent) && s.support.index.load(agent.as_str())? < capacity {
            return Ok(Some(agent));
        }
    }
    Ok(None)
}

/// Whether an ephemeral event says an agent is now online.
pub fn agent_came_online(s: &Services, event: &Value) -> bool {
    event["type"] == "m.presence"
        && event["content"]["presence"] == "online"
        && event["sender"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
            .is_some_and(|u| s.support.capacity(&u).is_some())
}

/// Assigns waiting conversations, longest waiting first, while agents are available.
pub async fn drain_queue(s: &Services) -> Result<()> {
    if next_available(s)?.is_none() {
        return Ok(());
    }
    let filter = Filter {
        assignee: Some(String::new()),
        ..Default::default()
    };
    let (mut queue, _) = s
        .support
        .index
        .list(&filter, Sort::Activity, QUEUE_BATCH, None)?;
    queue.retain(|r| r.content.is_active());
    queue.sort_by_key(|r| (r.waiting_since.unwrap_or(r.created_ts), r.created_ts));
    for record in queue {
        let Some(agent) = next_available(s)? else {
            break;
        };
        let room_id = RoomId::parse(&record.room_id)
            .map_err(|e| crate::error::Error::internal(e.to_string()))?;
        let actor = Actor {
            user: &s.support.bot,
            via: "bot",
            txn: None,
        };
        if let Err(e) = actions::assign(s, &room_id, Some(&agent), &actor).await {
            tracing::warn!(room = %room_id, error = %e, "automatic assignment failed");
        }
    }
    Ok(())
}
