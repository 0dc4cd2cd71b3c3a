//! Writes that are applied but not yet in sled: what readers see before the applier catches up.
//!
//! sled 0.34 seals its log buffer and hands a disk write (with `sync_file_range`) to its IO pool
//! for every `apply_batch`, so applying each request's batch on its own cost a disk write per
//! request (measured: see `docs/performance.md`). Writes therefore land here first, keyed like
//! sled, and the applier thread applies what the syncs covered to sled every 50 ms, then drops
//! those entries. Readers look here first and then in sled; scans merge the two. This is also
//! what makes a batch atomic for readers: sled gets it one operation at a time.
//!
//! Order of operations keeps readers right without a shared lock: the applier writes to sled
//! before it removes an entry here, and a reader looks here before it looks in sled.

use std::{collections::BTreeMap, ops::Bound, sync::RwLock};

use sled::IVec;

/// A pending value: `None` is a delete. `ticket` is the batch that wrote it, so the applier
/// removes only entries no later write has replaced.
struct Entry {
    value: Option<IVec>,
    ticket: u64,
}

#[derive(Default)]
pub(super) struct Overlay {
    map: RwLock<BTreeMap<Vec<u8>, Entry>>,
}

/// What the overlay knows about a key.
pub(super) enum Lookup {
    /// Written (`Some`) or deleted (`None`) by a pending batch.
    Pending(Option<IVec>),
    /// Not touched by a pending batch: sled has the answer.
    Absent,
}

impl Overlay {
    pub(super) fn get(&self, key: &[u8]) -> Lookup {
        match self.map.read().expect("overlay lock").get(key) {
            Some(entry) => Lookup::Pending(entry.value.clone()),
            None => Lookup::Absent,
        }
    }

    /// Records the writes of batch `ticket`.
    pub(super) fn insert<'a>(
        &self,
        ticket: u64,
        ops: impl IntoIterator<Item = (&'a [u8], Option<&'a IVec>)>,
    ) {
        let mut map = self.map.write().expect("overlay lock");
        for (key, value) in ops {
            let entry = Entry {
                value: value.cloned(),
                ticket,
            };
            map.insert(key.to_vec(), entry);
        }
    }

    /// Drops the entries for `keys` that no batch after `through` has rewritten: sled has them.
    pub(super) fn remove_applied<'a>(
        &self,
        through: u64,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) {
        let mut map = self.map.write().expect("overlay lock");
        for key in keys {
            if map.get(key).is_some_and(|e| e.ticket <= through) {
                map.remove(key);
            }
        }
    }

    /// The pending entries with `from <= key < to`, in key order.
    pub(super) fn range(&self, from: &[u8], to: &[u8]) -> Vec<(IVec, Option<IVec>)> {
        let map = self.map.read().expect("overlay lock");
        map.range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .map(|(k, e)| (IVec::from(k.as_slice()), e.value.clone()))
            .collect()
    }

    /// The pending entries whose key starts with `prefix`, in key order.
    pub(super) fn with_prefix(&self, prefix: &[u8]) -> Vec<(IVec, Option<IVec>)> {
        let map = self.map.read().expect("overlay lock");
        map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (IVec::from(k.as_slice()), e.value.clone()))
            .collect()
    }
}

/// sled's entries in a range, with the overlay's pending entries of the same range laid over
/// them: a pending write replaces sled's value, a pending delete hides it. Double-ended, like
/// sled's own iterator.
pub(super) struct Merged<I> {
    sled: I,
    sled_front: Option<(IVec, IVec)>,
    sled_back: Option<(IVec, IVec)>,
    pending: std::collections::VecDeque<(IVec, Option<IVec>)>,
}

impl<I> Merged<I>
where
    I: DoubleEndedIterator<Item = sled::Result<(IVec, IVec)>>,
{
    pub(super) fn new(sled: I, pending: Vec<(IVec, Option<IVec>)>) -> Self {
        Merged {
            sled,
            sled_front: None,
            sled_back: None,
            pending: pending.into(),
        }
    }

    /// Takes the next entry from one end. `front` picks the end; the comparisons flip with it.
    fn step(&mut self, front: bool) -> Option<sled::Result<(IVec, IVec)>> {
        loop {
            // Fill this end's sled candidate; when sled's iterator is used up, the entry the
            // other end holds is the last one left.
            let (slot, other) = if front {
                (&mut self.sled_front, &mut self.sled_back)
            } else {
                (&mut self.sled_back, &mut self.sled_front)
            };
            if slot.is_none() {
                let next = if front {
                    self.sled.next()
                } else {
                    self.sled.next_back()
                };
                *slot = match next {
                    Some(Ok(entry)) => Some(entry),
                    Some(Err(e)) => return Some(Err(e)),
                    None => other.take(),
                };
            }
            let pending = if front {
                self.pending.front()
            } else {
                self.pending.back()
            };
            let take_pending = match (&*slot, pending) {
                (None, None) => return None,
                (Some(_), None) => return slot.take().map(Ok),
                (None, Some(_)) => true,
                (Some((sled_key, _)), Some((pending_key, _))) => {
                    if sled_key == pending_key {
                        // The pending write shadows sled's value.
                        *slot = None;
                        true
                    } else {
                        (pending_key < sled_key) == front
                    }
                }
            };
            if take_pending {
                let (key, value) = if front {
                    self.pending.pop_front()
                } else {
                    self.pending.pop_back()
                }
                .expect("checked above");
                match value {
                    Some(value) => return Some(Ok((key, value))),
                    None => continue, // deleted
                }
            }
            return slot.take().map(Ok);
        }
    }
}

