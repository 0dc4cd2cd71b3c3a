//! The web chat channel end to end: the seed's `/api/chat` contract with exact bodies, its
//! WebSocket, and the agents' side through the Matrix API.

mod browser;
mod rest;
mod socket;
mod tokens;

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::{Client, TestServer, V3, enc};

pub(crate) const SECRET: &str = "webchat-test-secret-of-at-least-32-bytes";
pub(crate) const SHOP: &str = "https://shop.example.com";
pub(crate) const GREETING: &str = "Hola, ¿en qué podemos ayudarte?";
pub(crate) const FAQ_ANSWER: &str = "Atendemos de lunes a viernes de 9 a 18 h.";

pub(crate) fn config(extra: &str) -> String {
    format!(
        r#"
[webchat]
enabled = true
jwt_secret = "{SECRET}"
allowed_origins = ["{SHOP}"]
{extra}
[support]
admins = ["@boss:localhost"]
greeting = "{GREETING}"
[[support.agents]]
user = "@ana:localhost"
capacity = 5
[[support.faq]]
questions = ["¿Cuál es el horario?"]
answer = "{FAQ_ANSWER}"
"#
    )
}

/// A server with the web chat on and a desk: ana is an agent, boss a support admin.
pub(crate) struct Site {
    pub(crate) s: TestServer,
    pub(crate) ana: Client,
    pub(crate) boss: Client,
}

pub(crate) async fn site() -> Site {
    site_with("").await
}

pub(crate) async fn site_with(extra: &str) -> Site {
    let s = TestServer::start_with(&config(extra)).await;
    let ana = s.user("ana").await;
    let boss = s.user("boss").await;
    // Ana is online: new conversations are assigned to her, and she is invited.
    crate::support::set_presence(&ana, "ana", "online").await;
    Site { s, ana, boss }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An HS256 token of the test secret with these claims.
pub(crate) fn token_with(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A valid token for customer `sub` named `name`, for an hour.
pub(crate) fn token(sub: &str, name: &str) -> String {
    token_with(json!({ "sub": sub, "name": name, "exp": now() + 3600 }))
}

/// A customer of the website, calling `/api/chat` with their token.
pub(crate) struct Customer {
    http: reqwest::Client,
    base: String,
    pub(crate) token: String,
    pub(crate) origin: Option<&'static str>,
}

/// What an `/api/chat` call answered.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Customer {
    pub(crate) fn new(s: &TestServer, token: String) -> Customer {
        Customer {
            http: reqwest::Client::new(),
            base: s.server.base_url(),
            token,
            origin: None,
        }
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(origin) = self.origin {
            request = request.header("Origin", origin);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(
            reqwest::Method::POST,
            path,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub(crate) async fn patch(&self, path: &str) -> Answer {
        self.call(reqwest::Method::PATCH, path, None).await
    }

    /// `POST /api/chat/session`: the new session (asserted created).
    pub(crate) async fn open(&self) -> Value {
        let a = self.post("/api/chat/session", json!({})).await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["data"].clone()
    }

    /// `POST /api/chat/message`: the message (asserted sent).
    pub(crate) async fn say(&self, text: &str) -> Value {
        let a = self
            .post("/api/chat/message", json!({ "message": text }))
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["data"].clone()
    }

    pub(crate) async fn messages(&self, session: &str) -> Vec<Value> {
        let a = self
            .get(&format!("/api/chat/session/{session}/messages"))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["data"].as_array().unwrap().clone()
    }

    /// `(sender, message)` of each message of the session.
    pub(crate) async fn transcript(&self, session: &str) -> Vec<(String, String)> {
        self.messages(session)
            .await
            .iter()
            .map(|m| {
                (
                    m["sender"].as_str().unwrap().to_owned(),
                    m["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// The conversation room of the customer `sub`, as the support API lists it to an agent.
pub(crate) async fn room_of(site: &Site, sub: &str) -> String {
    eventually(|| async {
        let (st, body) = site
            .boss
            .get("/api/support/v1/conversations?channel=web")
            .await;
        assert_eq!(st, 200, "{body}");
        body["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["contact"]["id"] == sub)
            .map(|c| c["room_id"].as_str().unwrap().to_owned())
    })
    .await
}

/// Ana joins the conversation (she is invited when it is assigned to her).
pub(crate) async fn ana_joins(site: &Site, room: &str) {
    eventually(|| async {
        let (st, _) = site.ana.join(room).await;
        (st == 200).then_some(())
    })
    .await;
}

/// Sets ana's read receipt on `event_id`.
pub(crate) async fn ana_reads(site: &Site, room: &str, event_id: &str) {
    let (st, body) = site
        .ana
        .post(
            &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(room), enc(event_id)),
            json!({}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
}

/// The room's `m.room.message` events, oldest first, as ana reads them.
pub(crate) async fn room_messages(site: &Site, room: &str) -> Vec<Value> {
    crate::support::messages(&site.ana, room).await
}

/// Polls `check` until it returns `Some`, for at most 15 s.
pub(crate) async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a string is an ISO 8601 UTC time with milliseconds.
pub(crate) fn is_iso(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

/// Whether a string is a UUID.
pub(crate) fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok())
}
