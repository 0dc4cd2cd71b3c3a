//! Threads: a room's thread roots by latest activity (`/threads`) and who took part in one.
//!
//! The `ThreadRoots` index (room, latest reply position, root position) is kept by
//! `relations.rs` in the batch of every reply and of every redaction of a latest reply, so
//! listing threads newest first is one reverse range scan of the room's entries.

use ruma::{UserId, events::relation::RelationType};

use super::{RoomMeta, RoomService, Visibility};
use crate::{
    error::Result,
    events::Pdu,
    storage::{Key, Table, keys},
};

impl RoomService {
    /// Whether `user` sent the thread root or a reply in its thread.
    pub(crate) fn participated(&self, root: &Pdu, user: &UserId) -> Result<bool> {
        if root.sender == user {
            return Ok(true);
        }
        Ok(self
            .children(&root.event_id, Some(&RelationType::Thread), 0, u64::MAX)?
            .iter()
            .any(|c| c.sender == user))
    }

    /// Thread roots of a room the user may see, most recently active first, from `from` (a
    /// token: roots whose latest reply is at `<= from`). Returns the root positions and the
    /// token of the next page.
    pub(crate) fn thread_roots(
        &self,
        room: &RoomMeta,
        visibility: &Visibility,
        participated_by: Option<&UserId>,
        from: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<u64>, Option<u64>)> {
        let lo = Key::new().u64(room.short).into_vec();
        let hi = match from {
            Some(f) => Key::new()
                .u64(room.short)
                .u64(f.saturating_add(1))
                .into_vec(),
            None => Key::new().u64(room.short + 1).into_vec(),
        };
        let mut roots = Vec::new();
        for entry in self.store.range(Table::ThreadRoots, &lo, &hi).rev() {
            let (key, _) = entry?;
            let latest = keys::decode_u64(&key[8..16]);
            let root = keys::trailing_u64(&key);
            if !visibility.can_see(root) {
                continue;
            }
            if let Some(user) = participated_by
                && !self.participated(&self.event(root)?.pdu, user)?
            {
                continue;
            }
            if roots.len() == limit {
                let (last_latest, _) = roots.last().copied().expect("limit is at least 1");
                return Ok((
                    roots.into_iter().map(|(_, r)| r).collect(),
                    Some(last_latest - 1),
                ));
            }
            roots.push((latest, root));
        }
        Ok((roots.into_iter().map(|(_, r)| r).collect(), None))
    }
}
