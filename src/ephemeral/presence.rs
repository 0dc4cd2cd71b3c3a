//! Presence: `online`, `unavailable`, `offline`, with a status message and activity times.
//!
//! A user is online while a client syncs with `set_presence=online` (the default) or after they
//! say so; activity (sending events, setting presence) keeps them `currently_active`. A user idle
//! for `idle_timeout_secs` becomes `unavailable`; one whose clients all stopped syncing for
//! `offline_timeout_secs` becomes `offline`. A background sweep applies both timeouts, so the
//! support bot can rely on `online` meaning "an agent is at their client now".

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use ruma::{OwnedUserId, UserId, presence::PresenceState};
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    config::PresenceConfig, error::Result, rooms::RoomService, stream::Notifier, stream::Stream,
};

/// Within this much of their last activity an online user is `currently_active`.
const CURRENTLY_ACTIVE: Duration = Duration::from_secs(60);

pub struct PresenceService {
    inner: Mutex<Users>,
    stream: Arc<Stream>,
    notifier: Arc<Notifier>,
    idle_timeout: Duration,
    offline_timeout: Duration,
}

#[derive(Default)]
struct Users {
    by_user: HashMap<OwnedUserId, UserPresence>,
    /// Ephemeral number of each user's last change → the user, for incremental syncs.
    changes: BTreeMap<u64, OwnedUserId>,
}

struct UserPresence {
    state: PresenceState,
    status_msg: Option<String>,
    last_active: Instant,
    last_sync: Instant,
    /// Syncs in flight: a user with a long poll open is still there.
    syncing: u32,
    serial: u64,
    /// Another server's user: their server says when they go idle or away, not the sweep.
    remote: bool,
}

/// A user's presence as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PresenceView {
    pub presence: PresenceState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    pub last_active_ago: u64,
    pub currently_active: bool,
}

/// Held by a `/sync` while it runs; its drop records the end of the sync.
pub(crate) struct SyncPresence<'a> {
    service: &'a PresenceService,
    user: OwnedUserId,
}

impl Drop for SyncPresence<'_> {
    fn drop(&mut self) {
        let mut users = self.service.inner.lock();
        if let Some(p) = users.by_user.get_mut(&self.user) {
            p.syncing = p.syncing.saturating_sub(1);
            p.last_sync = Instant::now();
        }
    }
}

impl PresenceService {
    pub(crate) fn new(
        config: &PresenceConfig,
        stream: Arc<Stream>,
        notifier: Arc<Notifier>,
    ) -> Self {
        PresenceService {
            inner: Mutex::default(),
            stream,
            notifier,
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            offline_timeout: Duration::from_secs(config.offline_timeout_secs),
        }
    }

    /// `PUT /presence/{userId}/status`.
    pub(crate) fn set(
        &self,
        rooms: &RoomService,
        user: &UserId,
        state: PresenceState,
        status_msg: Option<String>,
    ) -> Result<()> {
        self.update(rooms, user, |p, now| {
            if state == PresenceState::Online {
                p.last_active = now;
            }
            let changed = p.state != state || p.status_msg != status_msg;
            p.state = state;
            p.status_msg = status_msg;
            changed
        })
    }

