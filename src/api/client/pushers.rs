//! Pushers and the notifications list.

use std::sync::Arc;

use ruma::{
    api::client::push::{
        PusherKind, get_notifications, get_pushers,
        set_pusher::{self, v3::PusherAction},
    },
    serde::Raw,
};

use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    events::ClientFormat,
    push::{LazyRuleset, NotificationsQuery},
    rooms::EventView,
    services::Services,
    sync::{format_token, parse_token},
};

/// Page size of `/notifications` when the client names none, and the most it may ask for.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

pub fn routes(r: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    let r = route(r, list);
    let r = route(r, set);
    route(r, notifications)
}

async fn list(
    s: Arc<Services>,
    req: Ruma<get_pushers::v3::Request>,
) -> Result<get_pushers::v3::Response> {
    Ok(get_pushers::v3::Response::new(
        s.push.pushers.list(req.user_id())?,
    ))
}

async fn set(
    s: Arc<Services>,
    req: Ruma<set_pusher::v3::Request>,
) -> Result<set_pusher::v3::Response> {
    match &req.body.action {
        PusherAction::Post(data) => {
            let pusher = &data.pusher;
            if pusher.ids.app_id.is_empty() || pusher.ids.app_id.len() > 64 {
                return Err(Error::invalid_param("app_id must be 1 to 64 characters"));
            }
            if pusher.ids.pushkey.is_empty() || pusher.ids.pushkey.len() > 512 {
                return Err(Error::invalid_param("pushkey must be 1 to 512 characters"));
            }
            match &pusher.kind {
                PusherKind::Http(http) => {
                    let url = http.url.as_str();
                    let parsed = reqwest::Url::parse(url).ok().filter(|u| {
                        matches!(u.scheme(), "http" | "https")
                            && u.host_str().is_some()
                            && u.path() == "/_matrix/push/v1/notify"
                    });
                    if url.len() > 2048 || parsed.is_none() {
                        return Err(Error::invalid_param(
                            "data.url must be an http(s) URL with the path /_matrix/push/v1/notify",
                        ));
                    }
                }
                PusherKind::Email(_) => {}
                _ => return Err(Error::invalid_param("Unknown pusher kind")),
            }
            s.push
                .pushers
                .set(req.user_id(), pusher, data.append, s.stream.head())
                .await?;
        }
        PusherAction::Delete(ids) => s.push.pushers.delete(req.user_id(), ids).await?,
        _ => return Err(Error::invalid_param("Unknown pusher action")),
    }
    Ok(set_pusher::v3::Response::new())
}

async fn notifications(
    s: Arc<Services>,
    req: Ruma<get_notifications::v3::Request>,
) -> Result<get_notifications::v3::Response> {
    let who = req.identity();
    let b = &req.body;
    let before = match &b.from {
        Some(token) => parse_token(token)?,
        None => s.stream.head() + 1,
    };
    let limit = b
        .limit
        .map_or(DEFAULT_LIMIT, |l| {
            usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT)
        })
        .clamp(1, MAX_LIMIT);
    let only_highlight = b.only.as_deref() == Some("highlight");
    let joined = s
        .rooms
        .joined_rooms(&who.user_id)?
        .iter()
        .map(|id| s.rooms.room(id))
        .collect::<Result<Vec<_>>>()?;
    let ruleset = LazyRuleset::new(&s.users, &who.user_id).get()?;
    let query = NotificationsQuery {
        user: &who.user_id,
        joined,
        before,
        limit,
        only_highlight,
    };
    let found = s
        .push
        .notifications(&s.rooms, &s.receipts, ruleset, query)?;
    let view = EventView::of(&who.user_id, &who.device_id, ClientFormat::Sync);
    let mut out = Vec::with_capacity(found.len());
    for n in &found {
        let event = s.rooms.event(n.pos)?;
        out.push(get_notifications::v3::Notification::new(
            n.actions.clone(),
            Raw::from_json(s.rooms.format_event(&event, view)?),
            n.read,
            n.room.room_id.clone(),
            event.pdu.origin_server_ts,
        ));
    }
    let mut response = get_notifications::v3::Response::new(out);
    if found.len() == limit {
        response.next_token = found.last().map(|n| format_token(n.pos));
    }
    Ok(response)
}
