//! A bounded map of short-lived entries that anyone may create without an account: user-
//! interactive auth sessions, shared-secret registration nonces.
//!
//! Unauthenticated callers decide how many entries exist, so the map must stay small and cheap
//! whatever they do: it holds at most `capacity` entries (the oldest goes first when a new one
//! needs room), an entry older than `lifetime` is gone, and no operation scans the map. Entries
//! are created in time order, so a queue of creation times finds the expired ones at its front.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

pub struct ExpiringMap<V> {
    capacity: usize,
    lifetime: Duration,
    entries: HashMap<String, Entry<V>>,
    /// Every insertion, oldest first: `(sequence, created, key)`. An entry removed early stays
    /// here until it reaches the front or a compaction; the sequence tells a stale slot from a
    /// newer entry under the same key.
    order: VecDeque<(u64, Instant, String)>,
    next_seq: u64,
}

struct Entry<V> {
    seq: u64,
    created: Instant,
    value: V,
}

impl<V> ExpiringMap<V> {
    /// A map of at most `capacity` (at least one) entries, each living `lifetime`.
    pub fn new(capacity: usize, lifetime: Duration) -> Self {
        ExpiringMap {
            capacity: capacity.max(1),
            lifetime,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// Adds an entry, first dropping the expired ones and, when full, the oldest.
    pub fn insert(&mut self, key: String, value: V) {
        let now = Instant::now();
        self.expire(now);
        while self.entries.len() >= self.capacity {
            self.pop_oldest();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, now, key.clone()));
        self.entries.insert(
            key,
            Entry {
                seq,
                created: now,
                value,
            },
        );
        // Early removals leave slots behind; compacting once the queue is twice the live
        // entries keeps it bounded at an amortized constant cost per insertion.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(seq, _, key)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
    }

    /// The live entry under `key`.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let lifetime = self.lifetime;
        self.entries
            .get_mut(key)
            .filter(|e| e.created.elapsed() < lifetime)
            .map(|e| &mut e.value)
    }

    /// Whether a live entry is under `key`.
    pub fn contains(&mut self, key: &str) -> bool {
        self.get_mut(key).is_some()
    }

    /// Takes the entry out; `None` if there is none or it expired.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let entry = self.entries.remove(key)?;
        (entry.created.elapsed() < self.lifetime).then_some(entry.value)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, created, _)) = self.order.front() {
            if now.duration_since(*created) < self.lifetime {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Drops the oldest slot, and its entry unless the key was removed (or reused) since.
    fn pop_oldest(&mut self) {
        if let Some((seq, _, key)) = self.order.pop_front()
            && self.entries.get(&key).is_some_and(|e| e.seq == seq)
        {
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_map_drops_the_oldest_entry() {
        let mut map = ExpiringMap::new(3, Duration::from_secs(60));
        for key in ["a", "b", "c", "d"] {
            map.insert(key.to_owned(), key);
        }
        assert_eq!(map.len(), 3);
        assert!(!map.contains("a"));
        assert_eq!(map.remove("b"), Some("b"));
        // The removed entry freed room: nothing else goes.
        map.insert("e".to_owned(), "e");
        assert!(map.contains("c") && map.contains("d") && map.contains("e"));
    }

    #[test]
    fn expired_entries_are_gone_and_dropped_on_insert() {
        let mut map = ExpiringMap::new(10, Duration::from_millis(20));
        map.insert("old".to_owned(), 1);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!map.contains("old"));
        assert_eq!(map.remove("old"), None);
        map.insert("old2".to_owned(), 2);
        std::thread::sleep(Duration::from_millis(30));
        map.insert("new".to_owned(), 3);
        assert_eq!(map.len(), 1);
        assert_eq!(map.get_mut("new"), Some(&mut 3));
    }

    #[test]
    fn removals_keep_the_queue_bounded() {
        let mut map = ExpiringMap::new(4, Duration::from_secs(60));
        for i in 0..10_000 {
            let key = format!("k{i}");
            map.insert(key.clone(), i);
            assert_eq!(map.remove(&key), Some(i));
            assert!(map.order.len() <= 2 * 4 + 1);
        }
        assert!(map.is_empty());
    }

    #[test]
    fn a_reused_key_is_not_dropped_by_its_old_slot() {
        let mut map = ExpiringMap::new(2, Duration::from_secs(60));
        map.insert("a".to_owned(), 1);
        map.remove("a");
        map.insert("b".to_owned(), 2);
        map.insert("a".to_owned(), 3);
        // Full: the oldest live entry ("b") goes, not the new "a" under the stale first slot.
        map.insert("c".to_owned(), 4);
        assert_eq!(map.get_mut("a"), Some(&mut 3));
        assert!(!map.contains("b"));
        assert!(map.contains("c"));
    }
}
