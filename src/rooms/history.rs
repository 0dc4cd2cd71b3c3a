//! What another server's room held before this server joined it, for clients paginating back
//! past the join (`/messages`): fetched from a server in the room by `/backfill` when a client
//! reaches the end of what is here (federation's `gaps.rs`), kept as outliers and in order in
//! `PreJoin` (0: the newest). These events are never part of the timeline, the state or sync:
//! the room's state came whole with the join, and what came before is read, not replayed.

use std::{collections::HashSet, sync::Arc};

use ruma::{EventId, OwnedEventId};

use super::{Direction, Loaded, RoomMeta, RoomService, StoredEvent, corrupt};
use crate::{
    error::Result,
    events::Incoming,
    storage::{Batch, Key, Table, keys},
};

/// How many of the last kept events a fetch is checked against: twice a fetch's most.
const RECENT: u64 = 200;
/// How many of a joined room's first timeline events are looked at for the oldest one: the
/// join and the messages from before it taken in at the join (`gaps.rs`, 20).
const FIRST_EVENTS: usize = 64;

impl RoomService {
    /// Up to `limit` kept events from before the join, from the `from`th back, newest first,
    /// each with its place.
    pub(crate) fn pre_join_events(
        &self,
        room: &RoomMeta,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Arc<Loaded>)>> {
        let start = Key::new().u64(room.short).u64(from).into_vec();
        let end = Key::new().u64(room.short).u64(u64::MAX).into_vec();
        let mut out = Vec::new();
        for entry in self.store.range(Table::PreJoin, &start, &end).take(limit) {
            let (key, id) = entry?;
            let n = keys::trailing_u64(&key);
            let id = EventId::parse(String::from_utf8_lossy(&id).as_ref())
                .map_err(|e| corrupt("pre_join", e.to_string()))?;
            let (Some(pdu), Some(json)) = (self.known_pdu(&id)?, self.known_json(&id)?) else {
                continue;
            };
            let stored = StoredEvent {
                event_id: id,
                room: room.short,
                pdu: json,
                txn: None,
                prev_state: None,
                redacted_by: None,
                aggregated: false,
            };
            out.push((n, Arc::new(Loaded { stored, pdu })));
        }
        Ok(out)
    }

    /// How many events from before the join are kept.
    pub(crate) fn pre_join_count(&self, room: &RoomMeta) -> Result<u64> {
        let prefix = Key::new().u64(room.short).into_vec();
        Ok(self
            .store
            .last_with_prefix(Table::PreJoin, &prefix)?
            .map_or(0, |(key, _)| keys::trailing_u64(&key) + 1))
    }

    /// Where `/backfill` goes on from: the `prev_events` of the oldest event here (the oldest
    /// kept from before the join, or else the oldest of the room's first timeline events).
    pub(crate) fn pre_join_frontier(&self, room: &RoomMeta) -> Result<Vec<OwnedEventId>> {
        if let Some(n) = self.pre_join_count(room)?.checked_sub(1)
            && let Some((_, oldest)) = self.pre_join_events(room, n, 1)?.pop()
        {
            return Ok(oldest.pdu.prev_events.clone());
        }
        let mut oldest: Option<Arc<Loaded>> = None;
        for pos in self.timeline_positions(room.short, 0, Direction::Forward, FIRST_EVENTS)? {
            let event = self.event(pos)?;
            if oldest
                .as_ref()
                .is_none_or(|o| event.pdu.depth < o.pdu.depth)
            {
                oldest = Some(event);
            }
        }
        Ok(oldest
            .map(|o| o.pdu.prev_events.clone())
            .unwrap_or_default())
    }

    /// Keeps `events` (older than those kept, newest first) after the ones kept, skipping
    /// those kept already and the room's timeline events (the messages taken in at the join).
    /// Events the server knows otherwise (the state and auth chain the join took in) are kept
    /// in their place too, so that each fetch moves further back. How many were kept.
    pub(crate) async fn keep_pre_join(&self, room: &RoomMeta, events: &[Incoming]) -> Result<u64> {
        let mut n = self.pre_join_count(room)?;
        let recent: HashSet<OwnedEventId> = self
            .pre_join_events(room, n.saturating_sub(RECENT), RECENT as usize)?
            .into_iter()
            .map(|(_, e)| e.stored.event_id.clone())
            .collect();
        let mut kept = Vec::new();
        for event in events {
            if event.pdu.room_id != room.room_id || recent.contains(&event.event_id) {
                continue;
            }
            if let Some(pos) = self.event_pos(&event.event_id)?
                && self.store.contains(
                    Table::Timeline,
                    &Key::new().u64(room.short).u64(pos).into_vec(),
                )?
            {
                continue;
            }
            kept.push(event);
        }
        let unknown: Vec<&Incoming> = kept
            .iter()
            .copied()
            .filter(|e| !self.is_known(&e.event_id).unwrap_or(true))
            .collect();
        self.keep_outliers(unknown.iter().map(|e| (&e.pdu, e.json.as_str())))
            .await?;
        let mut batch = Batch::new();
        for event in &kept {
            batch.put(
                Table::PreJoin,
                Key::new().u64(room.short).u64(n),
                event.event_id.as_bytes().to_vec(),
            );
            n += 1;
        }
        if !batch.is_empty() {
            self.store.write_durable(batch).await?;
        }
        Ok(kept.len() as u64)
    }
}
