//! Restricted rooms (join rule `restricted` or `knock_restricted`): a member of one of the
//! rooms the join rule allows may join without an invite. A member of the room with the power
//! to invite vouches for the join (`join_authorised_via_users_server` in its content), and that
//! member's server signs it (spec v1.16, room versions 8+). This server vouches with one of
//! its own users, when the joining user's membership in an allowed room is known here: for a
//! local user's join, and for another server's user through `make_join`/`send_join`.

use ruma::{OwnedRoomId, OwnedUserId, UserId, events::room::member::MembershipState};
use serde::Deserialize;

use super::{RoomMeta, RoomService};
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct JoinRules {
    join_rule: String,
    #[serde(default)]
    allow: Vec<AllowRule>,
}

#[derive(Deserialize)]
struct AllowRule {
    #[serde(rename = "type")]
    kind: String,
    room_id: Option<OwnedRoomId>,
}

impl RoomService {
    /// The local member who vouches for `user` joining `room`, or `None` when nobody needs to
    /// (the room is not restricted, or the user is invited or joined already). `M_FORBIDDEN`
    /// when the user is in none of the allowed rooms as this server knows them, or no local
    /// member may invite.
    pub(crate) fn join_authoriser(
        &self,
        room: &RoomMeta,
        user: &UserId,
    ) -> Result<Option<OwnedUserId>> {
        let Some(rules) = self.state_pdu(room.short, "m.room.join_rules", "")? else {
            return Ok(None);
        };
        let Ok(rules) = rules.content_as::<JoinRules>() else {
            return Ok(None);
        };
        if !matches!(rules.join_rule.as_str(), "restricted" | "knock_restricted") {
            return Ok(None);
        }
        if matches!(
            self.membership(room, user)?,
            Some(MembershipState::Invite | MembershipState::Join)
        ) {
            return Ok(None);
        }
        let mut allowed = false;
        for rule in rules.allow.iter().filter(|r| r.kind == "m.room_membership") {
            let Some(room_id) = &rule.room_id else {
                continue;
            };
            if self.exists(room_id)?
                && self.membership(&*self.room(room_id)?, user)? == Some(MembershipState::Join)
            {
                allowed = true;
                break;
            }
        }
        if !allowed {
            return Err(Error::forbidden(
                "You are not a member of a room this room allows to join",
            ));
        }
        let levels = self.power_levels(room)?;
        let mut members: Vec<OwnedUserId> = room
            .joined_members()
            .into_iter()
            .filter(|m| m.server_name() == self.server_name)
            .filter(|m| levels.user_level(m) >= levels.invite())
            .collect();
        members.sort_by_key(|m| std::cmp::Reverse(levels.user_level(m)));
        members
            .into_iter()
            .next()
            .map(Some)
            .ok_or_else(|| Error::forbidden("No member of this server may let you in"))
    }
}
