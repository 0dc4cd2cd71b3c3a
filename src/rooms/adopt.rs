//! A room of another server, taken in when a local user joins it: the state and auth chain its
//! resident server answered `send_join` with become this server's copy of the room, before the
//! join itself is appended (`append_remote`).
//!
//! The auth chain is kept as outliers. Each state event gets a stream position of its own and
//! takes its place in the current state and the state history, but not in the timeline: the
//! user sees the room's state, and its timeline from their join on.

use std::sync::Arc;

use ruma::{OwnedEventId, RoomId, RoomVersionId, UInt, events::StateEventType};
use serde_json::value::RawValue as RawJsonValue;

use super::{RoomMeta, RoomService, StoredEvent, member_target, membership_of};
use crate::{
    error::{Error, Result},
    events::Incoming,
    storage::{Batch, Key, Table},
};

/// A remote room's state as its resident server gave it, checked.
pub(crate) struct RemoteState {
    pub(crate) version: RoomVersionId,
    /// The state events, create event first.
    pub(crate) state: Vec<Incoming>,
    /// The auth chain's events that are not state.
    pub(crate) auth_chain: Vec<Incoming>,
    /// Where the join sits: its `prev_events` and depth.
    pub(crate) prev_events: Vec<OwnedEventId>,
    pub(crate) depth: UInt,
}

impl RoomService {
    /// Takes in a remote room's state (a room this server may already know, if its users left
    /// it: events it has keep their place). Returns the room, ready for the join.
    pub(crate) async fn adopt_remote_state(
        &self,
        room_id: &RoomId,
        remote: RemoteState,
    ) -> Result<Arc<RoomMeta>> {
        let room = match self.exists(room_id)? {
            true => self.room(room_id)?,
            false => self.register_room(room_id, remote.version.clone())?,
        };
        if room.version != remote.version {
            return Err(Error::bad_json("the room's version changed"));
        }
        let chain: Vec<_> = remote
            .auth_chain
            .iter()
            .map(|e| (&e.pdu, e.json.as_str()))
            .collect();
        self.keep_outliers(chain).await?;
        let mut head = room.head.lock().await;
        let mut last = None;
        for event in &remote.state {
            if let Some(pending) = self.adopt_state_event(&room, &mut head, event)? {
                last = Some(pending);
            }
        }
        head.authorized.clear();
        head.extremities = remote.prev_events;
        head.depth = head.depth.max(remote.depth);
        drop(head);
        if let Some(pending) = last {
            self.stream.finish(pending).await?;
        }
        Ok(room)
    }

    /// Records a local user's invite to, or knock on, a room of another server this server
    /// does not follow: the room (its version only, if new), the member event as its one state
    /// event, and the stripped state the other server sent, which the user's sync shows.
    pub(crate) async fn record_remote_membership(
        &self,
        version: RoomVersionId,
        invite: &Incoming,
        stripped: &[Box<RawJsonValue>],
    ) -> Result<()> {
        let room_id = &invite.pdu.room_id;
        let room = match self.exists(room_id)? {
            true => self.room(room_id)?,
            false => self.register_room(room_id, version)?,
        };
        let Some(user) = member_target(&invite.pdu) else {
            return Err(Error::bad_json("invite without a target"));
        };
        let mut batch = Batch::new();
        batch.put(
            Table::RemoteInvites,
            Key::new().u64(room.short).str(user.as_str()),
            serde_json::to_vec(stripped).expect("JSON"),
        );
        // Before the invite's position: writes land in order, so its wait covers this one.
        let _ = self.store.write(batch)?;
        let pending = {
            let mut head = room.head.lock().await;
            self.adopt_state_event(&room, &mut head, invite)?
        };
        if let Some(pending) = pending {
            self.stream.finish(pending).await?;
            self.notifier.wake([&*user]);
        }
        Ok(())
    }

    /// The stripped state another server sent with a local user's invite, if it did.
    pub(crate) fn remote_invite_state(
        &self,
        room: &RoomMeta,
        user: &ruma::UserId,
    ) -> Result<Option<Vec<Box<RawJsonValue>>>> {
        let key = Key::new().u64(room.short).str(user.as_str()).into_vec();
        let Some(bytes) = self.store.get(Table::RemoteInvites, &key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| super::corrupt("remote_invites", e.to_string()))
    }

    /// Gives a state event of another server a stream position and its place in the current
    /// state and the state history (not the timeline). `None` when the server had it.
    fn adopt_state_event(
        &self,
        room: &RoomMeta,
        head: &mut super::Head,
        event: &Incoming,
    ) -> Result<Option<crate::stream::Pending>> {
        if self.event_pos(&event.event_id)?.is_some() {
            return Ok(None);
        }
        let pdu = &event.pdu;
        let Some(state_key) = pdu.state_key.clone() else {
            return Ok(None);
        };
        let kind = pdu.kind.to_string();
        let row = Key::new().u64(room.short).str(&kind).str(&state_key);
        let membership = member_target(pdu).zip(membership_of(pdu));
        let stored = StoredEvent {
            event_id: event.event_id.clone(),
            room: room.short,
            pdu: RawJsonValue::from_string(event.json.clone())
                .map_err(|e| Error::internal(e.to_string()))?,
            txn: None,
            prev_state: head
                .state
                .get(&StateEventType::from(kind.as_str()), &state_key),
            redacted_by: None,
            aggregated: false,
        };
        let bytes = serde_json::to_vec(&stored).expect("stored events serialize");
        let loaded = Arc::new(super::Loaded {
            stored,
            pdu: pdu.clone(),
        });
        // Into the event cache under the stream lock, as every appended event: consumers near
        // the head read new events from there.
        let pending = self.stream.apply_and(
            |pos| {
                let mut batch = Batch::new();
                batch.put(Table::Events, pos.to_be_bytes().to_vec(), bytes);
                batch.put(
                    Table::EventIds,
                    event.event_id.as_bytes().to_vec(),
                    pos.to_be_bytes().to_vec(),
                );
                batch.put(Table::RoomState, row.clone(), pos.to_be_bytes().to_vec());
                batch.put(Table::StateHistory, row.clone().u64(pos), Vec::new());
                if let Some((user, membership)) = &membership {
                    super::append::put_user_room(&mut batch, user, room, membership, pos);
                }
                batch
            },
            |pos| self.events.insert_appended(pos, loaded),
        )?;
        head.state
            .insert(StateEventType::from(kind), state_key, pending.pos);
        head.authorized.clear();
        if let Some((user, membership)) = &membership {
            room.set_membership(user, membership);
        }
        Ok(Some(pending))
    }
}
