//! Filling a gap before a remote event: when a transaction's event points to events this server
//! lacks (it was down, or the sender caught up by sending only its latest event, as Synapse
//! does after an outage), they are asked of the sender (`POST get_missing_events`: the events
//! between this server's extremities and the new one, at most [`MAX_MISSING`]), checked and
//! appended oldest first. What the sender does not give stays a gap; the event is appended
//! anyway.

use std::net::IpAddr;

use reqwest::Method;
use ruma::ServerName;
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use super::{
    Federation,
    join::{encode, peer_error},
};
use crate::{
    error::Result,
    events::Incoming,
    rooms::{Accepted, RoomMeta, RoomService},
};

/// The most events asked for to fill one gap (Synapse asks for 10).
const MAX_MISSING: usize = 20;

impl Federation {
    /// Fetches and appends what `incoming`'s `prev_events` need that this server lacks.
    pub(super) async fn fill_gap(
        &self,
        rooms: &RoomService,
        origin: &ServerName,
        room: &RoomMeta,
        incoming: &Incoming,
        from: IpAddr,
    ) -> Result<()> {
        let mut lacking = false;
        for id in &incoming.pdu.prev_events {
            lacking |= !rooms.is_known(id)?;
        }
        if !lacking {
            return Ok(());
        }
        let body = json!({
            "limit": MAX_MISSING,
            "min_depth": 0,
            "earliest_events": rooms.extremities(room).await,
            "latest_events": [incoming.event_id],
        });
        let path = format!(
            "/_matrix/federation/v1/get_missing_events/{}",
            encode(room.room_id.as_str())
        );
        let answer = self
            .client
            .send_signed(origin, Method::POST, &path, Some(&body))
            .await
            .map_err(peer_error)?;
        let mut found = Vec::new();
        for raw in pdu_list(&answer, "events").iter().take(MAX_MISSING) {
            match self.verify_pdu(&room.rules, raw, Some(from)).await {
                Ok(event) if event.pdu.room_id == room.room_id => found.push(event),
                Ok(_) => {}
                Err(e) => tracing::info!(%origin, error = %e, "a missing event failed its checks"),
            }
        }
        found.sort_by_key(|e| e.pdu.depth);
        for event in found {
            let event_id = event.event_id.clone();
            match rooms.append_remote(room, event).await {
                Ok(Accepted::Appended(pending)) => rooms.publish(room, pending).await?,
                Ok(Accepted::Known | Accepted::SoftFailed(_)) => {}
                Err(e) => tracing::info!(%origin, %event_id, error = %e, "a missing event refused"),
            }
        }
        Ok(())
    }
}

/// The most messages from before a join taken in after it.
const MAX_BACKFILLED: usize = 20;

impl Federation {
    /// After a local user joined another server's room: the messages sent before the join
    /// (`/backfill` from the server joined through, at most [`MAX_BACKFILLED`]), appended
    /// oldest first after the join (`RoomService::append_history`), so that a conversation's
    /// opening words, written while the desk's bot was only invited, reach the desk.
    pub(super) async fn backfill_before_join(
        &self,
        rooms: &RoomService,
        server: &ServerName,
        room: &RoomMeta,
        before: &[ruma::OwnedEventId],
    ) -> Result<()> {
        let from: String = before
            .iter()
            .map(|id| format!("v={}&", encode(id.as_str())))
            .collect();
        let path = format!(
            "/_matrix/federation/v1/backfill/{}?{from}limit={MAX_BACKFILLED}",
            encode(room.room_id.as_str())
        );
        let answer = self
            .client
            .send_signed(server, Method::GET, &path, None)
            .await
            .map_err(peer_error)?;
        let mut found = Vec::new();
        for raw in pdu_list(&answer, "pdus").iter().take(MAX_BACKFILLED * 2) {
            match self.verify_pdu(&room.rules, raw, None).await {
                Ok(event)
                    if event.pdu.room_id == room.room_id
                        && event.pdu.state_key.is_none()
                        && event.pdu.kind != ruma::events::TimelineEventType::RoomRedaction =>
                {
                    found.push(event)
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(%server, error = %e, "a backfilled event failed its checks")
                }
            }
        }
        found.sort_by_key(|e| e.pdu.depth);
        for event in found.into_iter().rev().take(MAX_BACKFILLED).rev() {
            let event_id = event.event_id.clone();
            match rooms.append_history(room, event).await {
                Ok(Accepted::Appended(pending)) => rooms.publish(room, pending).await?,
                Ok(Accepted::Known | Accepted::SoftFailed(_)) => {}
                Err(e) => {
                    tracing::info!(%server, %event_id, error = %e, "a backfilled event refused")
                }
            }
        }
        Ok(())
    }
}

