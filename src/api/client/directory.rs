//! Room aliases and the public room directory.

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedMxcUri, OwnedRoomAliasId, UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::Visibility,
    },
    directory::{PublicRoomsChunk, PublicRoomsChunkInit},
    room::JoinRuleKind,
};

use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    rooms::DirectoryEntry,
    services::Services,
};

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, create);
    let r = route(r, get);
    let r = route(r, delete);
    let r = route(r, public_rooms);
    let r = route(r, public_rooms_filtered);
    let r = route(r, visibility);
    route(r, set_visibility)
}

async fn create(
    s: Arc<Services>,
    req: Ruma<create_alias::v3::Request>,
) -> Result<create_alias::v3::Response> {
    s.rooms.require_joined(&req.body.room_id, req.user_id())?;
    s.check_alias_namespace(&req.body.room_alias, req.identity())?;
    s.rooms
        .set_alias(&req.body.room_alias, &req.body.room_id, req.user_id())
        .await?;
    Ok(create_alias::v3::Response::new())
}

async fn get(
    s: Arc<Services>,
    req: Ruma<get_alias::v3::Request>,
) -> Result<get_alias::v3::Response> {
    let alias = &req.body.room_alias;
    if alias.server_name() != s.config.server_name
        && let Some(federation) = &s.federation
    {
        let (room_id, servers) = federation.alias(alias).await?;
        return Ok(get_alias::v3::Response::new(room_id, servers));
    }
    let room_id = s
        .resolve_alias(alias)
        .await?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    Ok(get_alias::v3::Response::new(
        room_id,
        vec![s.config.server_name.clone()],
    ))
}

async fn delete(
    s: Arc<Services>,
    req: Ruma<delete_alias::v3::Request>,
) -> Result<delete_alias::v3::Response> {
    s.rooms
        .delete_alias(&req.body.room_alias, req.user_id())
        .await?;
    Ok(delete_alias::v3::Response::new())
}

fn chunk(e: DirectoryEntry) -> PublicRoomsChunk {
    let mut c: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::try_from(e.num_joined_members).unwrap_or_default(),
        room_id: e.room_id,
        world_readable: e.world_readable,
        guest_can_join: e.guest_can_join,
    }
    .into();
    c.name = e.name;
    c.topic = e.topic;
    c.canonical_alias = e
        .canonical_alias
        .and_then(|a| OwnedRoomAliasId::try_from(a).ok());
    c.avatar_url = e.avatar_url.map(OwnedMxcUri::from);
    c.join_rule = JoinRuleKind::from(e.join_rule.as_str());
    c
}

/// One page of the public directory.
pub(crate) struct Page {
    pub(crate) chunk: Vec<PublicRoomsChunk>,
    pub(crate) next: Option<String>,
    pub(crate) prev: Option<String>,
    pub(crate) total: UInt,
}

/// One page of the directory; `since` is the offset of the page.
pub(crate) fn page(
    s: &Services,
    search: Option<&str>,
    limit: Option<UInt>,
    since: Option<&str>,
) -> Result<Page> {
    let all = s.rooms.public_rooms(search)?;
    let total = UInt::try_from(all.len()).unwrap_or_default();
    let offset: usize = match since {
        Some(t) => t
            .parse()
            .map_err(|_| Error::invalid_param("Invalid since token"))?,
        None => 0,
    };
    let limit = limit
        .map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
        .unwrap_or(usize::MAX)
        .max(1);
    let end = offset.saturating_add(limit).min(all.len());
    let next = (end < all.len()).then(|| end.to_string());
    let prev = (offset > 0).then(|| offset.saturating_sub(limit).to_string());
    let chunk = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(chunk)
        .collect();
    Ok(Page {
        chunk,
        next,
        prev,
        total,
    })
}

async fn public_rooms(
    s: Arc<Services>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    if let Some(server) = remote_server(&s, req.body.server.as_deref()) {
        let answer =
            remote_page(&s, &server, req.body.limit, req.body.since.as_deref(), None).await?;
        let mut response = get_public_rooms::v3::Response::new(answer.chunk);
        response.next_batch = answer.next_batch;
        response.prev_batch = answer.prev_batch;
        response.total_room_count_estimate = answer.total_room_count_estimate;
        return Ok(response);
    }
    let Page {
        chunk,
        next,
        prev,
        total,
    } = page(&s, None, req.body.limit, req.body.since.as_deref())?;
    let mut response = get_public_rooms::v3::Response::new(chunk);
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = Some(total);
    Ok(response)
}

async fn public_rooms_filtered(
    s: Arc<Services>,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    let search = req.body.filter.generic_search_term.as_deref();
    if let Some(server) = remote_server(&s, req.body.server.as_deref()) {
        let answer = remote_page(
            &s,
            &server,
            req.body.limit,
            req.body.since.as_deref(),
            search,
        )
        .await?;
        let mut response = get_public_rooms_filtered::v3::Response::new();
        response.chunk = answer.chunk;
        response.next_batch = answer.next_batch;
        response.prev_batch = answer.prev_batch;
        response.total_room_count_estimate = answer.total_room_count_estimate;
        return Ok(response);
    }
    let Page {
        chunk,
        next,
        prev,
        total,
    } = page(&s, search, req.body.limit, req.body.since.as_deref())?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = Some(total);
    Ok(response)
}

/// The `server` a directory request names, when it is another one and federation is on.
fn remote_server(s: &Services, server: Option<&ruma::ServerName>) -> Option<ruma::OwnedServerName> {
    let server = server?;
    (server != s.config.server_name && s.federation.is_some()).then(|| server.to_owned())
}

/// A page of another server's directory, as it answers.
#[derive(serde::Deserialize)]
struct RemotePage {
    #[serde(default)]
    chunk: Vec<PublicRoomsChunk>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    total_room_count_estimate: Option<UInt>,
}

async fn remote_page(
    s: &Services,
    server: &ruma::ServerName,
    limit: Option<UInt>,
    since: Option<&str>,
    search: Option<&str>,
) -> Result<RemotePage> {
    let federation = s
        .federation
        .as_ref()
        .ok_or_else(|| Error::not_found("Unknown server"))?;
    let answer = federation
        .public_rooms(server, limit, since, search)
        .await?;
    serde_json::from_value(answer).map_err(|_| {
        Error::matrix(
            http::StatusCode::BAD_GATEWAY,
            "M_UNKNOWN",
            "The server's directory is not readable",
        )
    })
}

async fn visibility(
    s: Arc<Services>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    s.rooms.room(&req.body.room_id)?;
    let v = if s.rooms.is_public(&req.body.room_id)? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(get_room_visibility::v3::Response::new(v))
}

async fn set_visibility(
    s: Arc<Services>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let room = s.rooms.require_joined(&req.body.room_id, req.user_id())?;
    let levels = s.rooms.power_levels(&room)?;
    if levels.user_level(req.user_id()) < levels.state_level("m.room.canonical_alias") {
        return Err(Error::forbidden(
            "You may not change this room's directory visibility",
        ));
    }
    s.rooms
        .set_public(&req.body.room_id, req.body.visibility == Visibility::Public)
        .await?;
    Ok(set_room_visibility::v3::Response::new())
}
