//! The append pipeline, under the room's append lock: choose the auth events, build and sign
//! the PDU, authorize it, plan every write it causes, then commit them as one atomic batch.
//!
//! Every step reads the room's [`Head`] (its forward extremity and current state) rather than
//! the store, and only the commit changes it, after the batch is applied: a refused event
//! leaves no trace. Message-like events whose authorization depends only on the state, sender
//! and type skip the auth check after the first of their kind (`Head::authorized`).

use std::sync::{Arc, atomic::Ordering};

use ruma::{
    EventId, OwnedEventId, OwnedUserId, UInt, UserId,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
};
use serde_json::value::RawValue as RawJsonValue;

use super::{
    Head, Loaded, RoomMeta, RoomService, StoredEvent, UserRoom, member_target, membership_of,
    relations::RelationWrites,
    resolve::{Resolution, ResolvedState},
    timeline::Txn,
};
use crate::{
    error::{Error, Result},
    events::{DagPosition, EventTemplate, Pdu, auth_types, build_pdu, check_auth, redact},
    storage::{Batch, Key, Table},
    stream::Pending,
};

/// The most extremities a new event references as its `prev_events` (Synapse's figure).
const MAX_PREV_EVENTS: usize = 10;
/// The most forward extremities a room keeps; past them the oldest are forgotten, as if
/// referenced. Only a peer sending forks on purpose gets near it.
const MAX_EXTREMITIES: usize = 20;

/// The auth events an append references.
pub(super) struct AuthEvents {
    pub(super) ids: Vec<OwnedEventId>,
    /// The events behind `ids`, loaded when they were chosen now; empty when the sender's
    /// events of this type were authorized before under the current state.
    loaded: Vec<Arc<Loaded>>,
    /// Whether an earlier event of this sender and type passed the auth rules under the
    /// current state, which then hold for this one too.
    preauthorized: bool,
    /// Whether this event's authorization, once checked, holds for the sender's next events of
    /// its type ([`authorization_is_cacheable`]).
    cacheable: bool,
}

/// A new event, built and signed here or received from another server.
pub(super) struct Built {
    pub(super) event_id: OwnedEventId,
    pub(super) json: String,
    pub(super) pdu: Pdu,
    pub(super) depth: UInt,
}

/// Where a state event goes in the room's current state.
struct NewState {
    kind: StateEventType,
    state_key: String,
    /// Its `RoomState` key (room, type, state key).
    row: Key,
}

/// Everything an append writes, decided before the write.
pub(super) struct Plan {
    event_id: OwnedEventId,
    depth: UInt,
    /// The new event, stored and parsed.
    loaded: Arc<Loaded>,
    stored_bytes: Vec<u8>,
    /// A state event's place in the current state, which it takes.
    state: Option<NewState>,
    /// The member event's target and membership.
    membership: Option<(OwnedUserId, MembershipState)>,
    /// A redaction's target, redacted, at its position.
    redacted: Option<(u64, StoredEvent)>,
    relations: RelationWrites,
    /// Stored events the append rewrites besides a redaction's target (an aggregated parent).
    rewritten: Vec<(u64, StoredEvent)>,
    /// Where the sending device's transaction is recorded.
    txn_key: Option<Key>,
    /// The room's forward extremities once the event is in.
    pub(super) extremities: Vec<OwnedEventId>,
    /// Other state keys a fork's resolution changed (`resolve.rs`).
    resolved: Vec<ResolvedState>,
}

impl Plan {
    /// Takes in what resolving the fork the event makes decided: the event loses its place
    /// in the state when it lost to a competing one, and other keys may change.
    pub(super) fn take_resolution(&mut self, resolution: Resolution) {
        if !resolution.event_wins {
            self.state = None;
            self.membership = None;
        }
        self.resolved = resolution.changes;
    }
}

