//! A bounded cache of parsed events: the auth events of every append (create, power levels,
//! the sender's membership) and the events of busy rooms are read far more often than written,
//! and parsing their JSON each time dominated the send path.
//!
//! Events are immutable except for redaction, which rewrites them. A redaction bumps the epoch
//! before its write and after replacing the cached copy, and a reader only fills the cache if
//! the epoch did not move while it read the store, so no reader can put back a stale copy.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;

use super::StoredEvent;
use crate::events::Pdu;

/// A stored event with its parsed PDU.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) stored: StoredEvent,
    pub(crate) pdu: Pdu,
}

impl Loaded {
    /// Parses an event as the `Events` table stores it.
    pub(crate) fn parse(bytes: &[u8]) -> crate::error::Result<Self> {
        let stored: StoredEvent =
            serde_json::from_slice(bytes).map_err(|e| super::corrupt("events", e.to_string()))?;
        let pdu = stored.pdu()?;
        Ok(Loaded { stored, pdu })
    }
}

const CAPACITY: usize = 16_384;

/// The most positions [`EventCache::appended`] walks.
const MAX_WALK: u64 = 4 * CAPACITY as u64;

/// Parsed events by stream position.
///
/// Besides the events readers asked for, every event appended since the server started is put
/// here as it is applied, under the stream lock, so that stream consumers close to the head
/// (the support bot, appservice pushers) read new events without touching the store: above
/// the `floor`, an event that is not here does not exist (the position is another kind of
/// change). Evicting an entry raises the floor past it.
///
/// Eviction is second chance: an entry read since it was last considered goes round again, so
/// the auth events of busy rooms survive a stream of new events passing through.
#[derive(Default)]
pub(crate) struct EventCache {
    epoch: AtomicU64,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<u64, Entry>,
    order: VecDeque<u64>,
    /// Every event at a position above this was appended here and is still here.
    floor: u64,
}

struct Entry {
    loaded: Arc<Loaded>,
    referenced: bool,
}

impl Entries {
    fn insert(&mut self, pos: u64, loaded: Arc<Loaded>) {
        while self.map.len() >= CAPACITY {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            match self.map.get_mut(&old) {
                Some(entry) if entry.referenced => {
                    entry.referenced = false;
                    self.order.push_back(old);
                }
                _ => {
                    self.map.remove(&old);
                    self.floor = self.floor.max(old);
                }
            }
        }
        let fresh = Entry {
            loaded,
            referenced: false,
        };
        if self.map.insert(pos, fresh).is_none() {
            self.order.push_back(pos);
        }
    }
}

impl EventCache {
    /// A cache that holds every event appended after stream position `head`.
    pub(crate) fn new(head: u64) -> Self {
        let cache = EventCache::default();
        cache.lock().floor = head;
        cache
    }

    pub(crate) fn get(&self, pos: u64) -> Option<Arc<Loaded>> {
        let mut e = self.lock();
        let entry = e.map.get_mut(&pos)?;
        entry.referenced = true;
        Some(entry.loaded.clone())
    }

    /// The events in `(after, upto]`, at most `limit`, oldest first; `None` when the cache
    /// cannot tell (some of those positions are below its floor).
    pub(crate) fn appended(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Option<Vec<(u64, Arc<Loaded>)>> {
        let e = self.lock();
        // Far-behind readers (a backlog) read the store: walking every position is for the
        // head of the stream.
        if after < e.floor || upto.saturating_sub(after) > MAX_WALK {
            return None;
        }
        Some(
            (after.saturating_add(1)..=upto)
                .filter_map(|pos| Some((pos, e.map.get(&pos)?.loaded.clone())))
                .take(limit)
                .collect(),
        )
    }

    /// The epoch to pass to [`EventCache::fill`] after reading the store.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches an event read from the store, unless a redaction ran meanwhile.
    pub(crate) fn fill(&self, pos: u64, loaded: Arc<Loaded>, epoch: u64) {
        let mut e = self.lock();
        if self.epoch.load(Ordering::SeqCst) != epoch || e.map.contains_key(&pos) {
            return;
        }
        e.insert(pos, loaded);
    }

    /// Caches an event as it is appended. Call under the stream lock, once its write is
    /// applied, so that no reader sees a later position before this one is here. A new event
    /// cannot be the target of a rewrite in flight (that needs the room's append lock, which
    /// its append holds), so no epoch check is needed.
    pub(crate) fn insert_appended(&self, pos: u64, loaded: Arc<Loaded>) {
        self.lock().insert(pos, loaded);
    }

    /// Starts a rewrite of stored events: call before writing them.
    pub(crate) fn begin_rewrite(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends a rewrite: the new copies replace cached ones, then the epoch moves again.
    pub(crate) fn end_rewrite(&self, rewritten: impl IntoIterator<Item = (u64, Arc<Loaded>)>) {
        {
            let mut e = self.lock();
            for (pos, loaded) in rewritten {
                if let Some(slot) = e.map.get_mut(&pos) {
                    slot.loaded = loaded;
                }
            }
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Entries> {
        self.inner.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Arc<Loaded> {
        let stored = serde_json::json!({
            "event_id": format!("$e{n}"),
            "room": 1,
            "pdu": {
                "room_id": "!r:x", "sender": "@a:x", "origin_server_ts": n, "type": "m.room.message",
                "content": {"body": n.to_string()}, "prev_events": [], "auth_events": [], "depth": n,
            },
        });
        Arc::new(Loaded::parse(&serde_json::to_vec(&stored).unwrap()).unwrap())
    }

    fn positions(events: Option<Vec<(u64, Arc<Loaded>)>>) -> Option<Vec<u64>> {
        events.map(|v| v.into_iter().map(|(p, _)| p).collect())
    }

    #[test]
    fn appended_events_are_read_back_with_the_gaps_left_out() {
        let cache = EventCache::new(10);
        for pos in [11, 12, 14] {
            cache.insert_appended(pos, event(pos));
        }
        // 13 is not an event (account data, a receipt): it is simply not there.
        assert_eq!(
            positions(cache.appended(10, 14, 10)),
            Some(vec![11, 12, 14])
        );
        assert_eq!(positions(cache.appended(11, 14, 1)), Some(vec![12]));
        // Before the server started the cache knows nothing.
        assert_eq!(positions(cache.appended(9, 14, 10)), None);
    }

    #[test]
    fn evicting_an_event_raises_the_floor_past_it() {
        let cache = EventCache::new(0);
        for pos in 1..=CAPACITY as u64 + 1 {
            cache.insert_appended(pos, event(pos));
        }
        // Position 1 was evicted: a reader from 0 must go to the store.
        assert_eq!(positions(cache.appended(0, 3, 10)), None);
        assert_eq!(positions(cache.appended(1, 3, 10)), Some(vec![2, 3]));
    }

    #[test]
    fn an_event_read_since_it_was_cached_survives_one_eviction_round() {
        let cache = EventCache::new(0);
        cache.insert_appended(1, event(1));
        assert!(cache.get(1).is_some());
        for pos in 2..=CAPACITY as u64 + 1 {
            cache.insert_appended(pos, event(pos));
        }
        assert!(
            cache.get(1).is_some(),
            "the referenced entry went round again"
        );
        assert!(
            cache.get(2).is_none(),
            "the oldest unreferenced entry was evicted"
        );
    }
}
