//! State resolution for an event of another server that forks the room (room version 2's
//! algorithm, through ruma's state-res): what the room's state becomes when two servers
//! changed it at the same time, so that every server in the room ends with the same state.
//!
//! Most remote events extend the room's forward extremities, or fork from an event after
//! which no state changed: the state before them is the current state, and nothing is
//! resolved (the check is a walk of the current state in memory). Otherwise:
//!
//! 1. the state after each of the event's `prev_events` is read from the state history at
//!    its stream position, and resolved when there are several: the state before the event;
//! 2. the event must pass the auth rules against that state, or it is rejected (spec v1.16,
//!    server-server API, "Checks performed on receipt of a PDU", step 5);
//! 3. the current state and the state after the event are resolved: the room's new state.
//!
//! The state after an event is read from this server's linear state history, which holds
//! every state change it took in, in the order it took them in. For an event this server
//! appended on top of the current state (its own, and every remote event that did not fork)
//! that is the state the spec's DAG gives; for an event that forked it is the state resolved
//! when it came in. A key the resolution sets to an older event is written to the state
//! history at the new event's position, pointing at that older event (`StateHistory`'s value).

use std::collections::HashSet;

use ruma::{
    EventId, OwnedEventId, OwnedUserId,
    events::{StateEventType, room::member::MembershipState},
    state_res::{StateMap, utils::event_id_set::EventIdSet},
};

use super::{Head, RoomMeta, RoomService, corrupt, member_target, membership_of};
use crate::{
    error::{Error, Result},
    events::{Pdu, check_against_state},
    storage::{Batch, Key, Table},
};

/// What resolving a forking event changed in the room's state.
pub(super) struct Resolution {
    /// Whether the event itself holds its place in the new state (a state event may lose to
    /// the one it competed with; it is still in the timeline).
    pub(super) event_wins: bool,
    /// The other keys whose event changed, besides the event's own.
    pub(super) changes: Vec<ResolvedState>,
}

/// A state key the resolution set to an event already in the room.
pub(super) struct ResolvedState {
    kind: StateEventType,
    state_key: String,
    /// The stream position of the event that now holds the key.
    event_pos: u64,
    /// A member event's target and membership.
    membership: Option<(OwnedUserId, MembershipState)>,
}

impl ResolvedState {
    /// The writes, in the batch of the event appended at `pos` that caused them: the current
    /// state, and the state history at `pos` pointing at the event that holds the key.
    pub(super) fn write(&self, batch: &mut Batch, room: &RoomMeta, pos: u64) {
        let row = Key::new()
            .u64(room.short)
            .str(self.kind.to_string().as_str())
            .str(&self.state_key);
        let event = self.event_pos.to_be_bytes().to_vec();
        batch.put(Table::RoomState, row.clone(), event.clone());
        batch.put(Table::StateHistory, row.u64(pos), event);
        if let Some((user, membership)) = &self.membership {
            super::append::put_user_room(batch, user, room, membership, self.event_pos);
        }
    }

    /// The same change in memory, once written.
    pub(super) fn apply(self, room: &RoomMeta, head: &mut Head) {
        head.state.insert(self.kind, self.state_key, self.event_pos);
        if let Some((user, membership)) = &self.membership {
            room.set_membership(user, membership);
        }
    }
}

