//! Appending events: build the PDU, check the auth rules, store it in one atomic batch.

use std::sync::{Arc, atomic::Ordering};

use ruma::{OwnedEventId, RoomId, UInt, UserId, events::TimelineEventType};

use super::{Loaded, RoomMeta, RoomService, StoredEvent, UserRoom, member_target, membership_of};
use crate::{
    error::{Error, Result},
    events::{DagPosition, EventTemplate, Pdu, build_pdu, check_auth},
    storage::{Batch, Key, Table},
    stream::Pending,
};

/// The sending device's transaction, recorded so retries return the first event.
#[derive(Debug, Clone)]
pub struct Txn {
    pub device: String,
    pub txn_id: String,
}

impl Txn {
    /// Where the transaction is recorded. The spec scopes a txnId to a device *and* an HTTP
    /// endpoint: a retry is the same id on the same path, `/rooms/{roomId}/send/{eventType}/
    /// {txnId}`. So the same id sent to another room or as another event type is a new
    /// request, and must not be answered with the first room's event.
    fn key(&self, sender: &UserId, room_id: &RoomId, kind: &TimelineEventType) -> Key {
        Key::new()
            .str(sender.as_str())
            .str(&self.device)
            .str(room_id.as_str())
            .str(&kind.to_string())
            .str(&self.txn_id)
    }
}

impl RoomService {
    /// Appends an event to a room and waits until it is durable and visible.
    pub async fn append(
        &self,
        room: &RoomMeta,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<Txn>,
    ) -> Result<OwnedEventId> {
        let (event_id, pending) = self.append_pending(room, sender, template, txn).await?;
        match pending {
            Some(pending) => self.publish(room, pending).await?,
            // A retried transaction, answered with the event it created the first time: not
            // before that event is durable, which the first request may still be waiting for.
            None => self.wait_durable(&event_id).await?,
        }
        Ok(event_id)
    }

    /// The event a device's transaction created, if it was sent before, once that event is
    /// durable: "a 200 means durable" holds for a retry's answer too.
    pub async fn committed_txn_event(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        kind: &TimelineEventType,
        txn: &Txn,
    ) -> Result<Option<OwnedEventId>> {
        let Some(event_id) = self.txn_event(sender, room_id, kind, txn)? else {
            return Ok(None);
        };
        self.wait_durable(&event_id).await?;
        Ok(Some(event_id))
    }

    /// Waits until a stored event is durable and visible.
    async fn wait_durable(&self, event_id: &ruma::EventId) -> Result<()> {
        // The transaction mapping is written in the event's batch: its position exists.
        let Some(pos) = self.event_pos(event_id)? else {
            return Err(Error::internal("a transaction's event has no position"));
        };
        if self
            .stream
            .wait_visible(pos, std::time::Duration::from_secs(30))
            .await
        {
            Ok(())
        } else {
            Err(Error::internal(
                "the transaction's first attempt is not durable yet",
            ))
        }
    }

    /// Waits until an appended event is durable, then shows it to readers and wakes the room's
    /// syncs. Finishing a later event of the store first makes this one visible too (the log
    /// keeps order and visibility is a high-water mark); this then returns at once.
    pub async fn publish(&self, room: &RoomMeta, pending: Pending) -> Result<()> {
        self.stream.finish(pending).await?;
        self.notifier.wake(room.audience().iter().map(|u| &**u));
        Ok(())
    }

    /// Appends without waiting for the disk; callers that append several events (room creation)
    /// wait once, for the last. Nothing is visible to readers before [`Stream::finish`].
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
        // Checked under the room lock: the mapping is written in the same batch as the event,
        // so a retry racing its original finds it here.
        if let Some(txn) = &txn
            && let Some(existing) = self.txn_event(sender, &room.room_id, &template.kind, txn)?
        {
            return Ok((existing, None));
        }

        let cacheable = authorization_is_cacheable(&template);
        let cached_auth = cacheable
            .then(|| head.authorized.get(sender)?.get(&template.kind).cloned())
            .flatten();
        let (auth_events, auth_loaded) = match &cached_auth {
            Some(ids) => (ids.clone(), Vec::new()),
            None => {
                let auth_types = crate::events::auth_types(
                    &room.rules,
                    &template.kind,
                    sender,
                    template.state_key.as_deref(),
                    &template.content,
                )?;
                let mut loaded = Vec::with_capacity(auth_types.len());
                for (kind, state_key) in &auth_types {
                    if let Some(pos) = head.state.get(&(kind.to_string(), state_key.clone())) {
                        loaded.push(self.event(*pos)?);
                    }
                }
                let ids = loaded.iter().map(|e| e.stored.event_id.clone()).collect();
                (ids, loaded)
            }
        };
        let prev_events: Vec<OwnedEventId> = head.last_event.iter().cloned().collect();
        let depth = if head.last_event.is_some() {
            head.depth + UInt::from(1u32)
        } else {
            UInt::from(1u32)
        };

