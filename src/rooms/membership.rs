//! Membership changes: join, invite, leave, kick, ban, unban, forget.
//!
//! Each is an `m.room.member` event whose legality the auth rules decide; this module only
//! shapes the content and adds what the rules leave to the server (an existing local target,
//! forgetting only rooms one has left).

use std::sync::Arc;

use ruma::{
    OwnedEventId, OwnedUserId, RoomId, UserId,
    events::{StateEventType, room::member::MembershipState},
};
use serde::Serialize;

use super::{RoomMeta, RoomService, timeline::Txn};
use crate::{
    error::{Error, Result},
    events::EventTemplate,
    storage::{Batch, Key, Table},
    stream::Pending,
};

/// The profile a member event carries.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct MemberProfile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) displayname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) avatar_url: Option<String>,
}

#[derive(Serialize)]
struct MemberContent<'a> {
    membership: MembershipState,
    #[serde(flatten)]
    profile: &'a MemberProfile,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_direct: Option<bool>,
    /// Who vouches for a join of a restricted room (`restricted.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    join_authorised_via_users_server: Option<OwnedUserId>,
}

/// One membership change to make.
pub(crate) struct MembershipChange<'a> {
    pub(crate) sender: &'a UserId,
    pub(crate) target: &'a UserId,
    pub(crate) membership: MembershipState,
    pub(crate) profile: MemberProfile,
    pub(crate) reason: Option<&'a str>,
    pub(crate) is_direct: Option<bool>,
}

impl RoomService {
    /// Updates the user's member event in every joined room with their new profile, as Synapse
    /// does. A room that refuses (the user lost the right to change it) is logged and skipped.
    pub(crate) async fn propagate_profile(
        &self,
        user: &UserId,
        profile: &MemberProfile,
    ) -> Result<()> {
        for room_id in self.joined_rooms(user)? {
            let change = MembershipChange {
                sender: user,
                target: user,
                membership: MembershipState::Join,
                profile: profile.clone(),
                reason: None,
                is_direct: None,
            };
            if let Err(e) = self.change_membership(&room_id, change).await {
                tracing::warn!(room = %room_id, error = %e, "profile change not propagated");
            }
        }
        Ok(())
    }

    /// Makes the user leave every room they are in, are invited to or knock on, so other
    /// members see the departure: what deactivating an account does first. A room that
    /// refuses is logged and skipped.
    pub(crate) async fn leave_all(&self, user: &UserId) -> Result<()> {
        use MembershipState::{Invite, Join, Knock};
        for (room_id, record) in self.user_rooms(user)? {
            if !matches!(record.membership, Join | Invite | Knock) {
                continue;
            }
            let change = MembershipChange {
                sender: user,
                target: user,
                membership: MembershipState::Leave,
                profile: Default::default(),
                reason: None,
                is_direct: None,
            };
            if let Err(e) = self.change_membership(&room_id, change).await {
                tracing::warn!(room = %room_id, error = %e, "could not leave a room while deactivating");
            }
        }
        Ok(())
    }

    /// Makes one membership change as an event in the room.
    pub(crate) async fn change_membership(
        &self,
        room_id: &RoomId,
        change: MembershipChange<'_>,
    ) -> Result<OwnedEventId> {
        // Another server's user is invited through their server, which signs the invite too.
        if change.membership == MembershipState::Invite
            && let Some(federated) = self.federated_for_user(change.target)
        {
            let invite = super::RemoteInvite {
                room_id,
                sender: change.sender,
                invitee: change.target,
                reason: change.reason,
                is_direct: change.is_direct.unwrap_or(false),
            };
            return federated.invite(self, invite).await;
        }
        let room = self.room(room_id)?;
        let content = MemberContent {
            membership: change.membership.clone(),
            profile: &change.profile,
            reason: change.reason,
            is_direct: change.is_direct,
            join_authorised_via_users_server: None,
        };
        let template =
            EventTemplate::state_json(StateEventType::RoomMember, change.target.as_str(), &content);
        self.append(&room, change.sender, template, None::<Txn>)
            .await
    }

    /// Joins a user to a room, through `via` (and the inviter's and the room id's servers)
    /// when it is another server's room this server does not follow; joining again with an
    /// unchanged profile is a no-op.
    pub(crate) async fn join_via(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: MemberProfile,
        reason: Option<&str>,
        via: &[ruma::OwnedServerName],
    ) -> Result<()> {
        let joined = self
            .join_unsynced(room_id, user, profile, reason, via)
            .await?;
        if let Some((room, pending)) = joined {
            self.publish(&room, pending).await?;
        }
        Ok(())
    }