impl RoomService {
    /// Appends without waiting for the disk; callers that append several events (room creation)
    /// wait once, for the last. Nothing is visible to readers before [`Stream::finish`].
    /// `None` instead of a pending write: the transaction was sent before, and this is the
    /// event it created.
    ///
    /// [`Stream::finish`]: crate::stream::Stream::finish
    pub(super) async fn append_pending(
        &self,
        room: &RoomMeta,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<Txn>,
    ) -> Result<(OwnedEventId, Option<Pending>)> {
        let mut head = room.head.lock().await;
        if room.blocked.load(Ordering::Acquire) && !is_departure(sender, &template) {
            return Err(Error::forbidden(
                "This room has been blocked on this server",
            ));
        }
        // Checked under the room lock: the mapping is written in the same batch as the event,
        // so a retry racing its original finds it here.
        if let Some(txn) = &txn
            && let Some(existing) = self.txn_event(sender, &room.room_id, &template.kind, txn)?
        {
            return Ok((existing, None));
        }
        let auth = self.choose_auth_events(room, &head, sender, &template)?;
        let built = self.build_event(room, &head, sender, &template, &auth.ids)?;
        self.authorize(room, &mut head, &built.pdu, template.kind, auth)?;
        let plan = self.plan_writes(room, &head, built, txn)?;
        let event_id = plan.event_id.clone();
        let pending = self.commit(room, &mut head, plan)?;
        Ok((event_id, Some(pending)))
    }

    /// The auth events the rules select for the event, from the current state: those the
    /// sender's last event of this type used when that authorization still holds.
    pub(super) fn choose_auth_events(
        &self,
        room: &RoomMeta,
        head: &Head,
        sender: &UserId,
        template: &EventTemplate,
    ) -> Result<AuthEvents> {
        let cacheable = authorization_is_cacheable(template);
        let preauthorized = cacheable
            .then(|| head.authorized.get(sender)?.get(&template.kind))
            .flatten();
        if let Some(ids) = preauthorized {
            return Ok(AuthEvents {
                ids: ids.clone(),
                loaded: Vec::new(),
                preauthorized: true,
                cacheable,
            });
        }
        let types = auth_types(
            &room.rules,
            &template.kind,
            sender,
            template.state_key.as_deref(),
            &template.content,
        )?;
        let mut loaded = Vec::with_capacity(types.len());
        for (kind, state_key) in &types {
            if let Some(pos) = head.state.get(kind, state_key) {
                loaded.push(self.event(pos)?);
            }
        }
        Ok(AuthEvents {
            ids: loaded.iter().map(|e| e.stored.event_id.clone()).collect(),
            loaded,
            preauthorized: false,
            cacheable,
        })
    }

    /// Builds, hashes and signs the PDU on top of the room's forward extremity.
    pub(super) fn build_event(
        &self,
        room: &RoomMeta,
        head: &Head,
        sender: &UserId,
        template: &EventTemplate,
        auth_events: &[OwnedEventId],
    ) -> Result<Built> {
        let from = head.extremities.len().saturating_sub(MAX_PREV_EVENTS);
        let prev_events = &head.extremities[from..];
        let depth = if !prev_events.is_empty() {
            head.depth.saturating_add(UInt::from(1u32))
        } else {
            UInt::from(1u32)
        };
        let (event_id, object) = build_pdu(
            &self.key,
            &room.version,
            &room.rules,
            &room.room_id,
            sender,
            template,
            DagPosition {
                prev_events,
                auth_events,
                depth,
            },
        )?;
        let json = serde_json::to_string(&object).expect("canonical JSON serializes");
        let pdu =
            Pdu::parse(event_id.clone(), &json).map_err(|e| Error::bad_json(e.to_string()))?;
        Ok(Built {
            event_id,
            json,
            pdu,
            depth,
        })
    }

