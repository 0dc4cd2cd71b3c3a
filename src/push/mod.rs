//! Push rules applied to events: unread counts, `/notifications`, and the pushers clients
//! register.
//!
//! Rules are evaluated when someone asks, not when an event is stored: a send then costs the same
//! in a room of two or of two hundred, and a user's counts follow their current rules. Counts are
//! cached per user and room with the range they cover, so a sync evaluates only the events that
//! arrived since the last one; a new read receipt starts the range again. `threads.rs` splits
//! them by thread for clients that ask; `gateway/` sends notifications to push gateways.

pub(crate) mod gateway;
mod pushers;
mod threads;

use std::{cell::OnceCell, collections::HashMap, panic::AssertUnwindSafe, sync::Arc};

use futures_util::FutureExt;
use parking_lot::Mutex;
use ruma::{
    OwnedUserId, UInt, UserId,
    events::AnySyncTimelineEvent,
    push::{Action, PushConditionRoomCtx, Ruleset},
    serde::Raw,
};

pub use pushers::PusherStore;
pub use threads::{ThreadedCounts, unread_by_thread};

use crate::{
    ephemeral::ReceiptService,
    error::Result,
    events::Pdu,
    rooms::{Direction, RoomMeta, RoomService},
    users::UserService,
};

/// Events examined at most when a user's counts in a room are computed from scratch: counts of
/// rooms with more unread events than this are a lower bound.
const MAX_COUNT_SCAN: usize = 10_000;
/// Cached entries before the cache starts over (each is a few dozen bytes).
const MAX_CACHED: usize = 200_000;

/// Unread notification and highlight counts of one user in one room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub notify: u64,
    pub highlight: u64,
}

/// Counts over the events in `(from, upto]`.
#[derive(Clone, Copy)]
struct Counted {
    from: u64,
    upto: u64,
    counts: Counts,
}

pub struct PushService {
    counts: Mutex<HashMap<(OwnedUserId, u64), Counted>>,
    thread_counts: Mutex<threads::ThreadCache>,
    pub pushers: PusherStore,
}

/// What one user's rules say about one event.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub actions: Vec<Action>,
    pub notify: bool,
    pub highlight: bool,
}

/// One user's push rules with what they need to know about one room.
pub struct RoomRules {
    ruleset: Arc<Ruleset>,
    ctx: PushConditionRoomCtx,
}

impl RoomRules {
    pub fn new(
        rooms: &RoomService,
        ruleset: Arc<Ruleset>,
        room: &RoomMeta,
        user: &UserId,
    ) -> Result<Self> {
        let display_name = rooms
            .state_pdu(room.short, "m.room.member", user.as_str())?
            .and_then(|m| {
                serde_json::from_str::<serde_json::Value>(m.content.get())
                    .ok()?
                    .get("displayname")?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| user.localpart().to_owned());
        let members = UInt::try_from(room.joined_count()).unwrap_or_default();
        let ctx =
            PushConditionRoomCtx::new(room.room_id.clone(), members, user.to_owned(), display_name)
                .with_power_levels(
                    rooms
                        .power_levels(room)?
                        .push_context(&room.rules.authorization),
                );
        Ok(RoomRules { ruleset, ctx })
    }

    /// The actions for `pdu`. A user's own events never notify them.
    pub fn evaluate(&self, pdu: &Pdu, raw: &serde_json::value::RawValue) -> Outcome {
        if pdu.sender == self.ctx.user_id {
            return Outcome::default();
        }
        let event = Raw::<AnySyncTimelineEvent>::from_json(raw.to_owned());
        // ruma builds a regex for a pattern with wildcards (a rule's, or the user's display
        // name) and panics when it is too big. Patterns are bounded when rules and names are
        // set, but rules stored earlier and events from elsewhere are not: one user's rules
        // must never take down the caller (a /sync, the push consumer). Such an event notifies
        // nobody. Without a thread-subscription callback the evaluation never awaits.
        let evaluated = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.ruleset
                .get_actions(&event, &self.ctx)
                .now_or_never()
                .map(<[Action]>::to_vec)
        }));
        let actions = match evaluated {
            Ok(Some(actions)) => actions,
            Ok(None) | Err(_) => {
                tracing::warn!(
                    user = %self.ctx.user_id,
                    event = %pdu.event_id,
                    "push rules could not be evaluated; the event does not notify this user"
                );
                Vec::new()
            }
        };
        Outcome {
            notify: actions.iter().any(Action::should_notify),
            highlight: actions.iter().any(Action::is_highlight),
            actions,
        }
    }
}

impl PushService {
    pub fn new(store: crate::storage::Store) -> Self {
        PushService {
            counts: Mutex::default(),
            thread_counts: Mutex::default(),
            pushers: PusherStore::new(store),
        }
    }

    /// The user's counts over the room's events in `(read_up_to, head]`. `rules` is built only
    /// when there are events to evaluate.
    pub fn unread_counts(
        &self,
        rooms: &RoomService,
        room: &RoomMeta,
        user: &UserId,
        read_up_to: u64,
        head: u64,
        rules: impl FnOnce() -> Result<RoomRules>,
    ) -> Result<Counts> {
        let key = (user.to_owned(), room.short);
        let cached = self.counts.lock().get(&key).copied();
        let mut counted = match cached {
            Some(c) if c.from == read_up_to && c.upto <= head => c,
            _ => Counted {
                from: read_up_to,
                upto: read_up_to,
                counts: Counts::default(),
            },
        };
        if counted.upto < head && room.last_pos() > counted.upto {
            let positions = new_positions(rooms, room, counted.upto, head)?;
            if !positions.is_empty() {
                let rules = rules()?;
                for pos in positions {
                    let event = rooms.event(pos)?;
                    if event.pdu.sender == user {
                        // Speaking in a room reads it.
                        counted.counts = Counts::default();
                        continue;
                    }
                    let outcome = rules.evaluate(&event.pdu, &event.stored.pdu);
                    counted.counts.notify += u64::from(outcome.notify);
                    counted.counts.highlight += u64::from(outcome.highlight);
                }
            }
        }
        counted.upto = head;
        let mut cache = self.counts.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, counted);
        Ok(counted.counts)
    }
}

