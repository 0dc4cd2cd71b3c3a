//! What the room service asks of federation for rooms and users of other servers, so that every
//! caller (the client API, the support bot and desk, bridges) joins and invites across servers
//! through the same `join` and `change_membership`. Federation implements [`Federated`] and is
//! handed to the room service once at start ([`RoomService::set_federated`]); without it, other
//! servers' rooms and users are simply unknown, as before.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ruma::{OwnedEventId, OwnedServerName, RoomId, UserId};

use super::{MemberProfile, RoomService};
use crate::error::Result;

/// A local user joining, or knocking on, a room this server does not follow.
pub(crate) struct RemoteJoin<'a> {
    pub(crate) room_id: &'a RoomId,
    pub(crate) user: &'a UserId,
    pub(crate) profile: &'a MemberProfile,
    pub(crate) reason: Option<&'a str>,
    /// Servers to join through, in order.
    pub(crate) via: &'a [OwnedServerName],
}

/// A local user inviting another server's user.
pub(crate) struct RemoteInvite<'a> {
    pub(crate) room_id: &'a RoomId,
    pub(crate) sender: &'a UserId,
    pub(crate) invitee: &'a UserId,
    pub(crate) reason: Option<&'a str>,
    pub(crate) is_direct: bool,
}

pub(crate) trait Federated: Send + Sync {
    fn join<'a>(
        &'a self,
        rooms: &'a RoomService,
        join: RemoteJoin<'a>,
    ) -> BoxFuture<'a, Result<()>>;

    fn invite<'a>(
        &'a self,
        rooms: &'a RoomService,
        invite: RemoteInvite<'a>,
    ) -> BoxFuture<'a, Result<OwnedEventId>>;

    fn knock<'a>(
        &'a self,
        rooms: &'a RoomService,
        knock: RemoteJoin<'a>,
    ) -> BoxFuture<'a, Result<()>>;
}

impl RoomService {
    /// Hands the room service federation's side of joins and invites; once, at start.
    pub(crate) fn set_federated(&self, federated: Arc<dyn Federated>) {
        let _ = self.federated.set(federated);
    }

    /// Federation, when `user` is of another server.
    pub(super) fn federated_for_user(&self, user: &UserId) -> Option<&dyn Federated> {
        let federated = self.federated.get()?;
        (user.server_name() != self.server_name).then_some(&**federated)
    }

    /// Federation, when the room is one this server does not follow (`followed_here`).
    pub(super) fn federated_for_room(&self, room_id: &RoomId) -> Result<Option<&dyn Federated>> {
        let Some(federated) = self.federated.get() else {
            return Ok(None);
        };
        Ok((!self.followed_here(room_id, &self.server_name)?).then_some(&**federated))
    }

    /// Where to join a room this server does not follow through, besides what the caller
    /// names: the inviter's server (when the user was invited) and the room id's server.
    pub(super) fn default_via(
        &self,
        room_id: &RoomId,
        user: &UserId,
        named: &[OwnedServerName],
    ) -> Result<Vec<OwnedServerName>> {
        let mut via = Vec::with_capacity(named.len() + 2);
        if self.exists(room_id)? {
            let room = self.room(room_id)?;
            if let Some(invite) = self.state_pdu(room.short, "m.room.member", user.as_str())? {
                via.push(invite.sender.server_name().to_owned());
            }
        }
        via.extend(named.iter().cloned());
        if let Some(server) = room_id.server_name() {
            via.push(server.to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        via.retain(|s| *s != self.server_name && seen.insert(s.clone()));
        Ok(via)
    }
}