    /// The auth rules against the current state (unless an earlier event of this sender and
    /// type passed them under the same state), then what the rules leave to the server. `kind`
    /// is the event's type, kept for the sender's next events when the authorization holds.
    pub(super) fn authorize(
        &self,
        room: &RoomMeta,
        head: &mut Head,
        pdu: &Pdu,
        kind: TimelineEventType,
        auth: AuthEvents,
    ) -> Result<()> {
        if !auth.preauthorized {
            check_auth(
                &room.rules,
                pdu,
                |id| match auth.loaded.iter().find(|e| e.stored.event_id == id) {
                    Some(e) => Some(e.pdu.clone()),
                    None => self.pdu_by_id(id).ok().flatten(),
                },
                |kind, key| {
                    let pos = head.state.get(kind, key)?;
                    self.event(pos).ok().map(|e| e.pdu.clone())
                },
            )?;
            if auth.cacheable {
                head.authorized
                    .entry(pdu.sender.clone())
                    .or_default()
                    .insert(kind, auth.ids);
            }
        }
        if pdu.kind == TimelineEventType::RoomRedaction {
            self.check_redaction(room, pdu)?;
        }
        Ok(())
    }

    /// Every write the event causes besides its own: the current state, the member's rooms,
    /// a redaction's target, the relations index, the device's transaction.
    pub(super) fn plan_writes(
        &self,
        room: &RoomMeta,
        head: &Head,
        built: Built,
        txn: Option<Txn>,
    ) -> Result<Plan> {
        let Built {
            event_id,
            json,
            pdu,
            depth,
        } = built;
        let mut relations = self.plan_relations(room, &pdu)?;
        let state = pdu.state_key.as_ref().map(|state_key| {
            let kind = pdu.kind.to_string();
            NewState {
                row: Key::new().u64(room.short).str(&kind).str(state_key),
                kind: StateEventType::from(kind),
                state_key: state_key.clone(),
            }
        });
        let prev_state = state
            .as_ref()
            .and_then(|s| head.state.get(&s.kind, &s.state_key));
        let membership = (pdu.kind == TimelineEventType::RoomMember)
            .then(|| member_target(&pdu).zip(membership_of(&pdu)))
            .flatten();
        let redacted = match pdu.redacts.as_deref() {
            Some(target) if pdu.kind == TimelineEventType::RoomRedaction => {
                self.redact_target(room, target)?
            }
            _ => None,
        };
        let txn_key = txn
            .as_ref()
            .map(|t| t.key(&pdu.sender, &room.room_id, &pdu.kind));
        let stored = StoredEvent {
            event_id: event_id.clone(),
            room: room.short,
            pdu: RawJsonValue::from_string(json).expect("valid JSON"),
            txn,
            prev_state,
            redacted_by: None,
            aggregated: false,
        };
        let stored_bytes = serde_json::to_vec(&stored).expect("stored events serialize");
        let rewritten = relations.take_marked().into_iter().collect();
        let mut extremities: Vec<OwnedEventId> = head
            .extremities
            .iter()
            .filter(|e| !pdu.prev_events.contains(e))
            .cloned()
            .collect();
        extremities.push(event_id.clone());
        let forgotten = extremities.len().saturating_sub(MAX_EXTREMITIES);
        extremities.drain(..forgotten);
        Ok(Plan {
            event_id,
            depth,
            loaded: Arc::new(Loaded { stored, pdu }),
            stored_bytes,
            state,
            membership,
            redacted,
            relations,
            rewritten,
            txn_key,
            extremities,
            resolved: Vec::new(),
        })
    }

