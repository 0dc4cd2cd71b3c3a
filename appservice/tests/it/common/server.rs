//! An appservice built with the toolkit, running on loopback, and a handler that records what
//! it is given.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use appservice::{
    AppService, EphemeralEvent, Handler, HandlerError, Namespace, Namespaces, Registration,
};
use ruma::events::{AnySyncEphemeralRoomEvent, AnyTimelineEvent, AnyToDeviceEvent};
use ruma::serde::Raw;
use ruma::{RoomAliasId, UserId};
use serde_json::{Value, json};

/// Records everything delivered, one line each; fails the next `fail` events on request.
#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<String>>,
    pub fail: AtomicU32,
    pub pings: Mutex<Vec<Option<String>>>,
}

impl Recorder {
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
    fn push(&self, line: String) {
        self.seen.lock().unwrap().push(line);
    }
}

impl Handler for Recorder {
    async fn on_event(
        &self,
        event: AnyTimelineEvent,
        raw: &Raw<AnyTimelineEvent>,
    ) -> Result<(), HandlerError> {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err("bridge is down".into());
        }
        let body = raw.get_field::<Value>("content").unwrap().unwrap()["body"].clone();
        self.push(format!(
            "event {} {} {} {}",
            event.event_id(),
            event.sender(),
            event.event_type(),
            body
        ));
        Ok(())
    }

    async fn on_ephemeral(&self, edu: EphemeralEvent) -> Result<(), HandlerError> {
        let line = match edu {
            EphemeralEvent::Room {
                room_id,
                event: AnySyncEphemeralRoomEvent::Typing(t),
            } => {
                format!("typing {room_id} {:?}", t.content.user_ids)
            }
            EphemeralEvent::Room { room_id, event } => {
                format!("edu {room_id} {}", event.event_type())
            }
            EphemeralEvent::Presence(p) => format!("presence {} {}", p.sender, p.content.presence),
        };
        self.push(line);
        Ok(())
    }

    async fn on_to_device(&self, raw: &Raw<AnyToDeviceEvent>) -> Result<(), HandlerError> {
        let to: String = raw.get_field("to_user_id")?.unwrap_or_default();
        let event = raw.deserialize()?;
        self.push(format!("to_device {} {to}", event.event_type()));
        Ok(())
    }

    async fn query_user(&self, user_id: &UserId) -> Result<bool, HandlerError> {
        if user_id.localpart() == "_wa_broken" {
            return Err("lookup failed".into());
        }
        Ok(user_id.localpart() == "_wa_known")
    }

    async fn query_room_alias(&self, alias: &RoomAliasId) -> Result<bool, HandlerError> {
        Ok(alias.alias() == "_wa_known")
    }

    async fn on_ping(&self, transaction_id: Option<&str>) {
        self.pings
            .lock()
            .unwrap()
            .push(transaction_id.map(str::to_owned));
    }
}

/// A running appservice; dropping `stop` ends it, `done` says when it released everything.
pub struct Running {
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn shut_down(self) {
        let _ = self.stop.send(());
        self.done.await.unwrap();
    }
}

pub fn registration() -> Registration {
    let mut reg = Registration::generate(
        "whatsapp",
        Some("http://127.0.0.1:1".into()),
        "wabot",
        Namespaces {
            users: vec![Namespace::new("@_wa_.*:example\\.org", true)],
            ..Default::default()
        },
    );
    reg.hs_token = "HS_SECRET".into();
    reg
}

pub async fn start<H: Handler>(state_dir: &std::path::Path, handler: Arc<H>) -> Running {
    let app = AppService::builder(
        registration(),
        "http://127.0.0.1:1",
        ruma::server_name!("example.org"),
    )
    .state_dir(state_dir)
    .build(handler)
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        app.serve_until(listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running { base, stop, done }
}

/// Sends a request and returns status and JSON body.
pub async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn message(id: &str, sender: &str, body: &str) -> Value {
    json!({
        "type": "m.room.message", "event_id": id, "sender": sender, "room_id": "!room:example.org",
        "origin_server_ts": 1_700_000_000_000u64, "content": { "msgtype": "m.text", "body": body }
    })
}

pub fn unauthorized() -> Value {
    json!({ "errcode": "M_UNAUTHORIZED", "error": "Missing homeserver token" })
}

pub fn forbidden() -> Value {
    json!({ "errcode": "M_FORBIDDEN", "error": "Invalid homeserver token" })
}
