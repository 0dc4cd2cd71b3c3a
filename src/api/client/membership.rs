//! Membership endpoints: join (by id or alias), knock, invite, leave, forget, kick, ban, unban.

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedRoomId, OwnedServerName, RoomOrAliasId, UserId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias,
            kick_user, leave_room, unban_user,
        },
    },
    events::room::member::MembershipState,
};

use super::profile::member_profile;
use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    rooms::{MemberProfile, MembershipChange},
    services::Services,
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, join_by_id);
    let r = route(r, join_by_id_or_alias);
    let r = route(r, knock);
    let r = route(r, invite);
    let r = route(r, leave);
    let r = route(r, forget);
    let r = route(r, kick);
    let r = route(r, ban);
    route(r, unban)
}

fn profile(s: &Services, user: &UserId) -> Result<MemberProfile> {
    Ok(s.users
        .get(user)?
        .map(|r| member_profile(&r))
        .unwrap_or_default())
}

/// Joins `room` (an id, or an alias resolved here or by its server); another server's room
/// through `via`, the alias's servers, the inviter's and the room id's server.
async fn join(
    s: &Services,
    room: &RoomOrAliasId,
    user: &UserId,
    reason: Option<&str>,
    via: &[OwnedServerName],
) -> Result<OwnedRoomId> {
    let (room_id, servers) = target(s, room, via).await?;
    s.rooms
        .join_via(&room_id, user, profile(s, user)?, reason, &servers)
        .await?;
    Ok(room_id)
}

/// The room `room` names (an id, or an alias resolved here or by its server), and the servers
/// to reach it through when it is another server's: `via`, then the alias's.
async fn target(
    s: &Services,
    room: &RoomOrAliasId,
    via: &[OwnedServerName],
) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    let mut servers: Vec<OwnedServerName> = via.iter().take(MAX_VIA).cloned().collect();
    let room_id: OwnedRoomId = match <&ruma::RoomId>::try_from(room) {
        Ok(id) => id.to_owned(),
        Err(alias) => match s.resolve_alias(alias).await? {
            Some(room_id) => room_id,
            None => match &s.federation {
                Some(federation) if alias.server_name() != s.config.server_name => {
                    let (room_id, alias_servers) = federation.alias(alias).await?;
                    servers.extend(alias_servers);
                    room_id
                }
                _ => return Err(Error::not_found("Room alias not found")),
            },
        },
    };
    if s.federation.is_none() && !s.rooms.exists(&room_id)? {
        return Err(Error::not_found("Unknown room"));
    }
    Ok((room_id, servers))
}

/// Asks to be let into a room whose join rule is `knock`; its members answer with an invite.
async fn knock(
    s: Arc<Services>,
    req: Ruma<knock_room::v3::Request>,
) -> Result<knock_room::v3::Response> {
    let user = req.user_id();
    let (room_id, servers) = target(&s, &req.body.room_id_or_alias, &req.body.via).await?;
    s.rooms
        .knock(
            &room_id,
            user,
            profile(&s, user)?,
            req.body.reason.as_deref(),
            &servers,
        )
        .await?;
    Ok(knock_room::v3::Response::new(room_id))
}

/// The most `via` servers a join tries.
const MAX_VIA: usize = 10;

async fn join_by_id(
    s: Arc<Services>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response> {
    let room: &RoomOrAliasId = <&RoomOrAliasId>::from(&*req.body.room_id);
    let room_id = join(&s, room, req.user_id(), req.body.reason.as_deref(), &[]).await?;
    Ok(join_room_by_id::v3::Response::new(room_id))
}

async fn join_by_id_or_alias(
    s: Arc<Services>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let room_id = join(
        &s,
        &req.body.room_id_or_alias,
        req.user_id(),
        req.body.reason.as_deref(),
        &req.body.via,
    )
    .await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

/// Another user's membership change made by the requester.
async fn change_other(
    s: &Services,
    room_id: &ruma::RoomId,
    sender: &UserId,
    target: &UserId,
    membership: MembershipState,
    reason: Option<&str>,
) -> Result<()> {
    // A kick or ban keeps the target's profile in the event, as Synapse does.
    let profile = if membership == MembershipState::Invite {
        profile(s, target)?
    } else {
        MemberProfile::default()
    };
    let change = MembershipChange {
        sender,
        target,
        membership,
        profile,
        reason,
        is_direct: None,
    };
    s.rooms.change_membership(room_id, change).await.map(drop)
}

async fn invite(
    s: Arc<Services>,
    req: Ruma<invite_user::v3::Request>,
) -> Result<invite_user::v3::Response> {
    let invite_user::v3::InvitationRecipient::UserId(invitee) = &req.body.recipient else {
        return Err(Error::matrix(
            http::StatusCode::BAD_REQUEST,
            "M_UNRECOGNIZED",
            "Third-party invites are not supported",
        ));
    };
    let user_id = &invitee.user_id;
    // Another server's user: their server answers for them (`change_membership`).
    let remote = user_id.server_name() != s.config.server_name && s.federation.is_some();
    if !remote && !s.user_is_active(user_id).await? {
        return Err(Error::not_found(format!("Unknown user {user_id}")));
    }
    s.rooms.require_joined(&req.body.room_id, req.user_id())?;
    let reason = invitee.reason.as_deref();
    change_other(
        &s,
        &req.body.room_id,
        req.user_id(),
        user_id,
        MembershipState::Invite,
        reason,
    )
    .await?;
    Ok(invite_user::v3::Response::new())
}

async fn leave(
    s: Arc<Services>,
    req: Ruma<leave_room::v3::Request>,
) -> Result<leave_room::v3::Response> {
    let user = req.user_id();
    let room = s.rooms.room(&req.body.room_id)?;
    if s.rooms.membership(&room, user)?.is_none() {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    change_other(
        &s,
        &req.body.room_id,
        user,
        user,
        MembershipState::Leave,
        req.body.reason.as_deref(),
    )
    .await?;
    Ok(leave_room::v3::Response::new())
}

async fn forget(
    s: Arc<Services>,
    req: Ruma<forget_room::v3::Request>,
) -> Result<forget_room::v3::Response> {
    s.rooms.forget(&req.body.room_id, req.user_id()).await?;
    Ok(forget_room::v3::Response::new())
}

async fn kick(
    s: Arc<Services>,
    req: Ruma<kick_user::v3::Request>,
) -> Result<kick_user::v3::Response> {
    let b = &req.body;
    s.rooms.check_kick(&b.room_id, &b.user_id)?;
    change_other(
        &s,
        &b.room_id,
        req.user_id(),
        &b.user_id,
        MembershipState::Leave,
        b.reason.as_deref(),
    )
    .await?;
    Ok(kick_user::v3::Response::new())
}

async fn ban(s: Arc<Services>, req: Ruma<ban_user::v3::Request>) -> Result<ban_user::v3::Response> {
    let b = &req.body;
    change_other(
        &s,
        &b.room_id,
        req.user_id(),
        &b.user_id,
        MembershipState::Ban,
        b.reason.as_deref(),
    )
    .await?;
    Ok(ban_user::v3::Response::new())
}

async fn unban(
    s: Arc<Services>,
    req: Ruma<unban_user::v3::Request>,
) -> Result<unban_user::v3::Response> {
    let b = &req.body;
    s.rooms.check_unban(&b.room_id, &b.user_id)?;
    change_other(
        &s,
        &b.room_id,
        req.user_id(),
        &b.user_id,
        MembershipState::Leave,
        b.reason.as_deref(),
    )
    .await?;
    Ok(unban_user::v3::Response::new())
}