impl<I> Iterator for Merged<I>
where
    I: DoubleEndedIterator<Item = sled::Result<(IVec, IVec)>>,
{
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

impl<I> DoubleEndedIterator for Merged<I>
where
    I: DoubleEndedIterator<Item = sled::Result<(IVec, IVec)>>,
{
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> IVec {
        IVec::from(s.as_bytes())
    }

    fn merged(
        sled: &[(&str, &str)],
        pending: &[(&str, Option<&str>)],
    ) -> Merged<std::vec::IntoIter<sled::Result<(IVec, IVec)>>> {
        let sled: Vec<_> = sled.iter().map(|(k, v)| Ok((iv(k), iv(v)))).collect();
        let pending = pending.iter().map(|(k, v)| (iv(k), v.map(iv))).collect();
        Merged::new(sled.into_iter(), pending)
    }

    fn keys_values(it: impl Iterator<Item = sled::Result<(IVec, IVec)>>) -> Vec<String> {
        it.map(|r| {
            let (k, v) = r.unwrap();
            format!(
                "{}={}",
                String::from_utf8_lossy(&k),
                String::from_utf8_lossy(&v)
            )
        })
        .collect()
    }

    #[test]
    fn pending_writes_replace_and_deletes_hide_in_both_directions() {
        let sled = [("a", "1"), ("c", "3"), ("e", "5")];
        let pending = [
            ("b", Some("2")),
            ("c", None),
            ("e", Some("55")),
            ("f", Some("6")),
        ];
        assert_eq!(
            keys_values(merged(&sled, &pending)),
            ["a=1", "b=2", "e=55", "f=6"]
        );
        assert_eq!(
            keys_values(merged(&sled, &pending).rev()),
            ["f=6", "e=55", "b=2", "a=1"]
        );
    }

    #[test]
    fn both_ends_meet_without_repeating_or_losing_an_entry() {
        let sled = [("a", "1"), ("c", "3"), ("d", "4"), ("e", "5")];
        let pending = [("b", Some("2")), ("d", None), ("e", Some("55"))];
        let expected = ["a=1", "b=2", "c=3", "e=55"];
        // Every interleaving of front and back steps yields each entry once.
        for pattern in 0u32..32 {
            let mut it = merged(&sled, &pending);
            let (mut front, mut back) = (Vec::new(), Vec::new());
            for step in 0..6 {
                let item = if pattern & (1 << step) == 0 {
                    it.next().map(|r| (true, r))
                } else {
                    it.next_back().map(|r| (false, r))
                };
                match item {
                    Some((true, r)) => front.extend(keys_values(std::iter::once(r))),
                    Some((false, r)) => back.extend(keys_values(std::iter::once(r))),
                    None => {}
                }
            }
            back.reverse();
            front.extend(back);
            assert_eq!(front, expected, "pattern {pattern:05b}");
        }
    }

    #[test]
    fn overlay_lookups_and_removal_respect_later_writes() {
        let overlay = Overlay::default();
        overlay.insert(1, [(&b"k"[..], Some(&iv("v1"))), (b"gone", None)]);
        overlay.insert(2, [(&b"k"[..], Some(&iv("v2")))]);
        overlay.remove_applied(1, [&b"k"[..], b"gone"]);
        // Batch 2 rewrote `k` after batch 1: it stays until batch 2 is applied.
        assert!(matches!(overlay.get(b"k"), Lookup::Pending(Some(v)) if v == iv("v2")));
        assert!(matches!(overlay.get(b"gone"), Lookup::Absent));
        assert_eq!(overlay.range(b"a", b"z").len(), 1);
        assert_eq!(
            overlay.range(b"a", b"k").len(),
            0,
            "the upper bound is exclusive"
        );
        overlay.insert(3, [(&b"ka"[..], Some(&iv("x"))), (b"l", Some(&iv("y")))]);
        assert_eq!(overlay.with_prefix(b"k").len(), 2);
        overlay.remove_applied(3, [&b"k"[..], b"ka", b"l"]);
        assert!(overlay.with_prefix(b"").is_empty());
    }
}
