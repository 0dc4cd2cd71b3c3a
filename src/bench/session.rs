//! Per-user C-S API calls and the slices of responses the scenarios read.

use super::client::{ApiError, Homeserver, REQUEST_TIMEOUT};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Which `/sync` to make.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncParams<'a> {
    pub since: Option<&'a str>,
    /// Long-poll timeout in ms (the `timeout` query parameter).
    pub timeout_ms: Option<u64>,
    /// Inline filter JSON (the `filter` query parameter).
    pub filter: Option<&'a str>,
}

/// The parts of a `/sync` response the scenarios look at.
#[derive(Debug, Default, Deserialize)]
pub struct SyncResponse {
    pub next_batch: String,
    #[serde(default)]
    pub rooms: SyncRooms,
}

#[derive(Debug, Default, Deserialize)]
pub struct SyncRooms {
    #[serde(default)]
    pub join: HashMap<String, JoinedRoom>,
}

#[derive(Debug, Default, Deserialize)]
pub struct JoinedRoom {
    #[serde(default)]
    pub timeline: Timeline,
}

#[derive(Debug, Default, Deserialize)]
pub struct Timeline {
    #[serde(default)]
    pub events: Vec<LiteEvent>,
    #[serde(default)]
    pub prev_batch: Option<String>,
}

/// An event reduced to what the bench needs.
#[derive(Debug, Default, Deserialize)]
pub struct LiteEvent {
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// A `/rooms/{roomId}/messages` page.
#[derive(Debug, Default, Deserialize)]
pub struct MessagesPage {
    #[serde(default)]
    pub chunk: Vec<LiteEvent>,
    #[serde(default)]
    pub end: Option<String>,
}

/// Room visibility preset for `/createRoom`.
#[derive(Debug, Clone, Copy)]
pub enum Preset {
    /// Invite-only; used for rooms nobody else needs to join.
    Private,
    /// `join_rule: public`, so other bench users can `/join` without an invite.
    Public,
}

/// A logged-in user. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Session {
    hs: Homeserver,
    pub user_id: String,
    token: Arc<str>,
}

impl Session {
    pub(super) fn new(hs: Homeserver, user_id: String, access_token: &str) -> Session {
        Session {
            hs,
            user_id,
            token: access_token.into(),
        }
    }

    /// Another identity on the same homeserver and connection pool, e.g. an appservice's user
    /// acting with the `as_token`.
    pub fn same_server(&self, user_id: &str, access_token: &str) -> Session {
        Session::new(self.hs.clone(), user_id.to_owned(), access_token)
    }

    /// `/_matrix/client/v1/<segments...>`, for [`Session::post_json`].
    pub fn url_v1(&self, segments: &[&str]) -> Url {
        self.hs.url_v1(segments)
    }

    /// The access token, for scenarios that send non-JSON bodies (media).
    pub fn access_token(&self) -> &str {
        &self.token
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(T, usize), ApiError> {
        self.hs
            .call(method, url, Some(&self.token), body, timeout)
            .await
    }

    /// `POST /createRoom`, returning the room id.
    pub async fn create_room(
        &self,
        preset: Preset,
        name: Option<&str>,
    ) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Created {
            room_id: String,
        }
        let mut body = json!({
            "preset": match preset {
                Preset::Private => "private_chat",
                Preset::Public => "public_chat",
            },
        });
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        let url = self.hs.url(&["createRoom"]);
        let (c, _): (Created, _) = self
            .call(Method::POST, url, Some(&body), REQUEST_TIMEOUT)
            .await?;
        Ok(c.room_id)
    }

    /// `POST /rooms/{roomId}/invite`.
    pub async fn invite(&self, room_id: &str, user_id: &str) -> Result<(), ApiError> {
        let url = self.hs.url(&["rooms", room_id, "invite"]);
        let body = json!({ "user_id": user_id });
        let _: (IgnoredAny, _) = self
            .call(Method::POST, url, Some(&body), REQUEST_TIMEOUT)
            .await?;
        Ok(())
    }

    /// `POST /join/{roomIdOrAlias}` with an empty body.
    pub async fn join(&self, room_id_or_alias: &str) -> Result<(), ApiError> {
        let url = self.hs.url(&["join", room_id_or_alias]);
        let _: (IgnoredAny, _) = self
            .call(Method::POST, url, Some(&json!({})), REQUEST_TIMEOUT)
            .await?;
        Ok(())
    }

    /// `PUT /rooms/{roomId}/send/m.room.message/{txnId}` with an `m.text`
    /// body, returning the event id.
    pub async fn send_text(
        &self,
        room_id: &str,
        txn_id: &str,
        text: &str,
    ) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Sent {
            event_id: String,
        }
        let url = self
            .hs
            .url(&["rooms", room_id, "send", "m.room.message", txn_id]);
        let body = json!({ "msgtype": "m.text", "body": text });
        let (s, _): (Sent, _) = self
            .call(Method::PUT, url, Some(&body), REQUEST_TIMEOUT)
            .await?;
        Ok(s.event_id)
    }

    /// `PUT /rooms/{roomId}/send/{type}/{txnId}` with any content, returning the event id.
    pub async fn send_event(
        &self,
        room_id: &str,
        kind: &str,
        txn_id: &str,
        content: &Value,
    ) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Sent {
            event_id: String,
        }
        let url = self.hs.url(&["rooms", room_id, "send", kind, txn_id]);
        let (s, _): (Sent, _) = self
            .call(Method::PUT, url, Some(content), REQUEST_TIMEOUT)
            .await?;
        Ok(s.event_id)
    }

    /// `GET /_matrix/client/{v1|v3}/<segments>?<query>`, parsed as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        v1: bool,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let mut url = if v1 {
            self.hs.url_v1(segments)
        } else {
            self.hs.url(segments)
        };
        url.query_pairs_mut().extend_pairs(query);
        let (parsed, _) = self.call(Method::GET, url, None, REQUEST_TIMEOUT).await?;
        Ok(parsed)
    }

    /// `POST` of a JSON body to a C-S URL, returning the JSON answer.
    pub async fn post_json(
        &self,
        url: Url,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let (v, _) = self.call(Method::POST, url, Some(body), timeout).await?;
        Ok(v)
    }

    /// `GET /sync`, returning the parsed response and its body size in bytes.
    pub async fn sync(&self, p: SyncParams<'_>) -> Result<(SyncResponse, usize), ApiError> {
        let mut url = self.hs.url(&["sync"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = p.since {
                q.append_pair("since", s);
            }
            if let Some(t) = p.timeout_ms {
                q.append_pair("timeout", &t.to_string());
            }
            if let Some(f) = p.filter {
                q.append_pair("filter", f);
            }
        }
        // Leave room for the server's own long-poll timeout plus slow replies.
        let timeout = REQUEST_TIMEOUT + Duration::from_millis(p.timeout_ms.unwrap_or(0));
        self.call(Method::GET, url, None, timeout).await
    }

    /// `GET /rooms/{roomId}/messages?dir=b&limit=L[&from=T]`. Omitting `from`
    /// starts at the end of the timeline (allowed since spec v1.3).
    pub async fn messages_backwards(
        &self,
        room_id: &str,
        from: Option<&str>,
        limit: u32,
    ) -> Result<MessagesPage, ApiError> {
        let mut url = self.hs.url(&["rooms", room_id, "messages"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("dir", "b");
            q.append_pair("limit", &limit.to_string());
            if let Some(f) = from {
                q.append_pair("from", f);
            }
        }
        let (page, _) = self.call(Method::GET, url, None, REQUEST_TIMEOUT).await?;
        Ok(page)
    }
}
