//! A bounded cache of store reads for hot lookups (an access token's owner, whether a room is
//! a support conversation) that writers keep right.
//!
//! A writer must win over a concurrent fill: a reader that read a value from the store just
//! before a writer changed it must not put the old value back afterwards. Every write bumps a
//! generation under the cache's lock, and a fill only lands if the generation is still the one
//! the reader saw before it read the store.

use std::{borrow::Borrow, collections::HashMap, hash::Hash};

use parking_lot::{Mutex, MutexGuard};

pub struct ReadCache<K, V> {
    capacity: usize,
    inner: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    generation: u64,
    map: HashMap<K, V>,
}

impl<K: Hash + Eq, V: Clone> Entries<K, V> {
    fn insert(&mut self, key: K, value: V, capacity: usize) {
        if self.map.len() >= capacity {
            self.map.clear();
        }
        self.map.insert(key, value);
    }
}

impl<K: Hash + Eq, V: Clone> ReadCache<K, V> {
    /// A cache of at most `capacity` entries; past it, it starts over.
    pub fn new(capacity: usize) -> Self {
        ReadCache {
            capacity,
            inner: Mutex::new(Entries {
                generation: 0,
                map: HashMap::new(),
            }),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().map.get(key).cloned()
    }

    /// The generation to pass to [`ReadCache::fill`]; read it before reading the store.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Caches a value read from the store, unless a write ran since `generation`.
    pub fn fill(&self, key: K, value: V, generation: u64) {
        let mut e = self.lock();
        if e.generation == generation {
            e.insert(key, value, self.capacity);
        }
    }

    /// A writer's new value for `key`, cached at once: fills in flight, which may carry the
    /// old value, are dropped. Only for values that are right before the write is applied.
    pub fn put(&self, key: K, value: V) {
        let mut e = self.lock();
        e.generation += 1;
        e.insert(key, value, self.capacity);
    }

    /// Forgets changed keys; call once the change is applied to the store.
    pub fn invalidate<'a, Q>(&self, keys: impl IntoIterator<Item = &'a Q>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'a,
    {
        let mut e = self.lock();
        e.generation += 1;
        for key in keys {
            e.map.remove(key);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries<K, V>> {
        self.inner.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_that_raced_an_invalidation_is_dropped() {
        let cache = ReadCache::<String, u32>::new(8);
        let seen = cache.generation();
        cache.invalidate(["t"]);
        cache.fill("t".into(), 1, seen);
        assert_eq!(cache.get("t"), None);
    }

    #[test]
    fn invalidating_forgets_a_cached_value() {
        let cache = ReadCache::<String, u32>::new(8);
        cache.fill("t".into(), 1, cache.generation());
        assert_eq!(cache.get("t"), Some(1));
        cache.invalidate(["t"]);
        assert_eq!(cache.get("t"), None);
    }

    #[test]
    fn a_put_wins_over_a_fill_in_flight() {
        let cache = ReadCache::<String, bool>::new(8);
        let seen = cache.generation();
        cache.put("room".into(), true);
        cache.fill("room".into(), false, seen);
        assert_eq!(cache.get("room"), Some(true));
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = ReadCache::<String, u32>::new(2);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            cache.fill(k.into(), i as u32, cache.generation());
        }
        assert_eq!((cache.get("a"), cache.get("c")), (None, Some(2)));
    }
}
