//! What the inbox could not bring into Matrix yet, kept on disk and counted for operators.
//!
//! - `held`: a customer's messages (and statuses of agents' messages in their portal) from the
//!   first one the homeserver refused, in arrival order, by portal key and arrival number. The
//!   inbox worker retries them with a doubling pause; the customer's later messages queue
//!   behind them, so their order never changes.
//! - `dead_letters`: a message the homeserver can never accept as it is, after
//!   [`DEAD_LETTER_AFTER`] attempts, with the refusal. Kept (never deleted by the bridge),
//!   logged at error level and counted, so an operator sees it; the customer's next messages
//!   go on.
//!
//! [`Backlog`] holds the gauges ([`Bridge::backlog`]): webhooks waiting in the inbox, held
//! messages and customers, dead letters, and since when the whole inbox has been failing.
//! They are what `/metrics` is to report; until then, the log says the same at error level.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::bridge::Bridge;
use crate::store::{Result, Store};

/// Attempts at a message the homeserver cannot accept before it is set aside.
pub const DEAD_LETTER_AFTER: u32 = 5;

/// The backlog as operators see it ([`Bridge::backlog`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BacklogState {
    /// Webhook bodies accepted and not processed yet.
    pub inbox_waiting: u64,
    /// Customer messages (and status updates) the homeserver refused, held for a retry.
    pub held: u64,
    /// Customers with held messages.
    pub held_customers: u64,
    /// Messages set aside for good (see [`Store::dead_letters`]).
    pub dead_letters: u64,
    /// Since when (milliseconds since the epoch) every round of the inbox fails: the
    /// homeserver is unreachable or refuses the bridge's token. `None` while rounds succeed.
    pub failing_since_ms: Option<u64>,
    /// The last failure, with what to fix.
    pub last_error: Option<String>,
}

/// The gauges behind [`BacklogState`], updated by the inbox worker.
#[derive(Default)]
pub struct Backlog {
    held: AtomicU64,
    held_customers: AtomicU64,
    dead_letters: AtomicU64,
    failing_since_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Backlog {
    /// The gauges as the store has them at start.
    pub(crate) fn load(store: &Store) -> Result<Self> {
        let lanes = store.held_lanes()?;
        let backlog = Self::default();
        backlog.set_held(lanes.values().sum::<usize>() as u64, lanes.len() as u64);
        backlog
            .dead_letters
            .store(store.dead_letter_count(), Ordering::Relaxed);
        Ok(backlog)
    }

    pub(crate) fn set_held(&self, items: u64, customers: u64) {
        self.held.store(items, Ordering::Relaxed);
        self.held_customers.store(customers, Ordering::Relaxed);
    }

    pub(crate) fn add_dead_letters(&self, count: u64) {
        self.dead_letters.fetch_add(count, Ordering::Relaxed);
    }

    /// A round failed for everyone; the first failure of a run sets `failing_since`.
    pub(crate) fn round_failed(&self, error: String) {
        let _ = self.failing_since_ms.compare_exchange(
            0,
            crate::now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.note(error);
    }

    pub(crate) fn round_succeeded(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// Remembers the last failure an operator should read.
    pub(crate) fn note(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    fn state(&self, inbox_waiting: u64) -> BacklogState {
        let since = self.failing_since_ms.load(Ordering::Relaxed);
        BacklogState {
            inbox_waiting,
            held: self.held.load(Ordering::Relaxed),
            held_customers: self.held_customers.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            failing_since_ms: (since > 0).then_some(since),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

impl Bridge {
    /// What waits to be brought into Matrix, for operators (and `/metrics`, once it exists).
    pub fn backlog(&self) -> BacklogState {
        self.backlog.state(self.store.inbox_waiting())
    }
}

#[cfg(test)]
mod tests {
    use charla_storage::Batch;

    use super::*;
    use crate::store::{DeadLetter, HeldItem};

    fn statuses(wamid: &str) -> HeldItem {
        let status = serde_json::from_value(serde_json::json!({"id": wamid, "status": "read"}));
        HeldItem::Statuses {
            statuses: vec![status.unwrap()],
        }
    }

    /// Held items come back per customer, in the order they were held, a part at a time, and
    /// survive a crash once the round's write is on disk.
    #[tokio::test]
    async fn held_items_keep_their_order_per_customer_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("live")).unwrap();
        let mut batch = Batch::new();
        for wamid in ["w1", "w2", "w3"] {
            store
                .hold(&mut batch, "34600111222", &statuses(wamid))
                .unwrap();
        }
        store
            .hold(&mut batch, "3460011122", &statuses("other"))
            .unwrap();
        let letter = DeadLetter {
            portal: "34600111222".into(),
            item: statuses("w0"),
            error: "homeserver answered 413 M_TOO_LARGE".into(),
            attempts: DEAD_LETTER_AFTER,
            ts: 1,
        };
        store.dead_letter(&mut batch, &letter).unwrap();
        let ticket = store.db.write(batch).unwrap();
        store.durable(ticket).await.unwrap();
        charla_storage::copy_crash_image(&dir.path().join("live"), &dir.path().join("crash"))
            .unwrap();

        let store = Store::open(&dir.path().join("crash")).unwrap();
        let (first, more) = store.held_items("34600111222", 2).unwrap();
        let wamids: Vec<&str> = first.iter().map(|(_, item)| item.wamid()).collect();
        assert_eq!((wamids, more), (vec!["w1", "w2"], true));
        let (all, more) = store.held_items("34600111222", 10).unwrap();
        assert_eq!((all.len(), more), (3, false));
        let lanes = store.held_lanes().unwrap();
        assert_eq!(lanes.get("34600111222"), Some(&3));
        assert_eq!(lanes.get("3460011122"), Some(&1));
        let letters = store.dead_letters().unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].item.wamid(), "w0");
        let backlog = Backlog::load(&store).unwrap();
        assert_eq!(backlog.state(0).held, 4);
        assert_eq!(backlog.state(0).held_customers, 2);
        assert_eq!(backlog.state(0).dead_letters, 1);
    }
}
