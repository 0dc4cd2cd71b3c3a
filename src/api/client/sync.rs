//! `/sync`, stored filters and account data.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::{
    RoomId, UserId,
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        filter::{create_filter, get_filter},
        sync::sync_events::v3,
    },
    serde::Raw,
};
use serde_json::value::RawValue as RawJsonValue;

use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    services::Services,
    sync::{SyncContext, SyncRequest, SyncService, SyncToken},
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, sync);
    let r = route(r, create);
    let r = route(r, get);
    let r = route(r, get_global);
    let r = route(r, set_global);
    let r = route(r, get_room);
    route(r, set_room)
}

async fn sync(s: Arc<Services>, req: Ruma<v3::Request>) -> Result<v3::Response> {
    let who = req.identity();
    let b = &req.body;
    let request = SyncRequest {
        since: b.since.as_deref().map(SyncToken::parse).transpose()?,
        full_state: b.full_state,
        timeout: b.timeout.unwrap_or(Duration::ZERO),
        filter: SyncService::resolve_filter(&s.users, who, b.filter.as_ref())?,
        use_state_after: b.use_state_after,
    };
    // Held while the sync runs: a user with a sync open is not timed out to offline.
    let _presence = s
        .presence
        .sync_started(&s.rooms, &who.user_id, &b.set_presence)?;
    s.sync
        .sync(SyncContext::new(s.sync_services(), who), request)
        .await
}

fn own(target: &UserId, requester: &UserId) -> Result<()> {
    if target != requester {
        return Err(Error::forbidden("You may only access your own data"));
    }
    Ok(())
}

async fn create(
    s: Arc<Services>,
    req: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response> {
    own(&req.body.user_id, req.user_id())?;
    let id = s
        .users
        .create_filter(req.user_id(), &req.body.filter)
        .await?;
    Ok(create_filter::v3::Response::new(id))
}

async fn get(
    s: Arc<Services>,
    req: Ruma<get_filter::v3::Request>,
) -> Result<get_filter::v3::Response> {
    own(&req.body.user_id, req.user_id())?;
    let filter = s
        .users
        .filter(req.user_id(), &req.body.filter_id)?
        .ok_or_else(|| Error::not_found("Filter not found"))?;
    Ok(get_filter::v3::Response::new(filter))
}

fn content_object(raw: &RawJsonValue) -> Result<()> {
    if raw.get().trim_start().starts_with('{') {
        Ok(())
    } else {
        Err(Error::bad_json("Account data must be a JSON object"))
    }
}

async fn get_global(
    s: Arc<Services>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    own(&req.body.user_id, req.user_id())?;
    let kind = req.body.event_type.to_string();
    let data = s
        .users
        .account_data(req.user_id(), None, &kind)?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(
        data,
    )))
}

async fn set_global(
    s: Arc<Services>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    own(&req.body.user_id, req.user_id())?;
    let kind = req.body.event_type.to_string();
    if kind == "m.push_rules" {
        // The spec's answer for account data the server controls.
        return Err(Error::matrix(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            "Cannot set m.push_rules through this API. Use /pushrules",
        ));
    }
    content_object(req.body.data.json())?;
    s.users
        .set_account_data(req.user_id(), None, &kind, req.body.data.json())
        .await?;
    Ok(set_global_account_data::v3::Response::new())
}

fn room_for_account_data(s: &Services, room_id: &RoomId) -> Result<()> {
    if !s.rooms.exists(room_id)? {
        return Err(Error::not_found("Unknown room"));
    }
    Ok(())
}

async fn get_room(
    s: Arc<Services>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    own(&req.body.user_id, req.user_id())?;
    room_for_account_data(&s, &req.body.room_id)?;
    let kind = req.body.event_type.to_string();
    let data = s
        .users
        .account_data(req.user_id(), Some(&req.body.room_id), &kind)?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(
        data,
    )))
}

async fn set_room(
    s: Arc<Services>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    own(&req.body.user_id, req.user_id())?;
    room_for_account_data(&s, &req.body.room_id)?;
    content_object(req.body.data.json())?;
    let kind = req.body.event_type.to_string();
    s.users
        .set_account_data(
            req.user_id(),
            Some(&req.body.room_id),
            &kind,
            req.body.data.json(),
        )
        .await?;
    Ok(set_room_account_data::v3::Response::new())
}