    /// Joins a user to a room; joining again with an unchanged profile is a no-op.
    pub(crate) async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: MemberProfile,
        reason: Option<&str>,
    ) -> Result<()> {
        self.join_via(room_id, user, profile, reason, &[]).await
    }

    /// [`join`](Self::join) without waiting for the disk, for a server-side user whose next
    /// write to the store follows at once (the support bot joins, then opens the conversation):
    /// that write's wait covers the join too, one disk sync instead of two. The caller must
    /// still [`publish`](Self::publish) the join, which returns at once if that write did.
    /// `None` when the user was already joined with this profile, or joined another server's
    /// room (through `via` and the defaults of [`join_via`](Self::join_via); published already).
    pub(crate) async fn join_unsynced(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: MemberProfile,
        reason: Option<&str>,
        via: &[ruma::OwnedServerName],
    ) -> Result<Option<(Arc<RoomMeta>, Pending)>> {
        // Another server's room: joined through it, published when this returns.
        if let Some(federated) = self.federated_for_room(room_id)? {
            let via = self.default_via(room_id, user, via)?;
            let join = super::RemoteJoin {
                room_id,
                user,
                profile: &profile,
                reason,
                via: &via,
            };
            federated.join(self, join).await?;
            return Ok(None);
        }
        let room = self.room(room_id)?;
        if room.is_joined(user) {
            let current = self.state_pdu(room.short, "m.room.member", user.as_str())?;
            let unchanged = current.is_some_and(|pdu| {
                #[derive(serde::Deserialize, PartialEq)]
                struct P {
                    displayname: Option<String>,
                    avatar_url: Option<String>,
                }
                pdu.content_as::<P>().ok()
                    == Some(P {
                        displayname: profile.displayname.clone(),
                        avatar_url: profile.avatar_url.clone(),
                    })
            });
            if unchanged {
                return Ok(None);
            }
        }
        let content = MemberContent {
            membership: MembershipState::Join,
            profile: &profile,
            reason,
            is_direct: None,
            join_authorised_via_users_server: self.join_authoriser(&room, user)?,
        };
        let template =
            EventTemplate::state_json(StateEventType::RoomMember, user.as_str(), &content);
        let (_, pending) = self
            .append_pending(&room, user, template, None::<Txn>)
            .await?;
        Ok(pending.map(|pending| (room, pending)))
    }

    /// Knocks on a room (its join rule must be `knock`): another server's room through `via`
    /// (and the room id's server), whose answer the user's sync shows until the room's
    /// members let them in (an invite) or not.
    pub(crate) async fn knock(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: MemberProfile,
        reason: Option<&str>,
        via: &[ruma::OwnedServerName],
    ) -> Result<()> {
        if let Some(federated) = self.federated_for_room(room_id)? {
            let via = self.default_via(room_id, user, via)?;
            let knock = super::RemoteJoin {
                room_id,
                user,
                profile: &profile,
                reason,
                via: &via,
            };
            return federated.knock(self, knock).await;
        }
        let change = MembershipChange {
            sender: user,
            target: user,
            membership: MembershipState::Knock,
            profile,
            reason,
            is_direct: None,
        };
        self.change_membership(room_id, change).await.map(drop)
    }

    /// What the auth rules leave to the server before a kick: they would accept a `leave` for
    /// someone never in the room, and turn a ban into a plain `leave`.
    pub(crate) fn check_kick(&self, room_id: &RoomId, target: &UserId) -> Result<()> {
        match self.membership(&*self.room(room_id)?, target)? {
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock) => {
                Ok(())
            }
            Some(MembershipState::Ban) => Err(bad_state("Cannot kick a banned user")),
            _ => Err(Error::forbidden("The target user is not in the room")),
        }
    }

    /// An unban is a `leave` too; without this check it would kick a joined member.
    pub(crate) fn check_unban(&self, room_id: &RoomId, target: &UserId) -> Result<()> {
        if self.membership(&*self.room(room_id)?, target)? != Some(MembershipState::Ban) {
            return Err(bad_state("Cannot unban a user who is not banned"));
        }
        Ok(())
    }

    /// Whether the user forgot the room: they have a membership but no longer list the room.
    pub(crate) fn forgotten(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        let room = self.room(room_id)?;
        let listed = self.store.contains(
            Table::UserRooms,
            &Key::new()
                .str(user.as_str())
                .str(room_id.as_str())
                .into_vec(),
        )?;
        Ok(!listed && self.membership(&room, user)?.is_some())
    }

    /// Forgets a room the user has left: it disappears from their sync and room lists.
    pub(crate) async fn forget(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        let room = self.room(room_id)?;
        match self.membership(&room, user)? {
            Some(MembershipState::Join)
            | Some(MembershipState::Invite)
            | Some(MembershipState::Knock) => Err(Error::unknown(
                "You must leave the room before forgetting it",
            )),
            _ => {
                let mut batch = Batch::new();
                batch.delete(
                    Table::UserRooms,
                    Key::new().str(user.as_str()).str(room_id.as_str()),
                );
                self.store.write_durable(batch).await?;
                Ok(())
            }
        }
    }
}

fn bad_state(message: &'static str) -> Error {
    Error::matrix(http::StatusCode::FORBIDDEN, "M_BAD_STATE", message)
}
