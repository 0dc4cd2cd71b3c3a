//! An intent: the appservice acting as one user of its namespace, through the spec's identity
//! assertion (`Authorization: Bearer <as_token>` plus `?user_id=<mxid>` on every request).

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, MxcUri, OwnedEventId, OwnedMxcUri, OwnedRoomId,
    OwnedServerName, OwnedUserId, RoomAliasId, RoomId, RoomOrAliasId, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use crate::client::{Client, Request};
use crate::error::Error;

/// Options of a send: an explicit txnId (to make a send idempotent across restarts, e.g. the
/// remote network's message id) and a `ts` for timestamp massaging.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    pub txn_id: Option<String>,
    pub ts: Option<MilliSecondsSinceUnixEpoch>,
}

/// `preset` of `/createRoom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomPreset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// `visibility` of `/createRoom` (room directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomVisibility {
    Public,
    Private,
}

/// One `initial_state` event of `/createRoom`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InitialState {
    #[serde(rename = "type")]
    pub event_type: String,
    pub state_key: String,
    pub content: JsonValue,
}

impl InitialState {
    pub fn new(
        event_type: impl Into<String>,
        state_key: impl Into<String>,
        content: &impl Serialize,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            state_key: state_key.into(),
            content: serde_json::to_value(content).unwrap_or(JsonValue::Null),
        }
    }
}

/// The body of `POST /createRoom`; unset fields are left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateRoom {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Localpart of an alias to create (`#<this>:server`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_alias_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invite: Vec<OwnedUserId>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_direct: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<RoomPreset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<RoomVisibility>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub initial_state: Vec<InitialState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_level_content_override: Option<JsonValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_content: Option<JsonValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_version: Option<String>,
}

#[derive(Deserialize)]
struct EventIdAnswer {
    event_id: OwnedEventId,
}

#[derive(Deserialize)]
struct RoomIdAnswer {
    room_id: OwnedRoomId,
}

/// The appservice acting as one user. Cheap to clone.
#[derive(Clone)]
pub struct Intent {
    client: Client,
    user_id: OwnedUserId,
}

impl Client {
    /// An intent acting as `user_id` (which must be in the appservice's namespace, or its
    /// sender). Defined here rather than in `client.rs`, so that the client, the HTTP core,
    /// knows nothing of intents.
    pub fn intent(&self, user_id: OwnedUserId) -> Intent {
        Intent {
            client: self.clone(),
            user_id,
        }
    }
}

impl Intent {
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A request on behalf of this user: the identity assertion goes into the query.
    fn request(&self, method: Method, path: &[&str]) -> Request {
        Request::new(method, path).query("user_id", self.user_id.as_str())
    }

    fn client_v3(&self, method: Method, rest: &[&str]) -> Request {
        let mut path = vec!["_matrix", "client", "v3"];
        path.extend_from_slice(rest);
        self.request(method, &path)
    }

    /// Creates the user if it does not exist yet (`m.login.application_service`, no device, no
    /// token). `M_USER_IN_USE` means it exists: success. Asks once per user per process.
    pub async fn ensure_registered(&self) -> Result<(), Error> {
        if self.client.is_known_registered(&self.user_id) {
            return Ok(());
        }
        if self.user_id.server_name() != self.client.server_name() {
            return Err(Error::InvalidRequest(format!(
                "{} is not a user of {}",
                self.user_id,
                self.client.server_name()
            )));
        }
        let body = json!({
            "type": "m.login.application_service",
            "username": self.user_id.localpart(),
            "inhibit_login": true,
        });
        let request = Request::new(Method::POST, &["_matrix", "client", "v3", "register"])
            .json(&body)?
            .idempotent(true);
        match self.client.send::<JsonValue>(request).await {
            Ok(_) => {}
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => {}
            Err(e) => return Err(e),
        }
        self.client.remember_registered(self.user_id.clone());
        Ok(())
    }

    /// `GET /account/whoami`: who the homeserver thinks this intent is.
    pub async fn whoami(&self) -> Result<OwnedUserId, Error> {
        #[derive(Deserialize)]
        struct WhoAmI {
            user_id: OwnedUserId,
        }
        let answer: WhoAmI = self
            .client
            .send(self.client_v3(Method::GET, &["account", "whoami"]))
            .await?;
        Ok(answer.user_id)
    }

    /// Sets the display name.
    pub async fn set_displayname(&self, displayname: &str) -> Result<(), Error> {
        let request = self
            .client_v3(
                Method::PUT,
                &["profile", self.user_id.as_str(), "displayname"],
            )
            .json(&json!({ "displayname": displayname }))?;
        self.client.send::<JsonValue>(request).await.map(drop)
    }

