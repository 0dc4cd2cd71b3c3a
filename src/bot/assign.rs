//! Automatic assignment: round-robin over the agents who are online and under capacity.

use ruma::{RoomId, UserId};
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
    if actions::next_available(s)?.is_none() {
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
        // A cheap look before taking the change lock; `assign_next` decides under it.
        if actions::next_available(s)?.is_none() {
            break;
        }
        let room_id = RoomId::parse(&record.room_id)
            .map_err(|e| crate::error::Error::internal(e.to_string()))?;
        let actor = Actor {
            user: &s.support.bot,
            via: "bot",
            txn: None,
        };
        if let Err(e) = actions::assign_next(s, &room_id, &actor).await {
            tracing::warn!(room = %room_id, error = %e, "automatic assignment failed");
        }
    }
    Ok(())
}
