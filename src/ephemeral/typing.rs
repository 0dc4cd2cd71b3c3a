//! `m.typing`: who is typing in which room, expiring on time.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::time::Instant;

use crate::{rooms::RoomMeta, stream::Notifier, stream::Stream};

/// The longest a client may say it will keep typing.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct TypingService {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    stream: Arc<Stream>,
    notifier: Arc<Notifier>,
}

#[derive(Default)]
struct RoomTyping {
    /// User → when their typing notice expires.
    users: HashMap<OwnedUserId, Instant>,
    /// Ephemeral number of the last change.
    serial: u64,
}

impl TypingService {
    pub(crate) fn new(stream: Arc<Stream>, notifier: Arc<Notifier>) -> Self {
        TypingService {
            inner: Arc::new(Inner {
                rooms: Mutex::default(),
                stream,
                notifier,
            }),
        }
    }

    /// Marks `user` as typing for `timeout`, or as stopped with `None`. The caller checked that
    /// the user is joined.
    pub(crate) fn set(&self, room: Arc<RoomMeta>, user: &UserId, timeout: Option<Duration>) {
        let changed = {
            let mut rooms = self.inner.rooms.lock();
            let entry = rooms.entry(room.room_id.clone()).or_default();
            let changed = match timeout {
                Some(timeout) => {
                    let until = Instant::now() + timeout.min(MAX_TIMEOUT);
                    entry.users.insert(user.to_owned(), until).is_none()
                }
                None => entry.users.remove(user).is_some(),
            };
            if changed {
                entry.serial = self.inner.stream.next_ephemeral();
                self.publish(&room.room_id, entry);
            }
            changed
        };
        if changed {
            self.inner
                .notifier
                .wake(room.joined_members().iter().map(|u| &**u));
        }
        if let Some(timeout) = timeout {
            let this = self.clone();
            let user = user.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(timeout.min(MAX_TIMEOUT)).await;
                this.expire(&room, &user);
            });
        }
    }

    /// Drops `user`'s notice if it is due (a later `set` may have extended it).
    fn expire(&self, room: &RoomMeta, user: &UserId) {
        let expired = {
            let mut rooms = self.inner.rooms.lock();
            let Some(entry) = rooms.get_mut(&room.room_id) else {
                return;
            };
            let due = entry
                .users
                .get(user)
                .is_some_and(|until| *until <= Instant::now());
            if due {
                entry.users.remove(user);
                entry.serial = self.inner.stream.next_ephemeral();
                self.publish(&room.room_id, entry);
            }
            due
        };
        if expired {
            self.inner
                .notifier
                .wake(room.joined_members().iter().map(|u| &**u));
        }
    }

    fn publish(&self, room_id: &RoomId, entry: &RoomTyping) {
        let mut users: Vec<_> = entry.users.keys().collect();
        users.sort();
        let event = serde_json::json!({
            "type": "m.typing",
            "room_id": room_id,
            "content": { "user_ids": users },
        });
        self.inner
            .notifier
            .publish_edu(Some(room_id.to_owned()), event);
    }

    /// Who is typing in the room, if that changed after the ephemeral number `since` (always,
    /// for an initial sync, when somebody is).
    pub(crate) fn typing_since(
        &self,
        room: &RoomId,
        since: Option<u64>,
    ) -> Option<Vec<OwnedUserId>> {
        let rooms = self.inner.rooms.lock();
        let entry = rooms.get(room)?;
        let changed = match since {
            Some(since) => entry.serial > since,
            None => !entry.users.is_empty(),
        };
        changed.then(|| {
            let mut users: Vec<_> = entry.users.keys().cloned().collect();
            users.sort();
            users
        })
    }
}