        let (event_id, object) = build_pdu(
            &self.key,
            &room.version,
            &room.rules,
            &room.room_id,
            sender,
            &template,
            DagPosition {
                prev_events: &prev_events,
                auth_events: &auth_events,
                depth,
            },
        )?;
        let json = serde_json::to_string(&object).expect("canonical JSON serializes");
        let pdu =
            Pdu::parse(event_id.clone(), &json).map_err(|e| Error::bad_json(e.to_string()))?;

        if cached_auth.is_none() {
            check_auth(
                &room.rules,
                &pdu,
                |id| match auth_loaded.iter().find(|e| e.stored.event_id == id) {
                    Some(e) => Some(e.pdu.clone()),
                    None => self.pdu_by_id(id).ok().flatten(),
                },
                |kind, key| {
                    let pos = head.state.get(&(kind.to_string(), key.to_owned()))?;
                    self.event(*pos).ok().map(|e| e.pdu.clone())
                },
            )?;
            if cacheable {
                head.authorized
                    .entry(sender.to_owned())
                    .or_default()
                    .insert(template.kind.clone(), auth_events.clone());
            }
        }
        if pdu.kind == TimelineEventType::RoomRedaction {
            self.check_redaction(room, &pdu)?;
        }
        let mut relation_writes = self.plan_relations(room, &pdu)?;

        let state_key = pdu.state_key.clone();
        let prev_state = state_key
            .as_ref()
            .and_then(|k| head.state.get(&(pdu.kind.to_string(), k.clone())).copied());
        let membership = (pdu.kind == TimelineEventType::RoomMember)
            .then(|| member_target(&pdu).zip(membership_of(&pdu)))
            .flatten();
        let redacted = match pdu.redacts.as_deref() {
            Some(target) if pdu.kind == TimelineEventType::RoomRedaction => {
                self.redact_target(room, target)?
            }
            _ => None,
        };

        let stored = StoredEvent {
            event_id: event_id.clone(),
            room: room.short,
            pdu: serde_json::value::RawValue::from_string(json).expect("valid JSON"),
            txn: txn.as_ref().map(|t| (t.device.clone(), t.txn_id.clone())),
            prev_state,
            redacted_by: None,
            aggregated: false,
        };
        let stored_bytes = serde_json::to_vec(&stored).expect("stored events serialize");
        let kind = pdu.kind.to_string();

        // Stored events this append rewrites: a redaction's target, a newly aggregated parent.
        let mut rewritten: Vec<(u64, StoredEvent)> =
            relation_writes.take_marked().into_iter().collect();
        if redacted.is_some() || !rewritten.is_empty() {
            self.events.begin_rewrite();
        }
        let loaded = Arc::new(Loaded { stored, pdu });
        let pdu = &loaded.pdu;
        let applied = self.stream.apply_and(
            |pos| {
                let mut batch = Batch::new();
                batch.put(Table::Events, pos.to_be_bytes().to_vec(), stored_bytes);
                batch.put(
                    Table::EventIds,
                    event_id.as_bytes().to_vec(),
                    pos.to_be_bytes().to_vec(),
                );
                batch.put(
                    Table::Timeline,
                    Key::new().u64(room.short).u64(pos),
                    Vec::new(),
                );
                if let Some(state_key) = &state_key {
                    let key = Key::new().u64(room.short).str(&kind).str(state_key);
                    batch.put(Table::RoomState, key.clone(), pos.to_be_bytes().to_vec());
                    batch.put(Table::StateHistory, key.u64(pos), Vec::new());
                }
                if let Some((user, membership)) = &membership {
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
                if let Some((target_pos, mut target)) = redacted {
                    target.redacted_by = Some(pos);
                    rewritten.push((target_pos, target));
                }
                for (target_pos, target) in &rewritten {
                    batch.put(
                        Table::Events,
                        target_pos.to_be_bytes().to_vec(),
                        serde_json::to_vec(target).expect("serializes"),
                    );
                }
                relation_writes.write(&mut batch, pos);
                if let Some(txn) = &txn {
                    batch.put(
                        Table::TxnIds,
                        txn.key(sender, &room.room_id, &pdu.kind),
                        event_id.as_bytes().to_vec(),
                    );
                }
                batch
            },
            |pos| self.events.insert_appended(pos, loaded.clone()),
        );
        if applied.is_ok() && !rewritten.is_empty() {
            let mut loaded = Vec::with_capacity(rewritten.len());
            for (target_pos, target) in rewritten {
                let pdu = target.pdu()?;
                loaded.push((
                    target_pos,
                    Arc::new(Loaded {
                        stored: target,
                        pdu,
                    }),
                ));
            }
            self.events.end_rewrite(loaded);
        } else if applied.is_err() {
            // A failed write may have begun a rewrite: close it so caching resumes.
            self.events.end_rewrite([]);
        }
        let pending = applied?;

        head.last_event = Some(event_id.clone());
        head.depth = depth;
        if let Some(state_key) = state_key {
            head.state.insert((kind, state_key), pending.pos);
            head.authorized.clear();
        }
        room.last_pos.store(pending.pos, Ordering::Release);
        if let Some((user, membership)) = &membership {
            room.set_membership(user, membership);
            // The target hears about its own membership even when it is no longer a member.
            self.notifier.wake([&**user]);
        }
        Ok((event_id, Some(pending)))
    }

