//! Per-thread unread counts, for clients whose sync filter sets
//! `room.timeline.unread_thread_notifications` (spec v1.16, "Receiving notifications" and
//! "Threaded read receipts").
//!
//! Each event belongs to the main timeline or to one thread: a `m.thread` reply to its root,
//! and an event relating (edit, reaction, reference) to a threaded event to that event's
//! thread, as Synapse decides. The thread root itself is in the main timeline. An event is read
//! once the user's unthreaded receipt or the receipt of its own thread (`main` for the main
//! timeline) reaches it; the user's own event reads its thread.
//!
//! Like the plain counts, results are cached per user and room with the range they cover and
//! the receipts they were computed for, so a sync evaluates only new events; any receipt change
//! starts the room again from the unthreaded receipt.

use std::collections::{BTreeMap, HashMap};

use ruma::{
    OwnedEventId, UInt, UserId, api::client::sync::sync_events::UnreadNotificationsCount,
    events::relation::RelationType,
};

use super::{Counts, LazyRuleset, MAX_CACHED, PushService, RoomRules, new_positions};
use crate::{
    ephemeral::ReceiptService,
    error::Result,
    events::Pdu,
    rooms::{RoomMeta, RoomService, relation_of},
};

impl PushService {
    /// The `/sync` sections of a room for a filter with `unread_thread_notifications`:
    /// `unread_notifications` of the main timeline and `unread_thread_notifications`.
    pub(crate) fn unread_by_thread(
        &self,
        rooms: &RoomService,
        receipts: &ReceiptService,
        ruleset: &LazyRuleset<'_>,
        room: &RoomMeta,
        user: &UserId,
        head: u64,
    ) -> Result<(
        UnreadNotificationsCount,
        BTreeMap<OwnedEventId, UnreadNotificationsCount>,
    )> {
        let receipts = receipts.read_up_to_by_thread(room.short, user)?;
        let counts = self.threaded_unread_counts(rooms, room, user, receipts, head, || {
            RoomRules::new(rooms, ruleset.get()?, room, user)
        })?;
        let threads = counts
            .threads
            .into_iter()
            .map(|(root, c)| (root, to_unread(c)))
            .collect();
        Ok((to_unread(counts.main), threads))
    }
}

fn to_unread(counts: Counts) -> UnreadNotificationsCount {
    let mut out = UnreadNotificationsCount::new();
    out.notification_count = Some(UInt::try_from(counts.notify).unwrap_or(UInt::MAX));
    out.highlight_count = Some(UInt::try_from(counts.highlight).unwrap_or(UInt::MAX));
    out
}

/// The main timeline's counts and those of each thread with something unread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ThreadedCounts {
    pub(crate) main: Counts,
    pub(crate) threads: BTreeMap<OwnedEventId, Counts>,
}

/// Counts over the events up to `upto`, for one set of receipts.
#[derive(Clone)]
pub(super) struct ThreadCounted {
    receipts: BTreeMap<String, u64>,
    upto: u64,
    counts: ThreadedCounts,
}

/// The thread the receipt key names: `main` for the main timeline, else the root's id.
const MAIN: &str = "main";

impl PushService {
    /// The user's unread counts in the room split by thread, over events up to `head`.
    /// `receipts` are the user's receipt positions by thread (`""` for the unthreaded one).
    pub(crate) fn threaded_unread_counts(
        &self,
        rooms: &RoomService,
        room: &RoomMeta,
        user: &UserId,
        receipts: BTreeMap<String, u64>,
        head: u64,
        rules: impl FnOnce() -> Result<RoomRules>,
    ) -> Result<ThreadedCounts> {
        let key = (user.to_owned(), room.short);
        let cached = self.thread_counts.lock().get(&key).cloned();
        let unthreaded = receipts.get("").copied().unwrap_or(0);
        let mut counted = match cached {
            Some(c) if c.receipts == receipts && c.upto <= head => c,
            _ => ThreadCounted {
                upto: unthreaded,
                receipts,
                counts: ThreadedCounts::default(),
            },
        };
        if counted.upto < head && room.last_pos() > counted.upto {
            let positions = new_positions(rooms, room, counted.upto, head)?;
            let mut rules = Some(rules);
            let mut built: Option<RoomRules> = None;
            for pos in positions {
                let event = rooms.event(pos)?;
                let thread = thread_of(rooms, &event.pdu)?;
                let read = counted
                    .receipts
                    .get(thread.as_ref().map_or(MAIN, |t| t.as_str()))
                    .copied()
                    .unwrap_or(0)
                    .max(unthreaded);
                if pos <= read {
                    continue;
                }
                let slot = match thread {
                    Some(root) => counted.counts.threads.entry(root).or_default(),
                    None => &mut counted.counts.main,
                };
                if event.pdu.sender == user {
                    // Speaking in a thread reads it.
                    *slot = Counts::default();
                    continue;
                }
                let rules = match &built {
                    Some(r) => r,
                    None => built.insert((rules.take().expect("rules built once"))()?),
                };
                let outcome = rules.evaluate(&event.pdu, &event.stored.pdu);
                slot.notify += u64::from(outcome.notify);
                slot.highlight += u64::from(outcome.highlight);
            }
            counted
                .counts
                .threads
                .retain(|_, c| *c != Counts::default());
        }
        counted.upto = head;
        let out = counted.counts.clone();
        let mut cache = self.thread_counts.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, counted);
        Ok(out)
    }
}

pub(super) type ThreadCache = HashMap<(ruma::OwnedUserId, u64), ThreadCounted>;

/// The root of the thread the event is in, `None` for the main timeline: a thread reply's
/// root, or for an edit, reaction or reference of a threaded event that event's root.
fn thread_of(rooms: &RoomService, pdu: &Pdu) -> Result<Option<OwnedEventId>> {
    let Some(relation) = relation_of(pdu) else {
        return Ok(None);
    };
    if relation.rel_type == RelationType::Thread {
        return Ok(Some(relation.event_id));
    }
    Ok(rooms
        .pdu_by_id(&relation.event_id)?
        .and_then(|parent| relation_of(&parent))
        .and_then(|r| (r.rel_type == RelationType::Thread).then_some(r.event_id)))
}