    /// Applies the plan as one batch at the next stream position, refreshes the event cache
    /// for rewritten events, and moves the room's head and members.
    pub(super) fn commit(&self, room: &RoomMeta, head: &mut Head, plan: Plan) -> Result<Pending> {
        let Plan {
            event_id,
            depth,
            loaded,
            stored_bytes,
            state,
            membership,
            redacted,
            relations,
            mut rewritten,
            txn_key,
            extremities,
            resolved,
        } = plan;
        // Written only while there are several; the last event is the one otherwise.
        let forks = match (head.extremities.len() > 1, extremities.len() > 1) {
            (_, true) => Some(Some(
                serde_json::to_vec(&extremities).expect("ids serialize"),
            )),
            (true, false) => Some(None),
            (false, false) => None,
        };
        let rewrites = redacted.is_some() || !rewritten.is_empty();
        if rewrites {
            self.events.begin_rewrite();
        }
        let applied = self.stream.apply_and(
            |pos| {
                if let Some((target_pos, mut target)) = redacted {
                    target.redacted_by = Some(pos);
                    rewritten.push((target_pos, target));
                }
                let mut batch = event_batch(
                    pos,
                    room,
                    EventWrites {
                        event_id: &event_id,
                        stored_bytes,
                        state: state.as_ref(),
                        membership: membership.as_ref(),
                        rewritten: &rewritten,
                        relations: &relations,
                        txn_key,
                        forks,
                    },
                );
                for change in &resolved {
                    change.write(&mut batch, room, pos);
                }
                batch
            },
            |pos| self.events.insert_appended(pos, loaded.clone()),
        );
        if rewrites {
            self.end_rewrite(applied.is_ok(), rewritten)?;
        }
        let pending = applied?;

        head.extremities = extremities;
        head.depth = head.depth.max(depth);
        if let Some(NewState {
            kind, state_key, ..
        }) = state
        {
            head.state.insert(kind, state_key, pending.pos);
            head.authorized.clear();
        }
        if !resolved.is_empty() {
            head.authorized.clear();
        }
        for change in resolved {
            change.apply(room, head);
        }
        room.last_pos.store(pending.pos, Ordering::Release);
        if let Some((user, membership)) = &membership {
            room.set_membership(user, membership);
            // The target hears about its own membership even when it is no longer a member.
            self.notifier.wake([&**user]);
        }
        Ok(pending)
    }

    /// Ends a rewrite of stored events in the cache: their new copies once written; none after
    /// a failed write, so that caching resumes with what the store has.
    pub(super) fn end_rewrite(
        &self,
        written: bool,
        rewritten: Vec<(u64, StoredEvent)>,
    ) -> Result<()> {
        if !written {
            self.events.end_rewrite([]);
            return Ok(());
        }
        let mut loaded = Vec::with_capacity(rewritten.len());
        for (pos, stored) in rewritten {
            let pdu = stored.pdu()?;
            loaded.push((pos, Arc::new(Loaded { stored, pdu })));
        }
        self.events.end_rewrite(loaded);
        Ok(())
    }

    /// Beyond the auth rules: a redaction needs the redact power level unless the sender redacts
    /// their own event (room versions 3+ leave this check to the server).
    pub(super) fn check_redaction(&self, room: &RoomMeta, redaction: &Pdu) -> Result<()> {
        let Some(target) = redaction.redacts.as_deref() else {
            return Err(Error::bad_json("redaction without redacts"));
        };
        let target = self
            .pdu_by_id(target)?
            .filter(|t| t.room_id == room.room_id);
        let Some(target) = target else {
            return Err(Error::not_found("Event to redact not found"));
        };
        if target.sender == redaction.sender {
            return Ok(());
        }
        self.power_levels(room)?
            .check_redaction(&redaction.sender, &target.sender)
    }

    /// The target of a redaction, redacted per the room version, ready to be rewritten.
    fn redact_target(
        &self,
        room: &RoomMeta,
        target: &EventId,
    ) -> Result<Option<(u64, StoredEvent)>> {
        let Some(pos) = self.event_pos(target)? else {
            return Ok(None);
        };
        let stored = self.event(pos)?.stored.clone();
        if stored.room != room.short {
            return Ok(None);
        }
        let json = redact(stored.pdu.get(), &room.rules)?;
        let stored = StoredEvent {
            pdu: RawJsonValue::from_string(json).expect("valid"),
            ..stored
        };
        Ok(Some((pos, stored)))
    }
}

