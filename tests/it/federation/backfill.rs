//! A client paginating back past the join in another server's room gets what was said there
//! before this server joined, fetched from that server as it goes (`/backfill`), in order and
//! once each, down to the room's beginning.

use serde_json::{Value, json};

use super::{Pair, pair};
use crate::common::enc;

/// The bodies of the messages in a `/messages` chunk.
fn bodies(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn paginating_back_reaches_what_was_said_before_the_join() {
    let Pair { a, b, _dirs } = pair("").await;
    let alice = crate::common::registered(&a.base_url(), "alice").await;
    let bob = crate::common::registered(&b.base_url(), "bob").await;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "name": "Historia" }))
        .await;
    for i in 0..70 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let a_name = a.services.config.server_name.to_string();
    let (status, body) = bob
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?server_name={}",
                enc(&room),
                enc(&a_name)
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    let mut creation_seen = false;
    for _ in 0..40 {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=15{}",
            enc(&room),
            from.as_deref()
                .map(|t| format!("&from={}", enc(t)))
                .unwrap_or_default()
        );
        let (status, page) = bob.get(&path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(bodies(&page));
        creation_seen |= page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name");
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let want: Vec<String> = (0..70).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want, "every message once, newest first");
    assert!(creation_seen, "down to the room's first state events");
    a.stop().await;
    b.stop().await;
}