    /// Called when a `/sync` starts, with its `set_presence`.
    pub(crate) fn sync_started(
        &self,
        rooms: &RoomService,
        user: &UserId,
        set_presence: &PresenceState,
    ) -> Result<SyncPresence<'_>> {
        self.update(rooms, user, |p, now| {
            p.syncing += 1;
            p.last_sync = now;
            // `offline` means "do not mark me online", not "mark me offline".
            let target = match set_presence {
                PresenceState::Online => PresenceState::Online,
                PresenceState::Unavailable => PresenceState::Unavailable,
                _ => return false,
            };
            if p.state == target {
                return false;
            }
            if target == PresenceState::Online {
                p.last_active = now;
            }
            p.state = target;
            true
        })?;
        Ok(SyncPresence {
            service: self,
            user: user.to_owned(),
        })
    }

    /// The user did something (sent an event): they are active, and online again if idle.
    pub(crate) fn bump_active(&self, rooms: &RoomService, user: &UserId) -> Result<()> {
        self.update(rooms, user, |p, now| {
            let was_active = p.state == PresenceState::Online
                && now.duration_since(p.last_active) < CURRENTLY_ACTIVE;
            p.last_active = now;
            let changed = p.state != PresenceState::Online || !was_active;
            p.state = PresenceState::Online;
            changed
        })
    }

    /// Applies the idle and offline timeouts. Run periodically.
    pub(crate) fn sweep(&self, rooms: &RoomService) -> Result<()> {
        let now = Instant::now();
        let due: Vec<(OwnedUserId, PresenceState)> = {
            let users = self.inner.lock();
            users
                .by_user
                .iter()
                .filter(|(_, p)| !p.remote)
                .filter_map(|(user, p)| {
                    let gone =
                        p.syncing == 0 && now.duration_since(p.last_sync) > self.offline_timeout;
                    let idle = now.duration_since(p.last_active) > self.idle_timeout;
                    match p.state {
                        PresenceState::Offline => None,
                        _ if gone => Some((user.clone(), PresenceState::Offline)),
                        PresenceState::Online if idle => {
                            Some((user.clone(), PresenceState::Unavailable))
                        }
                        _ => None,
                    }
                })
                .collect()
        };
        for (user, state) in due {
            self.update(rooms, &user, |p, now| {
                // Re-check under the lock: the user may have come back meanwhile.
                let still_due = match state {
                    PresenceState::Offline => {
                        p.syncing == 0 && now.duration_since(p.last_sync) > self.offline_timeout
                    }
                    _ => now.duration_since(p.last_active) > self.idle_timeout,
                };
                if still_due && p.state != state {
                    p.state = state.clone();
                    return true;
                }
                false
            })?;
        }
        Ok(())
    }

    /// Another server's user's presence, as their server says (`m.presence` EDU).
    pub(crate) fn set_remote(
        &self,
        rooms: &RoomService,
        user: &UserId,
        state: PresenceState,
        status_msg: Option<String>,
        last_active_ago: Duration,
    ) -> Result<()> {
        self.update(rooms, user, |p, now| {
            let changed = p.state != state || p.status_msg != status_msg || !p.remote;
            p.remote = true;
            p.state = state;
            p.status_msg = status_msg;
            p.last_active = now.checked_sub(last_active_ago).unwrap_or(now);
            changed
        })
    }

    /// The user's presence; `None` for users the server never saw.
    pub(crate) fn get(&self, user: &UserId) -> Option<PresenceView> {
        let users = self.inner.lock();
        users.by_user.get(user).map(|p| view(p, Instant::now()))
    }

    /// Whether the user is online now: what the support desk calls "available".
    pub(crate) fn is_online(&self, user: &UserId) -> bool {
        self.get(user)
            .is_some_and(|p| p.presence == PresenceState::Online)
    }

    /// Users whose presence changed after the ephemeral number `since` (every known user for
    /// an initial sync), with their presence now.
    pub(crate) fn changed_since(&self, since: Option<u64>) -> Vec<(OwnedUserId, PresenceView)> {
        let users = self.inner.lock();
        let now = Instant::now();
        users
            .changes
            .range(since.map_or(0, |s| s + 1)..)
            .filter_map(|(_, user)| Some((user.clone(), view(users.by_user.get(user)?, now))))
            .collect()
    }

    /// Applies `change` to the user's presence; when it reports a change, numbers it and wakes
    /// everyone who shares a room with the user.
    fn update(
        &self,
        rooms: &RoomService,
        user: &UserId,
        change: impl FnOnce(&mut UserPresence, Instant) -> bool,
    ) -> Result<()> {
        let changed = {
            let mut guard = self.inner.lock();
            let users = &mut *guard;
            let now = Instant::now();
            let p = users
                .by_user
                .entry(user.to_owned())
                .or_insert(UserPresence {
                    state: PresenceState::Offline,
                    status_msg: None,
                    last_active: now,
                    last_sync: now,
                    syncing: 0,
                    serial: 0,
                    remote: false,
                });
            let changed = change(p, now);
            if changed {
                users.changes.remove(&p.serial);
                p.serial = self.stream.next_ephemeral();
                users.changes.insert(p.serial, user.to_owned());
                let event = serde_json::json!({
                    "type": "m.presence",
                    "sender": user,
                    "content": view(p, now),
                });
                self.notifier.publish_edu(None, event);
            }
            changed
        };
        if changed {
            let audience = co_members(rooms, user)?;
            self.notifier.wake(audience.iter().map(|u| &**u));
        }
        Ok(())
    }
}

/// The user and everyone who shares a joined room with them: who may see their presence.
pub(crate) fn co_members(rooms: &RoomService, user: &UserId) -> Result<HashSet<OwnedUserId>> {
    let mut out = HashSet::from([user.to_owned()]);
    for room_id in rooms.joined_rooms(user)? {
        out.extend(rooms.room(&room_id)?.joined_members());
    }
    Ok(out)
}

fn view(p: &UserPresence, now: Instant) -> PresenceView {
    let ago = now.duration_since(p.last_active);
    PresenceView {
        presence: p.state.clone(),
        status_msg: p.status_msg.clone(),
        last_active_ago: ago.as_millis() as u64,
        currently_active: p.state == PresenceState::Online && ago < CURRENTLY_ACTIVE,
    }
}
