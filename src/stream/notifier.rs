//! Wakes the long-polling `/sync` requests of the users a change concerns.
//!
//! One watch channel per user that is waiting: a commit bumps only the channels of the room's
//! members, so a thousand idle clients in other rooms cost nothing, and a waiter subscribes
//! before it computes its response, so no wake-up can fall between the two.

use std::collections::HashMap;

use std::sync::Arc;

use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use tokio::sync::{broadcast, watch};

pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, watch::Sender<u64>>>,
    /// Flips to `true` when the server stops, so long polls return at once.
    stopping: watch::Sender<bool>,
    /// Ephemeral events (typing, public receipts, presence) as they happen, for consumers that
    /// push them elsewhere (appservices). Not durable: a lagging consumer misses some.
    edus: broadcast::Sender<Arc<Edu>>,
}

/// An ephemeral event in the client format, with the room it belongs to (none for presence).
#[derive(Debug)]
pub struct Edu {
    pub room_id: Option<OwnedRoomId>,
    pub event: serde_json::Value,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            users: Mutex::default(),
            stopping: watch::channel(false).0,
            edus: broadcast::channel(1024).0,
        }
    }
}

impl Notifier {
    /// Ends every long poll: the server is shutting down.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once the server is stopping.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Hands an ephemeral event to whoever listens (nobody, often).
    pub fn publish_edu(&self, room_id: Option<OwnedRoomId>, event: serde_json::Value) {
        let _ = self.edus.send(Arc::new(Edu { room_id, event }));
    }

    pub fn subscribe_edus(&self) -> broadcast::Receiver<Arc<Edu>> {
        self.edus.subscribe()
    }

    /// A receiver that changes when something concerning `user` is committed.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<u64> {
        let mut users = self.users.lock();
        match users.get(user) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                users.insert(user.to_owned(), tx);
                rx
            }
        }
    }

    /// Wakes every waiter of the given users.
    pub fn wake<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) {
        let mut map = self.users.lock();
        for user in users {
            if let Some(tx) = map.get(user) {
                if tx.receiver_count() == 0 {
                    map.remove(user);
                } else {
                    tx.send_modify(|n| *n += 1);
                }
            }
        }
    }
}
