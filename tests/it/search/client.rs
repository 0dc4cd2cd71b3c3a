//! `POST /_matrix/client/v3/search` against the spec and Synapse's answers.

use serde_json::json;

use super::{bodies, indexed, room_events};
use crate::common::TestServer;

#[tokio::test]
async fn finds_words_without_accents_or_case() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    alice.send_text(&room, "t1", "La BATERÍA está rota").await;
    alice.send_text(&room, "t2", "El cargador funciona").await;
    indexed(&s).await;
    let found = room_events(&alice, json!({ "search_term": "bateria" })).await;
    assert_eq!(bodies(&found), ["La BATERÍA está rota"], "{found}");
    assert_eq!(found["count"], 1);
    assert_eq!(found["highlights"], json!(["BATERÍA"]));
}
