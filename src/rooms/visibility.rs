//! History visibility: which events of a room a user may read.
//!
//! The rules of the spec's "History visibility" section, decided per stream position from two
//! short lists read once per request: the user's membership changes in the room and the room's
//! `m.room.history_visibility` changes. Other servers see a room's events by the same rules
//! applied to their users ([`ServerView`]).

use std::sync::Arc;

use ruma::{
    RoomId, ServerName, UserId,
    events::room::{history_visibility::HistoryVisibility, member::MembershipState},
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

use super::{RoomMeta, RoomService, membership_of};
use crate::{
    error::{Error, Result},
    storage::{Key, Table},
};

pub(crate) struct Visibility {
    memberships: Vec<(u64, MembershipState)>,
    history: Vec<(u64, HistoryVisibility)>,
    currently_joined: bool,
}

impl Visibility {
    pub(crate) fn load(rooms: &RoomService, room: &RoomMeta, user: &UserId) -> Result<Self> {
        let mut memberships = Vec::new();
        for (at, pos) in rooms.state_history(room.short, "m.room.member", user.as_str())? {
            if let Some(m) = membership_of(&rooms.event(pos)?.pdu) {
                memberships.push((at, m));
            }
        }
        #[derive(Deserialize)]
        struct C {
            history_visibility: HistoryVisibility,
        }
        let mut history = Vec::new();
        for (at, pos) in rooms.state_history(room.short, "m.room.history_visibility", "")? {
            if let Ok(c) = rooms.event(pos)?.pdu.content_as::<C>() {
                history.push((at, c.history_visibility));
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
        self.memberships.iter().any(|(p, _)| *p == pos) || self.rule_allows(pos)
    }

    /// The spec's rule at `pos`, from the membership and visibility in force there.
    fn rule_allows(&self, pos: u64) -> bool {
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

    /// The positions the user may see, as half-open ranges `[from, to)` in order (`to` is
    /// `u64::MAX` for "from then on"): the rule only changes where the membership or the
    /// visibility does, so a search can ask its index for whole ranges instead of checking
    /// each hit. The user's own membership events, visible whatever the rule, are not in them.
    pub(crate) fn visible_ranges(&self) -> Vec<(u64, u64)> {
        let mut changes: Vec<u64> = std::iter::once(0)
            .chain(self.memberships.iter().map(|(p, _)| *p))
            .chain(self.history.iter().map(|(p, _)| *p))
            .collect();
        changes.sort_unstable();
        changes.dedup();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (i, &from) in changes.iter().enumerate() {
            if !self.rule_allows(from) {
                continue;
            }
            let to = changes.get(i + 1).copied().unwrap_or(u64::MAX);
            match ranges.last_mut() {
                Some(last) if last.1 == from => last.1 = to,
                _ => ranges.push((from, to)),
            }
        }
        ranges
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
    /// The positions of the room the user may see, as [`Visibility::visible_ranges`]. A
    /// member of a room whose history was only ever shared (the default) or world-readable sees
    /// all of it: that answer reads no membership event, and whether the history was always
    /// shared is kept per room until its visibility changes (a search asks it for every room
    /// of the asker).
    pub(crate) fn visible_ranges(&self, room: &RoomMeta, user: &UserId) -> Result<Vec<(u64, u64)>> {
        if room.is_joined(user) && self.history_always_shared(room)? {
            return Ok(vec![(0, u64::MAX)]);
        }
        Ok(Visibility::load(self, room, user)?.visible_ranges())
    }

    fn history_always_shared(&self, room: &RoomMeta) -> Result<bool> {
        let current = self.state_pos(room.short, "m.room.history_visibility", "")?;
        if let Some((at, shared)) = *room.history_shared.lock()
            && at == current
        {
            return Ok(shared);
        }
        #[derive(Deserialize)]
        struct C {
            history_visibility: HistoryVisibility,
        }
        let mut shared = true;
        for (_, pos) in self.state_history(room.short, "m.room.history_visibility", "")? {
            if let Ok(c) = self.event(pos)?.pdu.content_as::<C>() {
                shared &= matches!(
                    c.history_visibility,
                    HistoryVisibility::Shared | HistoryVisibility::WorldReadable
                );
            }
        }
        *room.history_shared.lock() = Some((current, shared));
        Ok(shared)
    }

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

    /// Every change of one state key, oldest first: the position it changed at and the
    /// position of the event that holds it from there ([`super::history_entry`]).
    pub(crate) fn state_history(
        &self,
        short: u64,
        kind: &str,
        state_key: &str,
    ) -> Result<Vec<(u64, u64)>> {
        let prefix = Key::new().u64(short).str(kind).str(state_key).into_vec();
        self.store
            .scan_prefix(Table::StateHistory, &prefix)
            .map(|e| {
                e.map(|(k, v)| super::history_entry(&k, &v))
                    .map_err(Into::into)
            })
            .collect()
    }
}

/// What another server may see of a room's events (spec v1.16, history visibility, applied to
/// servers as Synapse's `filter_events_for_server`): every event whose history is shared or
/// world-readable; under `invited`, those at which one of its users was invited or joined;
/// under `joined`, those at which one was joined. An event it may not see is sent redacted,
/// so that the room's graph stays whole.
pub(crate) struct ServerView {
    /// The room's history was only ever shared or world-readable: nothing to check.
    everything: bool,
    /// The server's users with a membership in the room.
    users: Vec<String>,
}

impl RoomService {
    /// How `server` sees the room's events.
    pub(crate) fn server_view(&self, room: &RoomMeta, server: &ServerName) -> Result<ServerView> {
        if self.history_always_shared(room)? {
            return Ok(ServerView {
                everything: true,
                users: Vec::new(),
            });
        }
        let prefix = Key::new().u64(room.short).str("m.room.member").into_vec();
        let mut users = Vec::new();
        for entry in self.store.scan_prefix(Table::RoomState, &prefix) {
            let (key, _) = entry?;
            if let Some(user) = crate::storage::keys::str_parts(&key[prefix.len()..]).next()
                && UserId::parse(user).is_ok_and(|u| u.server_name() == server)
            {
                users.push(user.to_owned());
            }
        }
        Ok(ServerView {
            everything: false,
            users,
        })
    }

    /// The event at `pos` as the server of `view` may have it: whole, or redacted.
    pub(crate) fn as_seen_by(
        &self,
        room: &RoomMeta,
        view: &ServerView,
        pos: u64,
    ) -> Result<Box<RawJsonValue>> {
        let json = self.event(pos)?.stored.pdu.clone();
        if view.everything || self.server_sees(room, view, pos)? {
            return Ok(json);
        }
        let redacted = crate::events::redact(json.get(), &room.rules)?;
        RawJsonValue::from_string(redacted).map_err(|e| Error::internal(e.to_string()))
    }

    fn server_sees(&self, room: &RoomMeta, view: &ServerView, pos: u64) -> Result<bool> {
        #[derive(Deserialize)]
        struct C {
            history_visibility: HistoryVisibility,
        }
        let visibility =
            match self.state_pos_at(room.short, "m.room.history_visibility", "", pos)? {
                Some(at) => self.event(at)?.pdu.content_as::<C>().ok(),
                None => None,
            };
        let invited_sees = match visibility.map(|c| c.history_visibility) {
            Some(HistoryVisibility::Invited) => true,
            Some(HistoryVisibility::Joined) => false,
            _ => return Ok(true),
        };
        for user in &view.users {
            if let Some(at) = self.state_pos_at(room.short, "m.room.member", user, pos)? {
                match membership_of(&self.event(at)?.pdu) {
                    Some(MembershipState::Join) => return Ok(true),
                    Some(MembershipState::Invite) if invited_sees => return Ok(true),
                    _ => {}
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every position's answer, from the ranges, is the rule's.
    #[test]
    fn visible_ranges_agree_with_the_rule_at_every_position() {
        use HistoryVisibility as H;
        use MembershipState as M;
        let cases = [
            (vec![(10, M::Join)], vec![(1, H::Joined)]),
            (
                vec![(10, M::Join), (20, M::Leave), (30, M::Join)],
                vec![(1, H::Joined)],
            ),
            (
                vec![(5, M::Invite), (10, M::Join), (20, M::Leave)],
                vec![(1, H::Invited), (15, H::Shared)],
            ),
            (
                vec![(10, M::Join), (20, M::Leave)],
                vec![(1, H::Shared), (12, H::WorldReadable), (18, H::Joined)],
            ),
            (vec![(10, M::Join), (20, M::Ban)], vec![]),
            (vec![], vec![(3, H::WorldReadable)]),
        ];
        for (memberships, history) in cases {
            let currently_joined = memberships.last().is_some_and(|(_, m)| *m == M::Join);
            let v = Visibility {
                memberships,
                history,
                currently_joined,
            };
            let ranges = v.visible_ranges();
            for pos in 0..40 {
                let in_ranges = ranges.iter().any(|(a, b)| (*a..*b).contains(&pos));
                let own_membership = v.memberships.iter().any(|(p, _)| *p == pos);
                assert_eq!(
                    in_ranges || own_membership,
                    v.can_see(pos),
                    "pos {pos}, ranges {ranges:?}"
                );
            }
            assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "{ranges:?}");
        }
    }
}