/// The most events asked of a server at once for a client paginating back (`/backfill`'s
/// bound here and in Synapse).
const MAX_HISTORY_PAGE: usize = 100;
/// The most servers asked for older history, in turn.
const MAX_HISTORY_SERVERS: usize = 3;

impl Federation {
    /// Up to `want` events from before this server joined `room`, from the `from`th back
    /// (0: the newest), newest first, each with its place: those kept, and when they run out,
    /// older ones fetched from a server in the room (`/backfill` from the oldest known event,
    /// each checked: signatures, content hash, the room) and kept (`rooms/history.rs`).
    pub(crate) async fn pre_join_page(
        &self,
        rooms: &RoomService,
        room: &RoomMeta,
        from: u64,
        want: usize,
    ) -> Result<Vec<(u64, std::sync::Arc<crate::rooms::Loaded>)>> {
        let want = want.min(MAX_HISTORY_PAGE);
        if rooms.pre_join_count(room)? < from.saturating_add(want as u64)
            && let Err(e) = self.fetch_pre_join(rooms, room, want).await
        {
            tracing::info!(room_id = %room.room_id, error = %e, "no older history");
        }
        rooms.pre_join_events(room, from, want)
    }

    async fn fetch_pre_join(
        &self,
        rooms: &RoomService,
        room: &RoomMeta,
        want: usize,
    ) -> Result<()> {
        let frontier = rooms.pre_join_frontier(room)?;
        if frontier.is_empty() {
            return Ok(());
        }
        let from: String = frontier
            .iter()
            .take(20)
            .map(|id| format!("v={}&", encode(id.as_str())))
            .collect();
        let path = format!(
            "/_matrix/federation/v1/backfill/{}?{from}limit={want}",
            encode(room.room_id.as_str())
        );
        let mut servers: Vec<ruma::OwnedServerName> = room
            .room_id
            .server_name()
            .map(ToOwned::to_owned)
            .into_iter()
            .collect();
        servers.extend(rooms.servers_in_room(room));
        servers.retain(|s| *s != self.server_name);
        servers.dedup();
        let mut last = crate::error::Error::not_found("no server in the room to ask");
        for server in servers.iter().take(MAX_HISTORY_SERVERS) {
            let answer = match self
                .client
                .send_signed(server, Method::GET, &path, None)
                .await
            {
                Ok(answer) => answer,
                Err(e) => {
                    last = peer_error(e);
                    continue;
                }
            };
            let mut found = Vec::new();
            for raw in pdu_list(&answer, "pdus").iter().take(MAX_HISTORY_PAGE) {
                match self.verify_pdu(&room.rules, raw, None).await {
                    Ok(event) if event.pdu.room_id == room.room_id => found.push(event),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::info!(%server, error = %e, "a backfilled event failed its checks")
                    }
                }
            }
            found.sort_by_key(|e| std::cmp::Reverse(e.pdu.depth));
            rooms.keep_pre_join(room, &found).await?;
            return Ok(());
        }
        Err(last)
    }
}

/// The PDUs an answer lists under `field` (none if it lists none, or not as a list).
fn pdu_list(answer: &Value, field: &str) -> Vec<Box<RawJsonValue>> {
    answer
        .get(field)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}
