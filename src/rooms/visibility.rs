//! History visibility: which events of a room a user may read.
//!
//! The rules of the spec's "History visibility" section, decided per stream position from two
//! short lists read once per request: the user's membership changes in the room and the room's
//! `m.room.history_visibility` changes.

use std::sync::Arc;

use ruma::{
    RoomId, UserId,
    events::room::{history_visibility::HistoryVisibility, member::MembershipState},
};
use serde::Deserialize;

use super::{RoomMeta, RoomService, membership_of};
use crate::{
    error::{Error, Result},
    storage::{Key, Table, keys},
};

pub(crate) struct Visibility {
    memberships: Vec<(u64, MembershipState)>,
    history: Vec<(u64, HistoryVisibility)>,
    currently_joined: bool,
}

impl Visibility {
    pub(crate) fn load(rooms: &RoomService, room: &RoomMeta, user: &UserId) -> Result<Self> {
        let mut memberships = Vec::new();
        for pos in rooms.state_history(room.short, "m.room.member", user.as_str())? {
            if let Some(m) = membership_of(&rooms.event(pos)?.pdu) {
                memberships.push((pos, m));
            }
        }
        #[derive(Deserialize)]
        struct C {
            history_visibility: HistoryVisibility,
        }
        let mut history = Vec::new();
        for pos in rooms.state_history(room.short, "m.room.history_visibility", "")? {
            if let Ok(c) = rooms.event(pos)?.pdu.content_as::<C>() {
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
    pub(crate) fn can_see(&self, pos: u64) -> bool {
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

    /// Whether the room's history is world-readable now: anyone may read it.
    pub(crate) fn world_readable(&self) -> bool {
        matches!(
            self.history.last(),
            Some((_, HistoryVisibility::WorldReadable))
        )
    }

    /// Whether the user is a member now.
    pub(crate) fn currently_joined(&self) -> bool {
        self.currently_joined
    }

    /// Whether the user was a member once and has since left or been removed: they may still
    /// read the room as it was when they departed.
    pub(crate) fn departed(&self) -> bool {
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
    /// The room and what the user may see of it; `M_FORBIDDEN` if nothing: a current member, a
    /// former member who has not forgotten the room (they see it up to their departure), or
    /// anyone when the room's history is world-readable now (as Synapse). An invited user reads
    /// the invite's stripped state, not the room: seeing their own invite (or ban) event is no
    /// licence to read `/state` or `/members`.
    pub(crate) fn readable(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<(Arc<RoomMeta>, Visibility)> {
        let forbidden = || Error::forbidden("You are not a member of this room");
        let room = self.room(room_id).map_err(|_| forbidden())?;
        let visibility = Visibility::load(self, &room, user)?;
        let allowed = visibility.currently_joined()
            || visibility.world_readable()
            || (visibility.departed() && !self.forgotten(room_id, user)?);
        if !allowed {
            return Err(forbidden());
        }
        Ok((room, visibility))
    }

    /// For a user who left, the position their view of the room stops at.
    pub(crate) fn departure(
        &self,
        room: &RoomMeta,
        user: &UserId,
        visibility: &Visibility,
    ) -> Result<Option<u64>> {
        if visibility.currently_joined() {
            return Ok(None);
        }
        self.state_pos(room.short, "m.room.member", user.as_str())
    }

    /// The room's state as the user may see it, as `(type, state_key, position)`: the current
    /// state for members, the state as of their departure for former members.
    pub(crate) fn visible_state(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Vec<(String, String, u64)>> {
        let (room, visibility) = self.readable(room_id, user)?;
        let at = self.departure(&room, user, &visibility)?;
        let mut out = Vec::new();
        for (kind, key, pos) in self.current_state_keys(room.short)? {
            let pos = match at {
                Some(at) if pos > at => match self.state_pos_at(room.short, &kind, &key, at)? {
                    Some(p) => p,
                    None => continue,
                },
                _ => pos,
            };
            out.push((kind, key, pos));
        }
        Ok(out)
    }

    /// One state event the user may see (as of their departure for former members).
    pub(crate) fn visible_state_pos(
        &self,
        room_id: &RoomId,
        user: &UserId,
        kind: &str,
        key: &str,
    ) -> Result<Option<u64>> {
        let (room, visibility) = self.readable(room_id, user)?;
        match self.departure(&room, user, &visibility)? {
            Some(at) => self.state_pos_at(room.short, kind, key, at),
            None => self.state_pos(room.short, kind, key),
        }
    }

    /// Positions of every change of one state key, oldest first.
    pub(crate) fn state_history(
        &self,
        short: u64,
        kind: &str,
        state_key: &str,
    ) -> Result<Vec<u64>> {
        let prefix = Key::new().u64(short).str(kind).str(state_key).into_vec();
        self.store
            .scan_prefix(Table::StateHistory, &prefix)
            .map(|e| e.map(|(k, _)| keys::trailing_u64(&k)).map_err(Into::into))
            .collect()
    }
}
