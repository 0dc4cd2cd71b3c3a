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
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use super::StoredEvent;
use crate::events::Pdu;

/// A stored event with its parsed PDU.
#[derive(Debug)]
pub struct Loaded {
    pub stored: StoredEvent,
    pub pdu: Pdu,
}

impl Loaded {
    /// Parses an event as the `Events` table stores it.
    pub fn parse(bytes: &[u8]) -> crate::error::Result<Self> {
        let stored: StoredEvent =
            serde_json::from_slice(bytes).map_err(|e| super::corrupt("events", e.to_string()))?;
        let pdu = stored.pdu()?;
        Ok(Loaded { stored, pdu })
    }
}

const CAPACITY: usize = 16_384;

#[derive(Default)]
pub struct EventCache {
    epoch: AtomicU64,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<u64, Arc<Loaded>>,
    order: VecDeque<u64>,
}

impl EventCache {
    pub fn get(&self, pos: u64) -> Option<Arc<Loaded>> {
        self.inner
            .lock()
            .expect("cache lock")
            .map
            .get(&pos)
            .cloned()
    }

    /// The epoch to pass to [`EventCache::fill`] after reading the store.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches an event read from the store, unless a redaction ran meanwhile.
    pub fn fill(&self, pos: u64, loaded: Arc<Loaded>, epoch: u64) {
        let mut e = self.inner.lock().expect("cache lock");
        if self.epoch.load(Ordering::SeqCst) != epoch || e.map.contains_key(&pos) {
            return;
        }
        if e.map.len() >= CAPACITY
            && let Some(old) = e.order.pop_front()
        {
            e.map.remove(&old);
        }
        e.map.insert(pos, loaded);
        e.order.push_back(pos);
    }

    /// Starts a rewrite of stored events: call before writing them.
    pub fn begin_rewrite(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends a rewrite: the new copies replace cached ones, then the epoch moves again.
    pub fn end_rewrite(&self, rewritten: impl IntoIterator<Item = (u64, Arc<Loaded>)>) {
        {
            let mut e = self.inner.lock().expect("cache lock");
            for (pos, loaded) in rewritten {
                if let Some(slot) = e.map.get_mut(&pos) {
                    *slot = loaded;
                }
            }
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}
