//! Full-text search: the Client-Server `/search`, the support API's `q` and `/search`, the
//! index's recovery and rebuild.

mod client;
mod recovery;
mod support;
mod visibility;

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Client, TestServer, V3};

/// Searches per user and second the tests may make (they search far faster than people).
pub const UNLIMITED: &str = "[limits]\nsearch_per_second = 100000.0\nsearch_burst = 100000\n";

/// A server whose search rate limit the tests do not run into.
pub async fn server() -> TestServer {
    TestServer::start_with(UNLIMITED).await
}

/// The admin API as the holder of the server's `admin.token`.
pub fn admin(s: &TestServer) -> Client {
    let token = std::fs::read_to_string(s.data_path().join("admin.token")).expect("admin.token");
    let mut c = s.client();
    c.token = Some(token.trim().to_owned());
    c
}

/// Waits until the index covers every event stored so far (the indexer commits a few times a
/// second): a wait for a condition, with a deadline, not a timing assertion.
pub async fn indexed(s: &TestServer) {
    let admin = admin(s);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = admin.get("/_charla/admin/v1/search").await;
        assert_eq!(status, 200, "{body}");
        if body["indexed_upto"].as_u64() >= body["stream_head"].as_u64() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the index never caught up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /search` with `room_events` criteria; the status and body.
pub async fn search(c: &Client, criteria: Value) -> (u16, Value) {
    search_page(c, criteria, None).await
}

pub async fn search_page(c: &Client, criteria: Value, batch: Option<&str>) -> (u16, Value) {
    let path = match batch {
        Some(b) => format!("{V3}/search?next_batch={b}"),
        None => format!("{V3}/search"),
    };
    c.post(
        &path,
        json!({ "search_categories": { "room_events": criteria } }),
    )
    .await
}

/// The `room_events` category of a successful search.
pub async fn room_events(c: &Client, criteria: Value) -> Value {
    let (status, body) = search(c, criteria).await;
    assert_eq!(status, 200, "{body}");
    body["search_categories"]["room_events"].clone()
}

/// The bodies of the results, in order.
pub fn bodies(room_events: &Value) -> Vec<String> {
    room_events["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            r["result"]["content"]["body"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}
