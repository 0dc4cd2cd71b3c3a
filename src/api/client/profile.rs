//! Profiles: display name and avatar, propagated to the member events of joined rooms.

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedMxcUri, UserId,
    api::client::profile::{
        get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
    },
};

use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    rooms::MemberProfile,
    services::Services,
    users::UserRecord,
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, profile);
    let r = route(r, displayname);
    let r = route(r, set_displayname);
    let r = route(r, avatar_url);
    route(r, set_avatar)
}

fn record(s: &Services, user: &UserId) -> Result<UserRecord> {
    s.users
        .get(user)?
        .filter(|r| !r.deactivated)
        .ok_or_else(|| Error::not_found("Profile not found"))
}

/// A user's display name and avatar: from the store for a local user, from their server
/// (`GET /_matrix/federation/v1/query/profile`) for another's, when federating.
async fn profile_of(s: &Services, user: &UserId) -> Result<MemberProfile> {
    if user.server_name() == s.config.server_name {
        return Ok(member_profile(&record(s, user)?));
    }
    match &s.federation {
        Some(federation) => federation.profile(user).await,
        None => Err(Error::not_found("Profile not found")),
    }
}

fn mxc(url: Option<&str>) -> Option<OwnedMxcUri> {
    url.map(OwnedMxcUri::from)
}

async fn profile(
    s: Arc<Services>,
    req: Ruma<get_profile::v3::Request>,
) -> Result<get_profile::v3::Response> {
    let r = profile_of(&s, &req.body.user_id).await?;
    let mut response = get_profile::v3::Response::new();
    if let Some(name) = r.displayname {
        response.set("displayname".to_owned(), name.into());
    }
    if let Some(url) = r.avatar_url {
        response.set("avatar_url".to_owned(), url.into());
    }
    Ok(response)
}

async fn displayname(
    s: Arc<Services>,
    req: Ruma<get_display_name::v3::Request>,
) -> Result<get_display_name::v3::Response> {
    let r = profile_of(&s, &req.body.user_id).await?;
    Ok(get_display_name::v3::Response::new(r.displayname))
}

async fn avatar_url(
    s: Arc<Services>,
    req: Ruma<get_avatar_url::v3::Request>,
) -> Result<get_avatar_url::v3::Response> {
    let r = profile_of(&s, &req.body.user_id).await?;
    Ok(get_avatar_url::v3::Response::new(mxc(r
        .avatar_url
        .as_deref())))
}

async fn set_displayname(
    s: Arc<Services>,
    req: Ruma<set_display_name::v3::Request>,
) -> Result<set_display_name::v3::Response> {
    let user = own_profile(&req.body.user_id, req.user_id())?;
    let record = s
        .users
        .set_profile(&user, Some(req.body.displayname.clone()), None)
        .await?;
    s.rooms
        .propagate_profile(&user, &member_profile(&record))
        .await?;
    Ok(set_display_name::v3::Response::new())
}

async fn set_avatar(
    s: Arc<Services>,
    req: Ruma<set_avatar_url::v3::Request>,
) -> Result<set_avatar_url::v3::Response> {
    let user = own_profile(&req.body.user_id, req.user_id())?;
    let url = req
        .body
        .avatar_url
        .as_ref()
        .map(|u| u.to_string())
        .filter(|u| !u.is_empty());
    let record = s.users.set_profile(&user, None, Some(url)).await?;
    s.rooms
        .propagate_profile(&user, &member_profile(&record))
        .await?;
    Ok(set_avatar_url::v3::Response::new())
}

fn own_profile(target: &UserId, requester: &UserId) -> Result<ruma::OwnedUserId> {
    if target != requester {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    Ok(target.to_owned())
}

/// The profile as member events carry it.
pub fn member_profile(record: &UserRecord) -> MemberProfile {
    MemberProfile {
        displayname: record.displayname.clone(),
        avatar_url: record.avatar_url.clone(),
    }
}
