//! The ephemeral parts of a sync: presence, and each joined room's receipts and typing.

use std::collections::HashSet;

use ruma::{OwnedRoomId, serde::Raw};
use serde_json::{json, value::to_raw_value};

use super::{SyncContext, SyncRequest};
use crate::{error::Result, rooms::RoomMeta};

/// Presence of the users the syncer shares a room with, changed since the token.
pub(super) fn presence(
    ctx: &SyncContext<'_>,
    req: &SyncRequest,
    response: &mut ruma::api::client::sync::sync_events::v3::Response,
) -> Result<()> {
    let changed = ctx.s.presence.changed_since(req.since.map(|t| t.ephemeral));
    if changed.is_empty() {
        return Ok(());
    }
    let me = &ctx.who.user_id;
    let mine: HashSet<OwnedRoomId> = ctx.s.rooms.joined_rooms(me)?.into_iter().collect();
    for (user, view) in changed {
        if !req.filter.presence_allows(&user) {
            continue;
        }
        let shares_room = user == *me
            || ctx
                .s
                .rooms
                .joined_rooms(&user)?
                .iter()
                .any(|r| mine.contains(r));
        if shares_room {
            let event = json!({ "type": "m.presence", "sender": user, "content": view });
            response
                .presence
                .events
                .push(Raw::from_json(to_raw_value(&event).expect("json")));
        }
    }
    Ok(())
}

/// A joined room's `m.receipt` and `m.typing` events changed since the token, or the current
/// ones when the room is new to the client (`since` is `None`).
pub(super) fn room_events<T>(
    ctx: &SyncContext<'_>,
    req: &SyncRequest,
    room: &RoomMeta,
    since: Option<u64>,
    head: u64,
) -> Result<Vec<Raw<T>>> {
    let mut events = Vec::new();
    if req.filter.ephemeral_allows("m.receipt")
        && let Some(event) =
            ctx.s
                .receipts
                .receipt_event(room.short, &ctx.who.user_id, since, head)?
    {
        events.push(Raw::from_json(to_raw_value(&event).expect("json")));
    }
    let typing_since = since.and(req.since.map(|t| t.ephemeral));
    if req.filter.ephemeral_allows("m.typing")
        && let Some(users) = ctx.s.typing.typing_since(&room.room_id, typing_since)
    {
        let event = json!({ "type": "m.typing", "content": { "user_ids": users } });
        events.push(Raw::from_json(to_raw_value(&event).expect("json")));
    }
    Ok(events)
}
