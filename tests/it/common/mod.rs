//! Test harness: a real Charla on an ephemeral loopback port with a temporary data folder, and
//! a small raw-HTTP client for assertions on exact status codes and bodies.

#![allow(dead_code)]

pub mod metrics;
pub mod process;

use std::path::{Path, PathBuf};

use charla::{config::Config, server::RunningServer};
use serde_json::{Value, json};

/// The Client-Server API prefix the tests use.
pub const V3: &str = "/_matrix/client/v3";

/// Asserts a Matrix error: the status, the errcode, and a human-readable message.
pub fn assert_error(status: u16, body: &Value, want_status: u16, errcode: &str) {
    assert_eq!(
        status, want_status,
        "expected {want_status} {errcode}, got {status}: {body}"
    );
    assert_eq!(body["errcode"], errcode, "{body}");
    assert!(body["error"].is_string(), "error message missing: {body}");
}

pub struct TestServer {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    extra_config: String,
}

/// The config every test server starts from; `extra` is appended (TOML tables, `[server]`
/// included: the listener is set to an ephemeral loopback port after parsing).
pub fn config_for(data: &Path, extra: &str) -> Config {
    let text = format!(
        "server_name = \"localhost\"\n\
         {extra}\n\
         [storage]\npath = {data:?}\ncache_capacity_mb = 16\n\
         [logging]\nfilter = \"warn\"\n",
    );
    let mut config = Config::from_toml(&text).expect("test config parses");
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config
}

/// Extra config for tests whose push gateway (or other user-chosen URL) is on loopback, which
/// the server's SSRF guard refuses by default.
pub const OUTBOUND_TO_LOOPBACK: &str = "[server]\nip_range_allowlist = [\"127.0.0.1\"]\n";

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts with extra top-level config (e.g. a `[registration]` table).
    pub async fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = charla::server::start(config_for(&dir.path().join("data"), extra))
            .await
            .expect("server starts");
        TestServer {
            server,
            dir,
            extra_config: extra.to_owned(),
        }
    }

    /// Starts with extra config and then `adjust` applied to the parsed config, for keys of the
    /// tables this harness writes itself (`[server]`). A restart keeps only `extra`.
    pub async fn start_adjusted(extra: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config_for(&dir.path().join("data"), extra);
        adjust(&mut config);
        let server = charla::server::start(config).await.expect("server starts");
        TestServer {
            server,
            dir,
            extra_config: extra.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.base_url(), path)
    }

    pub fn data_path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the server and starts a new one on the same data folder (a new port).
    pub async fn restart(self) -> Self {
        self.restart_after(|_| {}).await
    }

    /// Stops the server and starts a new one on the same data folder with other extra config.
    pub async fn restart_with(mut self, extra: &str) -> Self {
        self.extra_config = extra.to_owned();
        self.restart().await
    }

    /// Stops the server, calls `between` with the data folder, and starts a new one on it.
    pub async fn restart_after(self, between: impl FnOnce(&Path)) -> Self {
        let TestServer {
            server,
            dir,
            extra_config,
        } = self;
        server.stop().await;
        between(&dir.path().join("data"));
        let server = charla::server::start(config_for(&dir.path().join("data"), &extra_config))
            .await
            .expect("server restarts");
        TestServer {
            server,
            dir,
            extra_config,
        }
    }

    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: self.server.base_url(),
            token: None,
        }
    }

    /// Registers a user through the dummy UIA flow and returns a logged-in client.
    pub async fn user(&self, name: &str) -> Client {
        registered(&self.server.base_url(), name).await
    }
}

/// Registers `name` on the server at `base` through the dummy UIA flow; a logged-in client.
pub async fn registered(base: &str, name: &str) -> Client {
    let mut c = Client {
        http: reqwest::Client::new(),
        base: base.to_owned(),
        token: None,
    };
    let (status, body) = c
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": name, "password": "secret-pw", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, 200, "register {name}: {body}");
    c.token = Some(body["access_token"].as_str().unwrap().to_owned());
    c
}

/// A raw HTTP client: every call returns the status and the JSON body, never panics on errors.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Client {
    pub fn user_id(&self, name: &str) -> String {
        format!("@{name}:localhost")
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            reqwest::Method::PATCH,
            path,
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            reqwest::Method::PUT,
            path,
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
    }

    pub async fn delete(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            reqwest::Method::DELETE,
            path,
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
    }

    /// Sends raw bytes (malformed JSON tests).
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.send(method, path, Some(body)).await
    }

    pub async fn create_room(&self, body: Value) -> String {
        let (status, res) = self.post("/_matrix/client/v3/createRoom", body).await;
        assert_eq!(status, 200, "createRoom: {res}");
        res["room_id"].as_str().unwrap().to_owned()
    }

    /// Sends an `m.text` message and returns its event id.
    /// Sets the room's state event `kind` (state key ""); its id.
    pub async fn set_state(&self, room: &str, kind: &str, content: Value) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/", enc(room));
        let (status, answer) = self.put(&path, content).await;
        assert_eq!(status, 200, "{answer}");
        answer["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn send_text(&self, room: &str, txn: &str, text: &str) -> String {
        self.send_message(room, txn, json!({ "msgtype": "m.text", "body": text }))
            .await
    }

    /// Sends an `m.room.message` with this content; returns the event id.
    pub async fn send_message(&self, room: &str, txn: &str, content: Value) -> String {
        let (status, res) = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    enc(room)
                ),
                content,
            )
            .await;
        assert_eq!(status, 200, "send: {res}");
        res["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn join(&self, room: &str) -> (u16, Value) {
        self.post(&format!("/_matrix/client/v3/join/{}", enc(room)), json!({}))
            .await
    }

    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(s) = since {
            path.push_str(&format!("&since={s}"));
        }
        let (status, body) = self.get(&path).await;
        assert_eq!(status, 200, "sync: {body}");
        body
    }
}

/// Percent-encodes a path segment (room ids and aliases contain `!`, `#` and `:`).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The bodies of the `m.room.message` events of a room's timeline in a sync response.
pub fn timeline_bodies(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
