//! Events other servers add to a room: checked against the authorization rules and appended
//! through the same plan and commit as this server's own (`append.rs`), under the same lock.
//!
//! What is checked before (the PDU's id, signatures and content hash) is the federation
//! service's (`events::incoming`); what is checked here needs the room: the event's own auth
//! events (an event failing them is refused and kept nowhere), then the current state (an event
//! failing that is *soft-failed*: kept as an outlier, never shown, never a `prev_event`; spec
//! v1.16, server-server API, "Soft failure").
//!
//! The state after a remote event is the current state with the event applied when it extends
//! the room's forward extremities (or forks from an event after which no state changed);
//! otherwise the state before it and the current state are resolved (`resolve.rs`).

use std::sync::atomic::Ordering;

use ruma::{EventId, events::TimelineEventType};
use serde_json::value::RawValue as RawJsonValue;

use super::{RoomMeta, RoomService, StoredEvent, append::Built, corrupt};
use crate::{
    error::{Error, Result},
    events::{Incoming, Pdu, check_against_state, check_auth_events},
    storage::{Batch, Table},
    stream::Pending,
};

/// What became of a remote event.
pub(crate) enum Accepted {
    /// In the timeline; publish it.
    Appended(Pending),
    /// The server had it already.
    Known,
    /// Kept as an outlier: it failed the auth rules against the current state.
    SoftFailed(String),
}

impl RoomService {
    /// Appends an event another server created, once it passes the authorization rules.
    /// `M_FORBIDDEN` when it fails its own auth events, `M_NOT_FOUND` when the server lacks
    /// one of them.
    pub(crate) async fn append_remote(
        &self,
        room: &RoomMeta,
        incoming: Incoming,
    ) -> Result<Accepted> {
        self.append_received(room, incoming, false).await
    }

    /// Appends a message from before this server joined the room (backfilled after the join,
    /// so that what a customer wrote before the desk's bot came in is not lost). It must pass
    /// its own auth events; the current state does not apply to the past, and it changes
    /// neither the room's state nor its extremities (the join already points past it). State
    /// events and redactions of the past are not taken this way.
    pub(crate) async fn append_history(
        &self,
        room: &RoomMeta,
        incoming: Incoming,
    ) -> Result<Accepted> {
        if incoming.pdu.state_key.is_some() || incoming.pdu.kind == TimelineEventType::RoomRedaction
        {
            return Err(Error::bad_json("only messages are taken from the past"));
        }
        self.append_received(room, incoming, true).await
    }

    async fn append_received(
        &self,
        room: &RoomMeta,
        incoming: Incoming,
        history: bool,
    ) -> Result<Accepted> {
        let Incoming {
            event_id,
            json,
            pdu,
        } = incoming;
        if pdu.room_id != room.room_id {
            return Err(Error::bad_json("event of another room"));
        }
        let mut head = room.head.lock().await;
        if self.is_known(&event_id)? {
            return Ok(Accepted::Known);
        }
        if room.blocked.load(Ordering::Acquire) {
            return Err(Error::forbidden(
                "This room has been blocked on this server",
            ));
        }
        for id in &pdu.auth_events {
            if !self.is_known(id)? {
                return Err(Error::not_found(format!("auth event {id} is unknown")));
            }
        }
        check_auth_events(&room.rules, &pdu, |id| self.known_pdu(id).ok().flatten())?;
        // The state before it, when it forks from an older state: it must pass that too
        // (rejected otherwise), and the room's state becomes the resolution of both forks.
        let resolution = match history {
            true => None,
            false => self.resolve_fork(room, &head, &event_id, &pdu)?,
        };
        let against_state = match history {
            true => Ok(()),
            false => check_against_state(&room.rules, &pdu, |kind, key| {
                let pos = head.state.get(kind, key)?;
                self.event(pos).ok().map(|e| e.pdu.clone())
            })
            .and_then(|()| match pdu.kind {
                TimelineEventType::RoomRedaction => self.check_redaction(room, &pdu),
                _ => Ok(()),
            }),
        };
        if let Err(refusal) = against_state {
            let reason = refusal.to_string();
            tracing::info!(%event_id, %reason, "soft-failed a remote event");
            self.keep_outliers([(&pdu, json.as_str())]).await?;
            return Ok(Accepted::SoftFailed(reason));
        }
        let depth = pdu.depth;
        let built = Built {
            event_id,
            json,
            pdu,
            depth,
        };
        let mut plan = self.plan_writes(room, &head, built, None)?;
        if history {
            plan.extremities = head.extremities.clone();
        }
        if let Some(resolution) = resolution {
            plan.take_resolution(resolution);
        }
        Ok(Accepted::Appended(self.commit(room, &mut head, plan)?))
    }