/// An event that notified the user, for `/notifications`.
pub struct Notified {
    pub pos: u64,
    pub room: Arc<RoomMeta>,
    pub actions: Vec<Action>,
    pub read: bool,
}

/// One page of `/notifications`: events before position `before` in the `joined` rooms.
pub struct NotificationsQuery<'a> {
    pub user: &'a UserId,
    pub joined: Vec<Arc<RoomMeta>>,
    pub before: u64,
    pub limit: usize,
    pub only_highlight: bool,
}

/// Events examined per room by one `/notifications` page.
const NOTIFICATIONS_SCAN: usize = 500;

impl PushService {
    /// The newest events before position `before` that notified the user in `rooms`, newest
    /// first. Each room contributes from its last [`NOTIFICATIONS_SCAN`] events.
    pub fn notifications(
        &self,
        rooms: &RoomService,
        receipts: &ReceiptService,
        ruleset: Arc<Ruleset>,
        query: NotificationsQuery<'_>,
    ) -> Result<Vec<Notified>> {
        let NotificationsQuery {
            user,
            joined,
            before,
            limit,
            only_highlight,
        } = query;
        let mut out = Vec::new();
        for room in joined {
            let rules = RoomRules::new(rooms, ruleset.clone(), &room, user)?;
            let read_up_to = receipts.read_up_to(room.short, user)?;
            let positions = rooms.timeline_positions(
                room.short,
                before.saturating_sub(1),
                Direction::Backward,
                NOTIFICATIONS_SCAN,
            )?;
            let mut found = 0;
            for pos in positions {
                let event = rooms.event(pos)?;
                let outcome = rules.evaluate(&event.pdu, &event.stored.pdu);
                if !outcome.notify || (only_highlight && !outcome.highlight) {
                    continue;
                }
                out.push(Notified {
                    pos,
                    room: room.clone(),
                    actions: outcome.actions,
                    read: pos <= read_up_to,
                });
                found += 1;
                if found == limit {
                    break;
                }
            }
        }
        out.sort_by_key(|n| std::cmp::Reverse(n.pos));
        out.truncate(limit);
        Ok(out)
    }
}

/// Timeline positions in `(after, head]`, oldest first, at most [`MAX_COUNT_SCAN`] of the newest.
fn new_positions(rooms: &RoomService, room: &RoomMeta, after: u64, head: u64) -> Result<Vec<u64>> {
    let mut positions =
        rooms.timeline_positions(room.short, after, Direction::Forward, MAX_COUNT_SCAN)?;
    if positions.len() == MAX_COUNT_SCAN {
        positions =
            rooms.timeline_positions(room.short, head, Direction::Backward, MAX_COUNT_SCAN)?;
        positions.retain(|p| *p > after);
        positions.reverse();
    }
    positions.retain(|p| *p <= head);
    Ok(positions)
}

/// A user's rule set, read from their account data the first time a request needs it.
pub struct LazyRuleset<'a> {
    users: &'a UserService,
    user: &'a UserId,
    cell: OnceCell<Arc<Ruleset>>,
}

impl<'a> LazyRuleset<'a> {
    pub fn new(users: &'a UserService, user: &'a UserId) -> Self {
        LazyRuleset {
            users,
            user,
            cell: OnceCell::new(),
        }
    }

    pub fn get(&self) -> Result<Arc<Ruleset>> {
        if let Some(rules) = self.cell.get() {
            return Ok(rules.clone());
        }
        let rules = Arc::new(self.users.push_rules(self.user)?);
        Ok(self.cell.get_or_init(|| rules).clone())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_event_id, owned_room_id, owned_user_id};

    use super::*;

    /// A rule stored before patterns were bounded (or any rule ruma cannot compile) makes the
    /// event notify nobody instead of panicking the caller.
    #[test]
    fn a_pattern_ruma_cannot_compile_notifies_nobody_instead_of_panicking() {
        let user = owned_user_id!("@bob:localhost");
        let mut ruleset = Ruleset::server_default(&user);
        let huge: ruma::push::PatternedPushRule = serde_json::from_value(serde_json::json!({
            "rule_id": "huge", "default": false, "enabled": true,
            "pattern": "?".repeat(200_000), "actions": ["notify"],
        }))
        .unwrap();
        ruleset.content.insert(huge);
        let rules = RoomRules {
            ruleset: Arc::new(ruleset),
            ctx: PushConditionRoomCtx::new(
                owned_room_id!("!room:localhost"),
                UInt::from(2u32),
                user,
                "Bob".to_owned(),
            ),
        };
        let json = r#"{"type":"m.room.message","sender":"@alice:localhost","room_id":"!room:localhost",
            "content":{"msgtype":"m.text","body":"a message long enough to reach the pattern"},
            "origin_server_ts":1,"depth":3,"prev_events":[],"auth_events":[],"hashes":{"sha256":""}}"#;
        let event_id = owned_event_id!("$event");
        let pdu = Pdu::parse(event_id, json).unwrap();
        let raw = serde_json::value::RawValue::from_string(json.to_owned()).unwrap();
        let outcome = rules.evaluate(&pdu, &raw);
        assert!(!outcome.notify && outcome.actions.is_empty(), "{outcome:?}");
    }
}