    /// The event id a device's earlier send with this transaction id, to this room and as
    /// this event type, created.
    fn txn_event(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        kind: &TimelineEventType,
        txn: &Txn,
    ) -> Result<Option<OwnedEventId>> {
        let key = txn.key(sender, room_id, kind).into_vec();
        Ok(match self.store.get(Table::TxnIds, &key)? {
            Some(id) => Some(
                OwnedEventId::try_from(String::from_utf8_lossy(&id).into_owned())
                    .map_err(|e| Error::internal(e.to_string()))?,
            ),
            None => None,
        })
    }

    /// Beyond the auth rules: a redaction needs the redact power level unless the sender redacts
    /// their own event (room versions 3+ leave this check to the server).
    fn check_redaction(&self, room: &RoomMeta, redaction: &Pdu) -> Result<()> {
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
        let levels = self.power_levels(room)?;
        if levels.user_level(&redaction.sender) >= levels.redact {
            Ok(())
        } else {
            Err(Error::forbidden("You may only redact your own events"))
        }
    }

    /// The target of a redaction, redacted per the room version, ready to be rewritten.
    fn redact_target(
        &self,
        room: &RoomMeta,
        target: &ruma::EventId,
    ) -> Result<Option<(u64, StoredEvent)>> {
        let Some(pos) = self.event_pos(target)? else {
            return Ok(None);
        };
        let stored = self.event(pos)?.stored.clone();
        if stored.room != room.short {
            return Ok(None);
        }
        let object: ruma::CanonicalJsonObject =
            serde_json::from_str(stored.pdu.get()).map_err(|e| Error::internal(e.to_string()))?;
        let redacted = ruma::canonical_json::redact(object, &room.rules.redaction, None)
            .map_err(|e| Error::internal(e.to_string()))?;
        let json = serde_json::to_string(&redacted).expect("serializes");
        let stored = StoredEvent {
            pdu: serde_json::value::RawValue::from_string(json).expect("valid"),
            ..stored
        };
        Ok(Some((pos, stored)))
    }

    /// The room's current power levels (defaults when the event is absent).
    pub fn power_levels(&self, room: &RoomMeta) -> Result<PowerLevels> {
        let pdu = self.state_pdu(room.short, "m.room.power_levels", "")?;
        let creator = self
            .state_pdu(room.short, "m.room.create", "")?
            .map(|c| c.sender);
        Ok(PowerLevels::from_event(pdu.as_ref(), creator))
    }
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

/// The parts of `m.room.power_levels` the server consults outside the auth rules.
#[derive(Debug, Clone)]
pub struct PowerLevels {
    content: ruma::events::room::power_levels::RoomPowerLevelsEventContent,
    creator: Option<ruma::OwnedUserId>,
    has_event: bool,
    pub redact: ruma::Int,
}

impl PowerLevels {
    fn from_event(pdu: Option<&Pdu>, creator: Option<ruma::OwnedUserId>) -> Self {
        let content: ruma::events::room::power_levels::RoomPowerLevelsEventContent = pdu
            .and_then(|p| serde_json::from_str(p.content.get()).ok())
            .unwrap_or_else(|| {
                ruma::events::room::power_levels::RoomPowerLevelsEventContent::new(
                    &ruma::room_version_rules::AuthorizationRules::V11,
                )
            });
        let redact = content.redact;
        PowerLevels {
            content,
            creator,
            has_event: pdu.is_some(),
            redact,
        }
    }

    pub fn user_level(&self, user: &UserId) -> ruma::Int {
        if !self.has_event {
            // Without a power levels event the creator has 100 and everyone else 0.
            return if self.creator.as_deref() == Some(user) {
                100.into()
            } else {
                0.into()
            };
        }
        self.content
            .users
            .get(user)
            .copied()
            .unwrap_or(self.content.users_default)
    }

    /// The level needed to send a state event of this type.
    pub fn state_level(&self, kind: &str) -> ruma::Int {
        self.content
            .events
            .get(&kind.into())
            .copied()
            .unwrap_or(self.content.state_default)
    }

    /// What push rules need of the power levels (`sender_notification_permission`).
    pub fn push_context(
        &self,
        rules: &ruma::room_version_rules::AuthorizationRules,
    ) -> ruma::push::PushConditionPowerLevelsCtx {
        use ruma::events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsSource};
        RoomPowerLevels::new(
            RoomPowerLevelsSource::Original(self.content.clone()),
            rules,
            self.creator.clone(),
        )
        .into()
    }

    pub fn ban(&self) -> ruma::Int {
        self.content.ban
    }
    pub fn kick(&self) -> ruma::Int {
        self.content.kick
    }
    pub fn invite(&self) -> ruma::Int {
        self.content.invite
    }
}