impl RoomService {
    /// The resolution an event of another server needs, or `None` when the state before it is
    /// the current state. `M_FORBIDDEN` when it fails the auth rules against the state
    /// before it.
    pub(super) fn resolve_fork(
        &self,
        room: &RoomMeta,
        head: &Head,
        event_id: &EventId,
        pdu: &Pdu,
    ) -> Result<Option<Resolution>> {
        let prevs: HashSet<&OwnedEventId> = pdu.prev_events.iter().collect();
        if prevs == head.extremities.iter().collect() {
            return Ok(None);
        }
        // The state a joined room's history holds is valid from its first timeline event on:
        // the state a join took in has positions before it in no meaningful order, and the
        // state before the join is the state at it.
        let first = self.first_timeline_pos(room.short)?;
        let mut positions = Vec::new();
        for id in &pdu.prev_events {
            if let Some(pos) = self.event_pos(id)?
                && self.event(pos)?.stored.room == room.short
            {
                positions.push(pos.max(first));
            }
        }
        // Unknown predecessors (a gap that could not be filled): the current state is all
        // this server knows to check the event against.
        let Some(&oldest) = positions.iter().min() else {
            return Ok(None);
        };
        if head.state.iter().all(|(_, _, pos)| pos <= oldest) {
            return Ok(None);
        }
        let mut forks = Vec::with_capacity(positions.len());
        for pos in positions {
            forks.push(self.state_map_at(room, head, pos)?);
        }
        // A resolution that cannot be made (an auth chain past its bound, power levels it
        // cannot read) leaves the event on the current state, as before this module: the event
        // is not refused for what this server failed to compute.
        let unresolved = |e: Error| {
            tracing::warn!(room_id = %room.room_id, %event_id, error = %e, "fork not resolved");
            Ok(None)
        };
        let mut state = match forks.len() {
            1 => forks.pop().unwrap_or_default(),
            _ => match self.resolve_state(room, &forks, None) {
                Ok(state) => state,
                Err(e) => return unresolved(e),
            },
        };
        check_against_state(&room.rules, pdu, |kind, key| {
            let id = state.get(&(kind.clone(), key.to_owned()))?;
            self.known_pdu(id).ok().flatten()
        })?;
        let key = pdu
            .state_key
            .as_ref()
            .map(|k| (StateEventType::from(pdu.kind.to_string()), k.clone()));
        if let Some(key) = &key {
            state.insert(key.clone(), event_id.to_owned());
        }
        let current = self.state_map_at(room, head, u64::MAX)?;
        let resolved = match self.resolve_state(room, &[current.clone(), state], Some(pdu)) {
            Ok(resolved) => resolved,
            Err(e) => return unresolved(e),
        };

        let mut resolution = Resolution {
            event_wins: false,
            changes: Vec::new(),
        };
        for ((kind, state_key), id) in resolved {
            if current.get(&(kind.clone(), state_key.clone())) == Some(&id) {
                continue;
            }
            if *id == *event_id {
                resolution.event_wins = true;
                continue;
            }
            let event_pos = self
                .event_pos(&id)?
                .ok_or_else(|| corrupt("events", format!("resolved state event {id} unknown")))?;
            let loaded = self.event(event_pos)?;
            let membership = (kind == StateEventType::RoomMember)
                .then(|| member_target(&loaded.pdu).zip(membership_of(&loaded.pdu)))
                .flatten();
            resolution.changes.push(ResolvedState {
                kind,
                state_key,
                event_pos,
                membership,
            });
        }
        if !resolution.changes.is_empty() || !resolution.event_wins {
            tracing::info!(
                room_id = %room.room_id,
                %event_id,
                changed = resolution.changes.len(),
                event_wins = resolution.event_wins,
                "resolved the state of a fork"
            );
        }
        Ok(Some(resolution))
    }

    /// The position of the room's first timeline event (a remotely joined room's: the join).
    fn first_timeline_pos(&self, short: u64) -> Result<u64> {
        let prefix = Key::new().u64(short).into_vec();
        Ok(self
            .store
            .scan_prefix(Table::Timeline, &prefix)
            .next()
            .transpose()?
            .map_or(0, |(key, _)| crate::storage::keys::trailing_u64(&key)))
    }

    /// The room's state after the event at stream position `at` (`u64::MAX`: now), as event
    /// ids: each current key's latest entry at or before `at`.
    fn state_map_at(
        &self,
        room: &RoomMeta,
        head: &Head,
        at: u64,
    ) -> Result<StateMap<OwnedEventId>> {
        let mut map = StateMap::new();
        for (kind, state_key, pos) in head.state.iter() {
            let pos = match pos <= at {
                true => Some(pos),
                false => self.state_pos_at(room.short, kind.to_string().as_str(), state_key, at)?,
            };
            if let Some(pos) = pos {
                let id = self.event(pos)?.stored.event_id.clone();
                map.insert((kind.clone(), state_key.to_owned()), id);
            }
        }
        Ok(map)
    }

    /// ruma's state resolution v2 of `forks`; `incoming` is the event being appended, not yet
    /// stored.
    fn resolve_state(
        &self,
        room: &RoomMeta,
        forks: &[StateMap<OwnedEventId>],
        incoming: Option<&Pdu>,
    ) -> Result<StateMap<OwnedEventId>> {
        let rules = room
            .rules
            .state_res
            .v2_rules()
            .ok_or_else(|| Error::internal("room version without state resolution v2"))?;
        let fetch = |id: &EventId| match incoming {
            Some(pdu) if pdu.event_id == id => Some(pdu.clone()),
            _ => self.known_pdu(id).ok().flatten(),
        };
        let mut chains = Vec::with_capacity(forks.len());
        for fork in forks {
            let mut starts: Vec<OwnedEventId> = Vec::new();
            for id in fork.values() {
                match fetch(id) {
                    Some(pdu) => starts.extend(pdu.auth_events),
                    None => continue,
                }
            }
            let chain = self.auth_chain_ids(&starts)?;
            chains.push(chain.into_iter().collect::<EventIdSet<OwnedEventId>>());
        }
        ruma::state_res::resolve(
            &room.rules.authorization,
            rules,
            forks.iter(),
            chains,
            fetch,
            // Rooms v10 and v11 do not consider the conflicted state subgraph (v12 does).
            |_| None,
        )
        .map_err(|e| Error::internal(format!("state resolution failed: {e}")))
    }
}
