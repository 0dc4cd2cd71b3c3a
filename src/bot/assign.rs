//! Automatic assignment: round-robin over the agents who are online and under capacity.

use ruma::UserId;
use serde_json::Value;

use crate::{
    error::Result,
    support::{
        Desk, actions,
        actor::Actor,
        agents,
        filter::{Assignee, Filter, Sort},
    },
};

/// Conversations looked at per drain: the queue's oldest.
const QUEUE_BATCH: usize = 500;

/// Whether an ephemeral event says an agent is now online.
pub(crate) fn agent_came_online(desk: &Desk<'_>, event: &Value) -> bool {
    event["type"] == "m.presence"
        && event["content"]["presence"] == "online"
        && event["sender"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
            .is_some_and(|u| desk.support.capacity(&u).is_some())
}

/// Assigns waiting conversations, longest waiting first, while agents are available.
pub(crate) async fn drain_queue(desk: &Desk<'_>) -> Result<()> {
    if !agents::anyone_available(desk)? {
        return Ok(());
    }
    let filter = Filter {
        assignee: Assignee::Unassigned,
        ..Default::default()
    };
    let (mut queue, _) = desk
        .support
        .index
        .list(&filter, Sort::Activity, QUEUE_BATCH, None)?;
    queue.retain(|r| r.content.is_active());
    queue.sort_by_key(|r| (r.waiting_since.unwrap_or(r.created_ts), r.created_ts));
    let actor = Actor::Bot { cause: None };
    for record in queue {
        // A cheap look before taking the change lock; `assign_next` decides under it.
        if !agents::anyone_available(desk)? {
            break;
        }
        if let Err(e) = actions::assign_next(desk, &record.room_id, &actor).await {
            tracing::warn!(room = %record.room_id, error = %e, "automatic assignment failed");
        }
    }
    Ok(())
}
