//! A fake homeserver for the toolkit's tests: records exactly what it was sent (method, raw
//! path, query, `Authorization`, content type, body) and answers from a script.

#![allow(dead_code)]

pub mod server;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub auth: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
pub struct Fake {
    pub seen: Mutex<Vec<Seen>>,
    /// Answers to give, in order; once empty, 200 with a body every endpoint accepts.
    pub script: Mutex<VecDeque<(u16, String, Option<&'static str>)>>,
}

impl Fake {
    pub fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
    pub fn answer(&self, status: u16, body: Value) {
        self.script
            .lock()
            .unwrap()
            .push_back((status, body.to_string(), None));
    }
}

pub const ANY_OK: &str = r#"{"event_id":"$ev:example.org","room_id":"!new:example.org","content_uri":"mxc://example.org/abc","user_id":"@_wa_1:example.org","duration_ms":7}"#;

pub async fn fake_homeserver() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let shared = fake.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let fake = shared.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                let content_type = header("content-type");
                let body = if content_type == "application/json" {
                    serde_json::from_slice(&body).unwrap()
                } else {
                    Value::String(String::from_utf8_lossy(&body).into_owned())
                };
                fake.seen.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    path: uri.path().to_owned(),
                    query: uri.query().unwrap_or_default().to_owned(),
                    auth: header("authorization"),
                    content_type,
                    body,
                });
                let (status, body, retry_after) = fake
                    .script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or((200, ANY_OK.to_owned(), None));
                let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
                if let Some(secs) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", secs.parse().unwrap());
                }
                response
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, base)
}

pub fn seen(method: &str, path: &str, query: &str, body: Value) -> Seen {
    Seen {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        auth: "Bearer AS_SECRET".into(),
        content_type: "application/json".into(),
        body,
    }
}
