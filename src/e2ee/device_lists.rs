//! The device-list change log: which users' devices or cross-signing keys changed, by stream
//! position, and the `changed`/`left` lists a syncing user is owed.
//!
//! A change is one row `(position, user)`, so "what changed since token `t`" is one range read
//! from `t`, never a scan of all users. Membership moves count too: a user who starts sharing a
//! room with the syncer is `changed` (the syncer must fetch their devices), one who no longer
//! shares any room is `left`.

use std::collections::{BTreeSet, HashSet};

use ruma::{OwnedUserId, UserId, events::room::member::MembershipState};

use super::{E2eeService, peers};
use crate::{
    error::Result,
    rooms::RoomService,
    storage::{Batch, Key, Table, keys},
};

/// What a user is told about others' device lists between two tokens.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceListChanges {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

/// Records in `batch` that `user`'s device list changed at `pos`.
pub(super) fn record(batch: &mut Batch, pos: u64, user: &UserId) {
    batch.put(
        Table::DeviceListChanges,
        Key::new().u64(pos).str(user.as_str()),
        Vec::new(),
    );
}

impl E2eeService {
    /// Another server said `user`'s devices or cross-signing keys changed: the users who
    /// share a room with them hear it in their next sync and query the keys again.
    pub(crate) async fn remote_device_list_changed(
        &self,
        user: &UserId,
        co_members: &[OwnedUserId],
    ) -> Result<()> {
        let pending = self.stream.apply(|pos| {
            let mut batch = Batch::new();
            record(&mut batch, pos, user);
            batch
        })?;
        self.stream.finish(pending).await?;
        self.notifier.wake(co_members.iter().map(|u| &**u));
        Ok(())
    }

    /// Users whose device list changed in `(from, to]`, whatever room they are in.
    fn changed_users(&self, from: u64, to: u64) -> Result<HashSet<OwnedUserId>> {
        let start = Key::new().u64(from.saturating_add(1)).into_vec();
        let end = Key::new().u64(to.saturating_add(1)).into_vec();
        let mut out = HashSet::new();
        for entry in self.store.range(Table::DeviceListChanges, &start, &end) {
            let (k, _) = entry?;
            if let Some(user) = keys::str_parts(&k[8..])
                .next()
                .and_then(|u| UserId::parse(u).ok())
            {
                out.insert(user);
            }
        }
        Ok(out)
    }

    /// What `user` must hear about device lists between the positions `from` and `to`.
    pub(crate) fn device_list_changes(
        &self,
        rooms: &RoomService,
        user: &UserId,
        from: u64,
        to: u64,
    ) -> Result<DeviceListChanges> {
        if from >= to {
            return Ok(DeviceListChanges::default());
        }
        let device_changed = self.changed_users(from, to)?;
        let mut changed = BTreeSet::new();
        let mut departed = BTreeSet::new();
        for (room_id, membership) in rooms.user_rooms(user)? {
            let room = rooms.room(&room_id)?;
            if membership.pos > from && membership.pos <= to {
                // The user's own join or departure: everyone in the room is new, or gone.
                match membership.membership {
                    MembershipState::Join => changed.extend(room.joined_members()),
                    MembershipState::Leave | MembershipState::Ban => {
                        departed.extend(self.members_at(rooms, room.short, to)?)
                    }
                    _ => {}
                }
                continue;
            }
            if membership.membership != MembershipState::Join || room.last_pos() <= from {
                continue;
            }
            for (member, state) in self.member_changes(rooms, room.short, from, to)? {
                match state {
                    MembershipState::Join => {
                        changed.insert(member);
                    }
                    MembershipState::Leave | MembershipState::Ban => {
                        departed.insert(member);
                    }
                    _ => {}
                }
            }
        }
        if device_changed.is_empty() && departed.is_empty() {
            // The common case: nothing to check against the user's peers, so skip building
            // that set (every joined room's members).
            return Ok(DeviceListChanges {
                changed: changed.into_iter().collect(),
                left: Vec::new(),
            });
        }
        let sharing = peers(rooms, user)?;
        changed.extend(device_changed.into_iter().filter(|u| sharing.contains(u)));
        let left = departed
            .into_iter()
            .filter(|u| !sharing.contains(u) && u != user)
            .collect();
        Ok(DeviceListChanges {
            changed: changed.into_iter().collect(),
            left,
        })
    }

    /// Members of a room whose membership changed in `(from, to]`, with what it is now.
    fn member_changes(
        &self,
        rooms: &RoomService,
        short: u64,
        from: u64,
        to: u64,
    ) -> Result<Vec<(OwnedUserId, MembershipState)>> {
        let prefix = Key::new().u64(short).str("m.room.member").into_vec();
        let mut touched = BTreeSet::new();
        for entry in self.store.scan_prefix(Table::StateHistory, &prefix) {
            let (k, _) = entry?;
            let pos = keys::trailing_u64(&k);
            if pos > from
                && pos <= to
                && let Some(member) = keys::str_parts(&k[prefix.len()..])
                    .next()
                    .and_then(|u| UserId::parse(u).ok())
            {
                touched.insert(member);
            }
        }
        let mut out = Vec::new();
        for member in touched {
            if let Some(pdu) = rooms.state_pdu(short, "m.room.member", member.as_str())?
                && let Some(state) = crate::rooms::membership_of(&pdu)
            {
                out.push((member, state));
            }
        }
        Ok(out)
    }

    /// Everyone who was ever a member of the room up to `to` (the audience a leaver loses).
    fn members_at(&self, _rooms: &RoomService, short: u64, to: u64) -> Result<Vec<OwnedUserId>> {
        let prefix = Key::new().u64(short).str("m.room.member").into_vec();
        let mut out = BTreeSet::new();
        for entry in self.store.scan_prefix(Table::StateHistory, &prefix) {
            let (k, _) = entry?;
            if keys::trailing_u64(&k) <= to
                && let Some(member) = keys::str_parts(&k[prefix.len()..])
                    .next()
                    .and_then(|u| UserId::parse(u).ok())
            {
                out.insert(member);
            }
        }
        Ok(out.into_iter().collect())
    }
}