    /// The room's forward extremities now.
    pub(crate) async fn extremities(&self, room: &RoomMeta) -> Vec<ruma::OwnedEventId> {
        room.head.lock().await.extremities.clone()
    }

    /// Whether the server has the event, in a timeline or as an outlier.
    pub(crate) fn is_known(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.event_pos(event_id)?.is_some()
            || self.store.contains(Table::Outliers, event_id.as_bytes())?)
    }

    /// An event the server has, in a timeline or as an outlier: what auth checks and peers
    /// asking for an event read.
    pub(crate) fn known_pdu(&self, event_id: &EventId) -> Result<Option<Pdu>> {
        if let Some(pdu) = self.pdu_by_id(event_id)? {
            return Ok(Some(pdu));
        }
        let Some(bytes) = self.store.get(Table::Outliers, event_id.as_bytes())? else {
            return Ok(None);
        };
        let stored: StoredEvent =
            serde_json::from_slice(&bytes).map_err(|e| corrupt("outliers", e.to_string()))?;
        Ok(Some(stored.pdu()?))
    }

    /// The stored JSON of an event the server has, in a timeline or as an outlier.
    pub(crate) fn known_json(&self, event_id: &EventId) -> Result<Option<Box<RawJsonValue>>> {
        if let Some(pos) = self.event_pos(event_id)? {
            return Ok(Some(self.event(pos)?.stored.pdu.clone()));
        }
        let Some(bytes) = self.store.get(Table::Outliers, event_id.as_bytes())? else {
            return Ok(None);
        };
        let stored: StoredEvent =
            serde_json::from_slice(&bytes).map_err(|e| corrupt("outliers", e.to_string()))?;
        Ok(Some(stored.pdu))
    }

    /// Keeps events outside every timeline, durably: a room's state and auth chain received
    /// when joining it, soft-failed events.
    pub(crate) async fn keep_outliers<'a>(
        &self,
        events: impl IntoIterator<Item = (&'a Pdu, &'a str)>,
    ) -> Result<()> {
        let mut batch = Batch::new();
        for (pdu, json) in events {
            let stored = StoredEvent {
                event_id: pdu.event_id.clone(),
                room: 0,
                pdu: RawJsonValue::from_string(json.to_owned())
                    .map_err(|e| Error::internal(e.to_string()))?,
                txn: None,
                prev_state: None,
                redacted_by: None,
                aggregated: false,
            };
            batch.put(
                Table::Outliers,
                pdu.event_id.as_bytes().to_vec(),
                serde_json::to_vec(&stored).expect("stored events serialize"),
            );
        }
        if !batch.is_empty() {
            self.store.write_durable(batch).await?;
        }
        Ok(())
    }
}

impl RoomService {
    /// Builds, signs and authorizes a local user's event without appending it: an invite of
    /// another server's user, which that server signs too before it is appended (through
    /// [`append_remote`](Self::append_remote), like any event that comes back signed).
    pub(crate) async fn build_unsent(
        &self,
        room: &RoomMeta,
        sender: &ruma::UserId,
        template: crate::events::EventTemplate,
    ) -> Result<(ruma::OwnedEventId, String)> {
        let mut head = room.head.lock().await;
        if room.blocked.load(Ordering::Acquire) {
            return Err(Error::forbidden(
                "This room has been blocked on this server",
            ));
        }
        let auth = self.choose_auth_events(room, &head, sender, &template)?;
        let built = self.build_event(room, &head, sender, &template, &auth.ids)?;
        self.authorize(room, &mut head, &built.pdu, template.kind, auth)?;
        Ok((built.event_id, built.json))
    }
}