/// Whether the event is its sender leaving the room: all a blocked room still takes.
fn is_departure(sender: &UserId, template: &EventTemplate) -> bool {
    template.kind == TimelineEventType::RoomMember
        && template.state_key.as_deref() == Some(sender.as_str())
        && serde_json::from_str::<serde_json::Value>(template.content.get())
            .is_ok_and(|c| c["membership"] == "leave")
}

/// What an event's batch holds besides the event's own position.
struct EventWrites<'a> {
    event_id: &'a EventId,
    stored_bytes: Vec<u8>,
    state: Option<&'a NewState>,
    membership: Option<&'a (OwnedUserId, MembershipState)>,
    rewritten: &'a [(u64, StoredEvent)],
    relations: &'a RelationWrites,
    txn_key: Option<Key>,
    /// The room's extremities to keep (`Some(Some)`), to drop (`Some(None)`), or unchanged.
    forks: Option<Option<Vec<u8>>>,
}

/// The batch of an event appended at `pos`. Runs under the stream lock: it only assembles.
fn event_batch(pos: u64, room: &RoomMeta, w: EventWrites<'_>) -> Batch {
    let mut batch = Batch::new();
    batch.put(Table::Events, pos.to_be_bytes().to_vec(), w.stored_bytes);
    batch.put(
        Table::EventIds,
        w.event_id.as_bytes().to_vec(),
        pos.to_be_bytes().to_vec(),
    );
    batch.put(
        Table::Timeline,
        Key::new().u64(room.short).u64(pos),
        Vec::new(),
    );
    if let Some(state) = w.state {
        batch.put(
            Table::RoomState,
            state.row.clone(),
            pos.to_be_bytes().to_vec(),
        );
        batch.put(Table::StateHistory, state.row.clone().u64(pos), Vec::new());
    }
    if let Some((user, membership)) = w.membership {
        put_user_room(&mut batch, user, room, membership, pos);
    }
    for (target_pos, target) in w.rewritten {
        batch.put(
            Table::Events,
            target_pos.to_be_bytes().to_vec(),
            serde_json::to_vec(target).expect("serializes"),
        );
    }
    w.relations.write(&mut batch, pos);
    if let Some(key) = w.txn_key {
        batch.put(Table::TxnIds, key, w.event_id.as_bytes().to_vec());
    }
    match w.forks {
        Some(Some(ids)) => batch.put(Table::Extremities, room.short.to_be_bytes().to_vec(), ids),
        Some(None) => batch.delete(Table::Extremities, room.short.to_be_bytes().to_vec()),
        None => {}
    }
    batch
}

/// Whether an event's authorization depends on nothing but the room's state, its sender and its
/// type, so that one check holds for every such event until the state changes. That is every
/// non-state event but a redaction (whose rules in rooms v1–2, and our own check, read the
/// target); the state-keyed types whose rules read their content are state events anyway, but
/// are named so that a malformed one without a state key is still checked in full.
fn authorization_is_cacheable(template: &EventTemplate) -> bool {
    template.state_key.is_none()
        && !matches!(
            template.kind,
            TimelineEventType::RoomRedaction
                | TimelineEventType::RoomCreate
                | TimelineEventType::RoomMember
                | TimelineEventType::RoomPowerLevels
        )
}

/// Records `user`'s membership in the room as of the event at `pos` (`UserRooms`).
pub(super) fn put_user_room(
    batch: &mut Batch,
    user: &UserId,
    room: &RoomMeta,
    membership: &MembershipState,
    pos: u64,
) {
    let record = UserRoom {
        membership: membership.clone(),
        pos,
    };
    batch.put(
        Table::UserRooms,
        Key::new().str(user.as_str()).str(room.room_id.as_str()),
        serde_json::to_vec(&record).expect("serializes"),
    );
}
