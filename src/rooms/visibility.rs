//! History visibility: which events of a room a user may read.
//!
//! The rules of the spec's "History visibility" section, decided per stream position from two
//! short lists read once per request: the user's membership changes in the room and the room's
//! `m.room.history_visibility` changes.

use ruma::{
    UserId,
    events::room::{history_visibility::HistoryVisibility, member::MembershipState},
};
use serde::Deserialize;

use super::{RoomMeta, RoomService, membership_of};
use crate::{
    error::Result,
    storage::{Key, Table, keys},
};

pub struct Visibility {
    memberships: Vec<(u64, MembershipState)>,
    history: Vec<(u64, HistoryVisibility)>,
    currently_joined: bool,
}

impl Visibility {
    pub fn load(rooms: &RoomService, room: &RoomMeta, user: &UserId) -> Result<Self> {
        let mut memberships = Vec::new();
        for pos in rooms.state_history(room.short, "m.room.member", user.as_str())? {
            if let Some(m) = membership_of(&rooms.event(pos)?.pdu.clone()) {
                memberships.push((pos, m));
            }
        }
        #[derive(Deserialize)]
        struct C {
            history_visibility: HistoryVisibility,
        }
        let mut history = Vec::new();
        for pos in rooms.state_history(room.short, "m.room.history_visibility", "")? {
            if let Ok(c) = rooms.event(pos)?.pdu.clone().content_as::<C>() {
                history.push((pos, c.history_visibility));
            }
        }
        let currently_joined = memberships
            .last()
            .is_some_and(|(_, m)| *m == MembershipState::Join);
        Ok(Visibility {
            memberships,
            history,
            currently_joined,
        })
    }

    fn at<T: Clone>(list: &[(u64, T)], pos: u64) -> Option<T> {
        let idx = list.partition_point(|(p, _)| *p <= pos);
        idx.checked_sub(1).map(|i| list[i].1.clone())
    }

    /// Whether the user may see the event at `pos`.
    pub fn can_see(&self, pos: u64) -> bool {
        // A user always sees their own membership events.
        if self.memberships.iter().any(|(p, _)| *p == pos) {
            return true;
        }
        let history = Self::at(&self.history, pos).unwrap_or(HistoryVisibility::Shared);
        let membership = Self::at(&self.memberships, pos);
        match history {
            HistoryVisibility::WorldReadable => true,
            _ if membership == Some(MembershipState::Join) => true,
            HistoryVisibility::Shared => self.currently_joined,
            HistoryVisibility::Invited => membership == Some(MembershipState::Invite),
            _ => false,
        }
    }

    /// Whether the user could see anything at all: a current member, or a world-readable room.
    pub fn currently_joined(&self) -> bool {
        self.currently_joined
    }

    /// Whether the user was a member once and has since left or been removed: they may still
    /// read the room as it was when they departed.
    pub fn departed(&self) -> bool {
        matches!(
            self.memberships.last(),
            Some((_, MembershipState::Leave | MembershipState::Ban))
        ) && self
            .memberships
            .iter()
            .any(|(_, m)| *m == MembershipState::Join)
    }
}

impl RoomService {
    /// Positions of every change of one state key, oldest first.
    pub fn state_history(&self, short: u64, kind: &str, state_key: &str) -> Result<Vec<u64>> {
        let prefix = Key::new().u64(short).str(kind).str(state_key).into_vec();
        self.store
            .scan_prefix(Table::StateHistory, &prefix)
            .map(|e| e.map(|(k, _)| keys::trailing_u64(&k)).map_err(Into::into))
            .collect()
    }
}