    /// Another user's display name (`GET /profile/{userId}/displayname`): `None` when they
    /// have none, or no profile this user may see.
    pub async fn displayname_of(&self, user_id: &UserId) -> Result<Option<String>, Error> {
        #[derive(Deserialize)]
        struct Displayname {
            displayname: Option<String>,
        }
        let request = self.client_v3(Method::GET, &["profile", user_id.as_str(), "displayname"]);
        match self.client.send::<Displayname>(request).await {
            Ok(answer) => Ok(answer.displayname.filter(|name| !name.is_empty())),
            Err(error) if matches!(error.status(), Some(403 | 404)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The content of one state event (`GET /rooms/{roomId}/state/{eventType}/{stateKey}`),
    /// `None` when the room has none.
    pub async fn state_content(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<JsonValue>, Error> {
        let request = self.client_v3(
            Method::GET,
            &["rooms", room_id.as_str(), "state", event_type, state_key],
        );
        match self.client.send::<JsonValue>(request).await {
            Ok(content) => Ok(Some(content)),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The room an alias names (`GET /directory/room/{roomAlias}`), `None` when it names none.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>, Error> {
        let request = self.client_v3(Method::GET, &["directory", "room", alias.as_str()]);
        match self.client.send::<RoomIdAnswer>(request).await {
            Ok(answer) => Ok(Some(answer.room_id)),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sets the avatar, or with `None` removes it (sent as `""`, the form Synapse and ruma's
    /// `compat-unset-avatar` understand; Synapse refuses `null`).
    pub async fn set_avatar_url(&self, avatar_url: Option<&MxcUri>) -> Result<(), Error> {
        let avatar_url = avatar_url.map(MxcUri::as_str).unwrap_or("");
        let request = self
            .client_v3(
                Method::PUT,
                &["profile", self.user_id.as_str(), "avatar_url"],
            )
            .json(&json!({ "avatar_url": avatar_url }))?;
        self.client.send::<JsonValue>(request).await.map(drop)
    }

    /// `POST /createRoom`. Not retried on 5xx: the room may exist already.
    pub async fn create_room(&self, options: &CreateRoom) -> Result<OwnedRoomId, Error> {
        let request = self
            .client_v3(Method::POST, &["createRoom"])
            .json(options)?;
        Ok(self.client.send::<RoomIdAnswer>(request).await?.room_id)
    }

    pub async fn invite(&self, room_id: &RoomId, user_id: &UserId) -> Result<(), Error> {
        let request = self
            .client_v3(Method::POST, &["rooms", room_id.as_str(), "invite"])
            .json(&json!({ "user_id": user_id }))?;
        self.client.send::<JsonValue>(request).await.map(drop)
    }

    /// Joins by room id or alias; `via` names servers to join through (sent both as the
    /// current `via` and the older `server_name` parameter).
    pub async fn join(
        &self,
        room: &RoomOrAliasId,
        via: &[OwnedServerName],
    ) -> Result<OwnedRoomId, Error> {
        let mut request = self
            .client_v3(Method::POST, &["join", room.as_str()])
            .json(&json!({}))?;
        for server in via {
            request = request
                .query("via", server.as_str())
                .query("server_name", server.as_str());
        }
        Ok(self
            .client
            .send::<RoomIdAnswer>(request.idempotent(true))
            .await?
            .room_id)
    }

    pub async fn leave(&self, room_id: &RoomId) -> Result<(), Error> {
        let request = self
            .client_v3(Method::POST, &["rooms", room_id.as_str(), "leave"])
            .json(&json!({}))?
            .idempotent(true);
        self.client.send::<JsonValue>(request).await.map(drop)
    }

    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}` with any content.
    pub async fn send_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: &impl Serialize,
        options: SendOptions,
    ) -> Result<OwnedEventId, Error> {
        let txn_id = options.txn_id.unwrap_or_else(|| self.client.new_txn_id());
        let mut request = self
            .client_v3(
                Method::PUT,
                &["rooms", room_id.as_str(), "send", event_type, &txn_id],
            )
            .json(content)?;
        if let Some(ts) = options.ts {
            request = request.query("ts", ts.get().to_string());
        }
        Ok(self.client.send::<EventIdAnswer>(request).await?.event_id)
    }

    /// Sends an `m.room.message`.
    pub async fn send_message(
        &self,
        room_id: &RoomId,
        content: &RoomMessageEventContent,
        options: SendOptions,
    ) -> Result<OwnedEventId, Error> {
        self.send_event(room_id, "m.room.message", content, options)
            .await
    }

    /// Sends a plain-text `m.text` message.
    pub async fn send_text(&self, room_id: &RoomId, body: &str) -> Result<OwnedEventId, Error> {
        let content = RoomMessageEventContent::text_plain(body);
        self.send_message(room_id, &content, SendOptions::default())
            .await
    }

    /// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`, with optional `ts`.
    pub async fn send_state(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
        content: &impl Serialize,
        ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<OwnedEventId, Error> {
        let mut request = self
            .client_v3(
                Method::PUT,
                &["rooms", room_id.as_str(), "state", event_type, state_key],
            )
            .json(content)?;
        if let Some(ts) = ts {
            request = request.query("ts", ts.get().to_string());
        }
        Ok(self.client.send::<EventIdAnswer>(request).await?.event_id)
    }

    /// `GET /joined_rooms`: the rooms this user is joined to.
    pub async fn joined_rooms(&self) -> Result<Vec<OwnedRoomId>, Error> {
        #[derive(Deserialize)]
        struct Joined {
            joined_rooms: Vec<OwnedRoomId>,
        }
        let request = self.client_v3(Method::GET, &["joined_rooms"]);
        Ok(self.client.send::<Joined>(request).await?.joined_rooms)
    }

    /// `GET /rooms/{roomId}/state`: the room's current state events.
    pub async fn room_state(&self, room_id: &RoomId) -> Result<Vec<JsonValue>, Error> {
        let request = self.client_v3(Method::GET, &["rooms", room_id.as_str(), "state"]);
        self.client.send(request).await
    }

    /// Reacts to `event_id` with `key` (an `m.reaction` with an `m.annotation` relation).
    pub async fn react(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        key: &str,
        options: SendOptions,
    ) -> Result<OwnedEventId, Error> {
        let content = json!({
            "m.relates_to": { "rel_type": "m.annotation", "event_id": event_id, "key": key }
        });
        self.send_event(room_id, "m.reaction", &content, options)
            .await
    }

    /// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
    pub async fn redact(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<&str>,
        txn_id: Option<String>,
    ) -> Result<OwnedEventId, Error> {
        let txn_id = txn_id.unwrap_or_else(|| self.client.new_txn_id());
        let body = match reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        };
        let request = self
            .client_v3(
                Method::PUT,
                &[
                    "rooms",
                    room_id.as_str(),
                    "redact",
                    event_id.as_str(),
                    &txn_id,
                ],
            )
            .json(&body)?;
        Ok(self.client.send::<EventIdAnswer>(request).await?.event_id)
    }

    /// `POST /_matrix/media/v3/upload`; returns the `mxc://` URI.
    pub async fn upload(
        &self,
        data: impl Into<Bytes>,
        content_type: &str,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri, Error> {
        #[derive(Deserialize)]
        struct Uploaded {
            content_uri: OwnedMxcUri,
        }
        let mut request = self
            .request(Method::POST, &["_matrix", "media", "v3", "upload"])
            .bytes(data.into(), content_type);
        if let Some(filename) = filename {
            request = request.query("filename", filename);
        }
        Ok(self.client.send::<Uploaded>(request).await?.content_uri)
    }

    /// Downloads an `mxc://` URI through the authenticated media API
    /// (`GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`); returns the bytes and
    /// their `Content-Type`.
    pub async fn download(&self, uri: &MxcUri) -> Result<(Bytes, Option<String>), Error> {
        let (server, media_id) = uri
            .parts()
            .map_err(|e| Error::InvalidRequest(format!("{uri}: {e}")))?;
        let request = self.request(
            Method::GET,
            &[
                "_matrix",
                "client",
                "v1",
                "media",
                "download",
                server.as_str(),
                media_id,
            ],
        );
        self.client.send_bytes(request).await
    }

    /// `POST /rooms/{roomId}/receipt/m.read/{eventId}` (a public read receipt).
    pub async fn send_read_receipt(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(), Error> {
        self.send_receipt(room_id, "m.read", event_id, None).await
    }

    /// Any receipt type (`m.read`, `m.read.private`), optionally for a thread.
    pub async fn send_receipt(
        &self,
        room_id: &RoomId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) -> Result<(), Error> {
        let body = match thread_id {
            Some(thread) => json!({ "thread_id": thread }),
            None => json!({}),
        };
        let request = self
            .client_v3(
                Method::POST,
                &[
                    "rooms",
                    room_id.as_str(),
                    "receipt",
                    receipt_type,
                    event_id.as_str(),
                ],
            )
            .json(&body)?
            .idempotent(true);
        self.client.send::<JsonValue>(request).await.map(drop)
    }

    /// Starts (for `timeout`) or stops typing.
    pub async fn set_typing(
        &self,
        room_id: &RoomId,
        typing: Option<Duration>,
    ) -> Result<(), Error> {
        let body = match typing {
            Some(timeout) => json!({ "typing": true, "timeout": timeout.as_millis() as u64 }),
            None => json!({ "typing": false }),
        };
        let request = self
            .client_v3(
                Method::PUT,
                &["rooms", room_id.as_str(), "typing", self.user_id.as_str()],
            )
            .json(&body)?;
        self.client.send::<JsonValue>(request).await.map(drop)
    }
}
