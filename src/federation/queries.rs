//! What this server's clients ask other servers about their users and aliases
//! (`GET /_matrix/federation/v1/query/profile` and `…/query/directory`), as Client-Server
//! answers: the server's `404` is the client's `404 M_NOT_FOUND`, any other failure a
//! `502 M_UNKNOWN` naming it.

use axum::http::StatusCode;
use ruma::{OwnedRoomId, OwnedServerName, RoomAliasId, RoomId, ServerName, UserId};
use serde_json::Value;

use super::{Federation, client::PeerError};
use crate::{error::Error, rooms::MemberProfile};

/// Most servers kept from another server's answer about an alias.
const MAX_ALIAS_SERVERS: usize = 50;

impl Federation {
    /// A user of another server: their display name and avatar, as their server answers.
    pub(crate) async fn profile(&self, user: &UserId) -> Result<MemberProfile, Error> {
        let user_id: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
        let path = format!("/_matrix/federation/v1/query/profile?user_id={user_id}");
        let answer = self
            .query(
                user.server_name(),
                &path,
                "Profile not found",
                "get the profile",
            )
            .await?;
        let text = |k: &str| answer.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(MemberProfile {
            displayname: text("displayname"),
            avatar_url: text("avatar_url"),
        })
    }

    /// An alias of another server: its room, and servers to join it through.
    pub(crate) async fn alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>), Error> {
        let encoded: String = form_urlencoded::byte_serialize(alias.as_bytes()).collect();
        let path = format!("/_matrix/federation/v1/query/directory?room_alias={encoded}");
        let answer = self
            .query(
                alias.server_name(),
                &path,
                "Room alias not found",
                "resolve the alias",
            )
            .await?;
        let room_id = answer
            .get("room_id")
            .and_then(Value::as_str)
            .and_then(|r| RoomId::parse(r).ok())
            .ok_or_else(|| bad_gateway("The alias's server answered without a valid room id"))?;
        let servers = answer
            .get("servers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| ServerName::parse(s.as_str()?).ok())
            .take(MAX_ALIAS_SERVERS)
            .collect();
        Ok((room_id, servers))
    }

    /// A page of another server's public room directory (`POST publicRooms`, which takes a
    /// search term; Synapse answers it as the spec says).
    pub(crate) async fn public_rooms(
        &self,
        server: &ServerName,
        limit: Option<ruma::UInt>,
        since: Option<&str>,
        search: Option<&str>,
    ) -> Result<Value, Error> {
        let mut body = serde_json::json!({});
        if let Some(limit) = limit {
            body["limit"] = u64::from(limit).min(100).into();
        } else {
            body["limit"] = 100.into();
        }
        if let Some(since) = since {
            body["since"] = since.into();
        }
        if let Some(term) = search {
            body["filter"] = serde_json::json!({ "generic_search_term": term });
        }
        self.client
            .send_signed(
                server,
                reqwest::Method::POST,
                "/_matrix/federation/v1/publicRooms",
                Some(&body),
            )
            .await
            .map_err(|e| bad_gateway(format!("Cannot read the server's directory: {e}")))
    }

    /// `GET path` on `server`, signed.
    async fn query(
        &self,
        server: &ServerName,
        path: &str,
        not_found: &'static str,
        doing: &str,
    ) -> Result<Value, Error> {
        self.client
            .send_signed(server, reqwest::Method::GET, path, None)
            .await
            .map_err(|e| match e {
                PeerError::Status(_, 404, _) => Error::not_found(not_found),
                e => bad_gateway(format!("Cannot {doing}: {e}")),
            })
    }
}

fn bad_gateway(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::matrix(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
}
