//! Rooms against the Client-Server API v1.16, one file per topic: creation, membership, state,
//! messages (history, redaction), history visibility, aliases and the directory, and `/sync`.
//! The helpers here are what the topics share.

use std::time::{Duration, Instant};

use crate::common::{Client, TestServer, V3, assert_error, enc, timeline_bodies};
use serde_json::{Value, json};

mod create;
mod directory;
mod membership;
mod messages;
mod state;
mod sync;
mod visibility;

/// The most common setup: Alice creates a public room and Bob joins it.
pub(super) async fn alice_and_bob_in_a_public_room() -> (TestServer, Client, Client, String) {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    (s, alice, bob, room)
}

pub(super) fn room_path(room: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room))
}

/// The content of a state event, or the error.
pub(super) async fn state(c: &Client, room: &str, kind: &str, key: &str) -> (u16, Value) {
    c.get(&room_path(room, &format!("state/{kind}/{}", enc(key))))
        .await
}

pub(super) async fn state_ok(c: &Client, room: &str, kind: &str, key: &str) -> Value {
    let (status, body) = state(c, room, kind, key).await;
    assert_eq!(status, 200, "state {kind}/{key}: {body}");
    body
}

pub(super) async fn full_state(c: &Client, room: &str) -> Vec<Value> {
    let (status, body) = c.get(&room_path(room, "state")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

pub(super) async fn send(c: &Client, room: &str, txn: &str, content: Value) -> (u16, Value) {
    c.put(
        &room_path(room, &format!("send/m.room.message/{txn}")),
        content,
    )
    .await
}

pub(super) async fn messages(c: &Client, room: &str, query: &str) -> Value {
    let (status, body) = c.get(&room_path(room, &format!("messages?{query}"))).await;
    assert_eq!(status, 200, "messages?{query}: {body}");
    body
}

pub(super) fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub(super) fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The whole room history through `/messages` (backwards, oldest first), one page at a time.
pub(super) async fn history(c: &Client, room: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut query = "dir=b&limit=7".to_owned();
        if let Some(f) = &from {
            query.push_str(&format!("&from={f}"));
        }
        let page = messages(c, room, &query).await;
        out.extend(page["chunk"].as_array().unwrap().iter().cloned());
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    out.reverse();
    out
}

pub(super) fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

pub(super) fn joined_ids(sync: &Value) -> Vec<String> {
    let mut rooms: Vec<String> = sync["rooms"]["join"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    rooms.sort();
    rooms
}

pub(super) async fn joined_rooms(c: &Client) -> Vec<String> {
    let (status, body) = c.get(&format!("{V3}/joined_rooms")).await;
    assert_eq!(status, 200);
    let mut rooms: Vec<String> = body["joined_rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    rooms.sort();
    rooms
}

pub(super) async fn invite(c: &Client, room: &str, user: &str) -> (u16, Value) {
    c.post(&room_path(room, "invite"), json!({ "user_id": user }))
        .await
}
