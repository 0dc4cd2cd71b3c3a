//! Wakes the long-polling `/sync` requests of the users a change concerns.
//!
//! One watch channel per user that is waiting: a commit bumps only the channels of the room's
//! members, so a thousand idle clients in other rooms cost nothing, and a waiter subscribes
//! before it computes its response, so no wake-up can fall between the two.

use std::{collections::HashMap, sync::Mutex};

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, watch::Sender<u64>>>,
    /// Flips to `true` when the server stops, so long polls return at once.
    stopping: watch::Sender<bool>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            users: Mutex::default(),
            stopping: watch::channel(false).0,
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

    /// A receiver that changes when something concerning `user` is committed.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<u64> {
        let mut users = self.users.lock().expect("notifier lock poisoned");
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
        let mut map = self.users.lock().expect("notifier lock poisoned");
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
