//! Rooms against the Client-Server API v1.16: creation, membership, state, messages, history,
//! redaction, visibility, aliases, the directory and `/sync`.

use std::time::{Duration, Instant};

use crate::common::{Client, TestServer, V3, assert_error, enc, timeline_bodies};
use serde_json::{Value, json};

/// The most common setup: Alice creates a public room and Bob joins it.
async fn alice_and_bob_in_a_public_room() -> (TestServer, Client, Client, String) {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    (s, alice, bob, room)
}

fn room_path(room: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room))
}

/// The content of a state event, or the error.
async fn state(c: &Client, room: &str, kind: &str, key: &str) -> (u16, Value) {
    c.get(&room_path(room, &format!("state/{kind}/{}", enc(key))))
        .await
}

async fn state_ok(c: &Client, room: &str, kind: &str, key: &str) -> Value {
    let (status, body) = state(c, room, kind, key).await;
    assert_eq!(status, 200, "state {kind}/{key}: {body}");
    body
}

async fn full_state(c: &Client, room: &str) -> Vec<Value> {
    let (status, body) = c.get(&room_path(room, "state")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

async fn send(c: &Client, room: &str, txn: &str, content: Value) -> (u16, Value) {
    c.put(
        &room_path(room, &format!("send/m.room.message/{txn}")),
        content,
    )
    .await
}

async fn messages(c: &Client, room: &str, query: &str) -> Value {
    let (status, body) = c.get(&room_path(room, &format!("messages?{query}"))).await;
    assert_eq!(status, 200, "messages?{query}: {body}");
    body
}

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The whole room history through `/messages` (backwards, oldest first), one page at a time.
async fn history(c: &Client, room: &str) -> Vec<Value> {
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

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

fn joined_ids(sync: &Value) -> Vec<String> {
    let mut rooms: Vec<String> = sync["rooms"]["join"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    rooms.sort();
    rooms
}

async fn joined_rooms(c: &Client) -> Vec<String> {
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

async fn invite(c: &Client, room: &str, user: &str) -> (u16, Value) {
    c.post(&room_path(room, "invite"), json!({ "user_id": user }))
        .await
}

// ---------------------------------------------------------------------------------------------
// createRoom

#[tokio::test]
async fn create_private_chat_defaults() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    assert_eq!(
        state_ok(&alice, &room, "m.room.join_rules", "").await,
        json!({ "join_rule": "invite" })
    );
    assert_eq!(
        state_ok(&alice, &room, "m.room.history_visibility", "").await,
        json!({ "history_visibility": "shared" })
    );
    assert_eq!(
        state_ok(&alice, &room, "m.room.guest_access", "").await,
        json!({ "guest_access": "can_join" })
    );
    // Room version 11 by default: no `creator` key, the sender is the creator.
    assert_eq!(
        state_ok(&alice, &room, "m.room.create", "").await,
        json!({ "room_version": "11" })
    );
    let create = full_state(&alice, &room)
        .await
        .into_iter()
        .find(|e| e["type"] == "m.room.create")
        .unwrap();
    assert_eq!(create["sender"], "@alice:localhost");
    assert_eq!(create["state_key"], "");
    assert_eq!(create["room_id"], room.as_str());
    let levels = state_ok(&alice, &room, "m.room.power_levels", "").await;
    assert_eq!(levels["users"], json!({ "@alice:localhost": 100 }));
    assert_eq!(levels["invite"], 0);
    assert_eq!(levels["state_default"], 50);
    assert_eq!(levels["events_default"], 0);
    assert_eq!(
        state_ok(&alice, &room, "m.room.member", "@alice:localhost").await,
        json!({ "membership": "join", "displayname": "alice" })
    );
    // The first events come in the spec's order.
    let events = history(&alice, &room).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "m.room.create",
            "m.room.member",
            "m.room.power_levels",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.guest_access"
        ]
    );
    // Not published.
    let (_, dir) = alice.get(&format!("{V3}/publicRooms")).await;
    assert_eq!(dir["chunk"], json!([]));
}

#[tokio::test]
async fn create_public_chat_and_directory_listing() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let listed = alice
        .create_room(json!({ "preset": "public_chat", "visibility": "public", "name": "Soporte" }))
        .await;
    // public_chat without visibility: joinable, but not in the directory (as Synapse).
    let unlisted = alice.create_room(json!({ "preset": "public_chat" })).await;
    // visibility public without a preset means public_chat.
    let implied = alice.create_room(json!({ "visibility": "public" })).await;
    for room in [&listed, &unlisted, &implied] {
        assert_eq!(
            state_ok(&alice, room, "m.room.join_rules", "").await,
            json!({ "join_rule": "public" })
        );
        assert_eq!(
            state_ok(&alice, room, "m.room.guest_access", "").await,
            json!({ "guest_access": "forbidden" })
        );
        let levels = state_ok(&alice, room, "m.room.power_levels", "").await;
        assert_eq!(levels["invite"], 50);
    }
    let (status, dir) = s.client().get(&format!("{V3}/publicRooms")).await;
    assert_eq!(status, 200, "{dir}");
    let mut listed_ids: Vec<&str> = dir["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    listed_ids.sort();
    let mut want = vec![listed.as_str(), implied.as_str()];
    want.sort();
    assert_eq!(listed_ids, want);
    let entry = dir["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == listed.as_str())
        .unwrap();
    assert_eq!(entry["name"], "Soporte");
    assert_eq!(entry["num_joined_members"], 1);
    assert_eq!(entry["world_readable"], false);
    assert_eq!(entry["guest_can_join"], false);
    // `join_rule` may be left out when it is `public` (ruma does; Synapse sends it).
    assert!(
        entry.get("join_rule").is_none() || entry["join_rule"] == "public",
        "{entry}"
    );
    let (_, vis) = alice
        .get(&format!("{V3}/directory/list/room/{}", enc(&unlisted)))
        .await;
    assert_eq!(vis, json!({ "visibility": "private" }));
    let (_, vis) = alice
        .get(&format!("{V3}/directory/list/room/{}", enc(&listed)))
        .await;
    assert_eq!(vis, json!({ "visibility": "public" }));
}

#[tokio::test]
async fn create_with_alias_name_topic_initial_state_and_power_override() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "room_alias_name": "ventas",
            "name": "Ventas",
            "topic": "Pedidos y facturas",
            "initial_state": [
                { "type": "org.example.setting", "state_key": "k", "content": { "v": 1 } },
                { "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } },
                // `name` is applied after initial_state, so it wins.
                { "type": "m.room.name", "content": { "name": "overridden" } }
            ],
            "power_level_content_override": {
                "events_default": 10,
                "events": { "m.room.topic": 75 },
                "users": { "@alice:localhost": 100, "@bob:localhost": 60 }
            }
        }))
        .await;

    let (status, body) = bob
        .get(&format!("{V3}/directory/room/{}", enc("#ventas:localhost")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "room_id": room, "servers": ["localhost"] }));
    assert_eq!(
        state_ok(&alice, &room, "m.room.canonical_alias", "").await,
        json!({ "alias": "#ventas:localhost" })
    );
    assert_eq!(
        state_ok(&alice, &room, "m.room.name", "").await,
        json!({ "name": "Ventas" })
    );
    let topic = state_ok(&alice, &room, "m.room.topic", "").await;
    assert_eq!(topic["topic"], "Pedidos y facturas");
    assert_eq!(
        state_ok(&alice, &room, "org.example.setting", "k").await,
        json!({ "v": 1 })
    );
    assert_eq!(
        state_ok(&alice, &room, "m.room.history_visibility", "").await,
        json!({ "history_visibility": "joined" })
    );
    let levels = state_ok(&alice, &room, "m.room.power_levels", "").await;
    assert_eq!(levels["events_default"], 10);
    // The override replaces top-level keys whole.
    assert_eq!(levels["events"], json!({ "m.room.topic": 75 }));
    assert_eq!(
        levels["users"],
        json!({ "@alice:localhost": 100, "@bob:localhost": 60 })
    );
    assert_eq!(levels["state_default"], 50);

    // Join by alias; Bob's 60 lets him send messages (events_default 10) but not the topic (75).
    let (status, body) = bob.join("#ventas:localhost").await;
    assert_eq!((status, &body["room_id"]), (200, &json!(room)), "{body}");
    let (status, _) = send(
        &bob,
        &room,
        "b1",
        json!({ "msgtype": "m.text", "body": "hi" }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = bob
        .put(
            &room_path(&room, "state/m.room.topic/"),
            json!({ "topic": "mine" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, _) = bob
        .put(
            &room_path(&room, "state/m.room.name/"),
            json!({ "name": "Bob's" }),
        )
        .await;
    assert_eq!(status, 200);

    // The alias is taken now.
    let (status, body) = alice
        .post(
            &format!("{V3}/createRoom"),
            json!({ "room_alias_name": "ventas" }),
        )
        .await;
    assert_error(status, &body, 400, "M_ROOM_IN_USE");
    assert_eq!(joined_rooms(&alice).await, vec![room.clone()]);
}

#[tokio::test]
async fn create_with_unsupported_version_or_forbidden_initial_state() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (status, body) = alice
        .post(&format!("{V3}/createRoom"), json!({ "room_version": "1" }))
        .await;
    assert_error(status, &body, 400, "M_UNSUPPORTED_ROOM_VERSION");
    let (status, body) = alice
        .post(&format!("{V3}/createRoom"), json!({ "room_version": "10" }))
        .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    // Before v11 the create event names its creator.
    assert_eq!(
        state_ok(&alice, &room, "m.room.create", "").await,
        json!({ "room_version": "10", "creator": "@alice:localhost" })
    );
    let (status, body) = alice
        .post(
            &format!("{V3}/createRoom"),
            json!({ "invite": ["@nobody:localhost"] }),
        )
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // Bad initial state is refused before any event exists: no half-built room appears.
    let (status, body) = alice
        .post(
            &format!("{V3}/createRoom"),
            json!({ "initial_state": [{ "type": "m.room.topic", "state_key": "", "content": 5 }] }),
        )
        .await;
    assert_error(status, &body, 400, "M_BAD_JSON");
    assert_eq!(joined_rooms(&alice).await, vec![room]);
}

#[tokio::test]
async fn direct_invites_carry_is_direct() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice
        .create_room(json!({ "preset": "trusted_private_chat", "invite": ["@bob:localhost"], "is_direct": true }))
        .await;
    assert_eq!(
        state_ok(&alice, &room, "m.room.member", "@bob:localhost").await,
        json!({ "membership": "invite", "is_direct": true })
    );
    // trusted_private_chat makes invitees admins.
    let levels = state_ok(&alice, &room, "m.room.power_levels", "").await;
    assert_eq!(
        levels["users"],
        json!({ "@alice:localhost": 100, "@bob:localhost": 100 })
    );

    let sync = bob.sync(None, 0).await;
    let invite_state = sync["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("bob sees the invite")
        .clone();
    let own = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost")
        .expect("the invitee's member event");
    assert_eq!(own["content"]["is_direct"], true);
    assert_eq!(own["sender"], "@alice:localhost");

    // A plain invite does not carry it.
    let plain = alice.create_room(json!({})).await;
    assert_eq!(invite(&alice, &plain, "@bob:localhost").await.0, 200);
    assert_eq!(
        state_ok(&alice, &plain, "m.room.member", "@bob:localhost").await,
        json!({ "membership": "invite", "displayname": "bob" })
    );
}

// ---------------------------------------------------------------------------------------------
// Membership

#[tokio::test]
async fn join_invite_only_room_needs_an_invite() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let before = ids(&history(&alice, &room).await);

    let (status, body) = bob.join(&room).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    assert_eq!(ids(&history(&alice, &room).await), before);
    assert!(joined_rooms(&bob).await.is_empty());

    // A member without invite power cannot invite either... but Alice can.
    let (status, body) = invite(&alice, &room, "@bob:localhost").await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = bob.join(&room).await;
    assert_eq!((status, &body["room_id"]), (200, &json!(room)));
    assert_eq!(joined_rooms(&bob).await, vec![room.clone()]);
    let bob_member = state_ok(&alice, &room, "m.room.member", "@bob:localhost").await;
    assert_eq!(
        bob_member,
        json!({ "membership": "join", "displayname": "bob" })
    );

    // Inviting an unknown user is refused.
    let (status, body) = invite(&alice, &room, "@nobody:localhost").await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // Inviting someone already joined is refused by the auth rules.
    let (status, body) = invite(&alice, &room, "@bob:localhost").await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn leave_then_forget() {
    let (_s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    alice.send_text(&room, "t1", "hello").await;

    let (status, body) = bob.post(&room_path(&room, "forget"), json!({})).await;
    assert_error(status, &body, 400, "M_UNKNOWN");

    let (status, body) = bob
        .post(&room_path(&room, "leave"), json!({ "reason": "bye" }))
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert!(joined_rooms(&bob).await.is_empty());
    let leave = state_ok(&alice, &room, "m.room.member", "@bob:localhost").await;
    assert_eq!(leave, json!({ "membership": "leave", "reason": "bye" }));
    // A member who left still sees the room with include_leave.
    let filter = enc(r#"{"room":{"include_leave":true}}"#);
    let (_, sync) = bob.get(&format!("{V3}/sync?filter={filter}")).await;
    assert!(sync["rooms"]["leave"].get(&room).is_some(), "{sync}");

    let (status, body) = bob.post(&room_path(&room, "forget"), json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    let (_, sync) = bob.get(&format!("{V3}/sync?filter={filter}")).await;
    assert!(
        sync["rooms"]["leave"].get(&room).is_none(),
        "a forgotten room is gone from sync: {sync}"
    );
    // Forgetting is per user: Alice still has it; Bob can come back.
    assert_eq!(joined_rooms(&alice).await, vec![room.clone()]);
    assert_eq!(bob.join(&room).await.0, 200);
    assert_eq!(joined_rooms(&bob).await, vec![room]);
}

#[tokio::test]
async fn kick_needs_power_and_the_target_sees_it() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    assert_eq!(carol.join(&room).await.0, 200);
    let bob_since = next_batch(&bob.sync(None, 0).await);

    // Carol (power 0) cannot kick Bob.
    let (status, body) = carol
        .post(
            &room_path(&room, "kick"),
            json!({ "user_id": "@bob:localhost" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    assert_eq!(joined_rooms(&bob).await, vec![room.clone()]);

    let (status, body) = alice
        .post(
            &room_path(&room, "kick"),
            json!({ "user_id": "@bob:localhost", "reason": "spam" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert!(joined_rooms(&bob).await.is_empty());

    let sync = bob.sync(Some(&bob_since), 0).await;
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
    let events = sync["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .expect("the room is under leave")
        .clone();
    let kick = events.last().unwrap();
    assert_eq!(kick["type"], "m.room.member");
    assert_eq!(kick["state_key"], "@bob:localhost");
    assert_eq!(kick["sender"], "@alice:localhost");
    assert_eq!(kick["content"]["membership"], "leave");
    assert_eq!(kick["content"]["reason"], "spam");

    // Bob may not read the room any more... but may rejoin a public room after a kick.
    let (status, _) = send(
        &bob,
        &room,
        "b1",
        json!({ "msgtype": "m.text", "body": "x" }),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(bob.join(&room).await.0, 200);
}

#[tokio::test]
async fn ban_blocks_rejoin_until_unban() {
    let (_s, alice, bob, room) = alice_and_bob_in_a_public_room().await;

    // Bob cannot ban Alice.
    let (status, body) = bob
        .post(
            &room_path(&room, "ban"),
            json!({ "user_id": "@alice:localhost" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");

    let (status, body) = alice
        .post(
            &room_path(&room, "ban"),
            json!({ "user_id": "@bob:localhost", "reason": "abuse" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(
        state_ok(&alice, &room, "m.room.member", "@bob:localhost").await,
        json!({ "membership": "ban", "reason": "abuse" })
    );
    let before = ids(&history(&alice, &room).await);
    let (status, body) = bob.join(&room).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    assert_eq!(ids(&history(&alice, &room).await), before, "nothing stored");
    // A ban also blocks invites.
    let (status, _) = invite(&alice, &room, "@bob:localhost").await;
    assert_eq!(status, 403);

    let (status, body) = alice
        .post(
            &room_path(&room, "unban"),
            json!({ "user_id": "@bob:localhost" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(
        state_ok(&alice, &room, "m.room.member", "@bob:localhost").await,
        json!({ "membership": "leave" })
    );
    let (status, body) = bob.join(&room).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn kick_and_unban_need_the_right_target_membership() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let _carol = s.user("carol").await;
    let dave = s.user("dave").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    let post = |action: &'static str, user: &'static str| {
        let alice = alice.clone();
        let room = room.clone();
        async move {
            alice
                .post(&room_path(&room, action), json!({ "user_id": user }))
                .await
        }
    };
    let before = ids(&history(&alice, &room).await);

    // Kicking someone who is not in the room: 403, and no member event for them.
    let (status, body) = post("kick", "@dave:localhost").await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, _) = state(&alice, &room, "m.room.member", "@dave:localhost").await;
    assert_eq!(status, 404);
    let sync = dave.sync(None, 0).await;
    assert!(sync["rooms"]["leave"].get(&room).is_none(), "{sync}");
    // Unbanning someone who is not banned: the spec's M_BAD_STATE; a joined member stays.
    let (status, body) = post("unban", "@bob:localhost").await;
    assert_error(status, &body, 403, "M_BAD_STATE");
    let (status, body) = post("unban", "@dave:localhost").await;
    assert_error(status, &body, 403, "M_BAD_STATE");
    assert_eq!(joined_rooms(&bob).await, vec![room.clone()]);
    assert_eq!(ids(&history(&alice, &room).await), before);

    // Kicking a banned user would lift the ban: refused, the ban stays.
    assert_eq!(post("ban", "@bob:localhost").await.0, 200);
    let (status, body) = post("kick", "@bob:localhost").await;
    assert_error(status, &body, 403, "M_BAD_STATE");
    assert_eq!(
        state_ok(&alice, &room, "m.room.member", "@bob:localhost").await["membership"],
        "ban"
    );

    // Kicking an invited user revokes the invite.
    assert_eq!(invite(&alice, &room, "@carol:localhost").await.0, 200);
    let (status, body) = post("kick", "@carol:localhost").await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(
        state_ok(&alice, &room, "m.room.member", "@carol:localhost").await,
        json!({ "membership": "leave" })
    );
}

#[tokio::test]
async fn non_member_cannot_send_read_or_see_state() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let eve = s.user("eve").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let event = alice.send_text(&room, "t1", "private words").await;
    let before = ids(&history(&alice, &room).await);

    let (status, body) = send(
        &eve,
        &room,
        "e1",
        json!({ "msgtype": "m.text", "body": "x" }),
    )
    .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    for path in [
        room_path(&room, "messages?dir=b"),
        room_path(&room, "state"),
        room_path(&room, "state/m.room.name/"),
        room_path(&room, "state/m.room.join_rules"),
        room_path(&room, "members"),
        room_path(&room, "joined_members"),
        room_path(&room, &format!("event/{}", enc(&event))),
        room_path(&room, &format!("context/{}", enc(&event))),
    ] {
        let (status, body) = eve.get(&path).await;
        assert_eq!(
            (status, &body["errcode"]),
            (403, &json!("M_FORBIDDEN")),
            "{path}: {body}"
        );
    }
    let (status, body) = eve
        .put(
            &room_path(&room, "state/m.room.topic/"),
            json!({ "topic": "eve was here" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    assert_eq!(ids(&history(&alice, &room).await), before);
}

#[tokio::test]
async fn member_without_power_cannot_change_name_or_power_levels() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "name": "Original" }))
        .await;
    assert_eq!(bob.join(&room).await.0, 200);
    let before = ids(&history(&alice, &room).await);

    let (status, body) = bob
        .put(
            &room_path(&room, "state/m.room.name/"),
            json!({ "name": "Hijacked" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let mut levels = state_ok(&alice, &room, "m.room.power_levels", "").await;
    levels["users"]["@bob:localhost"] = json!(100);
    let (status, body) = bob
        .put(
            &room_path(&room, "state/m.room.power_levels/"),
            levels.clone(),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    // Nor someone else's member event.
    let (status, body) = bob
        .put(
            &room_path(
                &room,
                &format!("state/m.room.member/{}", enc("@alice:localhost")),
            ),
            json!({ "membership": "leave" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");

    assert_eq!(ids(&history(&alice, &room).await), before);
    assert_eq!(
        state_ok(&bob, &room, "m.room.name", "").await,
        json!({ "name": "Original" })
    );
    // Alice can grant the power; then Bob can rename.
    let (status, _) = alice
        .put(&room_path(&room, "state/m.room.power_levels/"), levels)
        .await;
    assert_eq!(status, 200);
    let (status, _) = bob
        .put(
            &room_path(&room, "state/m.room.name/"),
            json!({ "name": "Renamed" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        state_ok(&alice, &room, "m.room.name", "").await,
        json!({ "name": "Renamed" })
    );
}

#[tokio::test]
async fn a_power_level_change_applies_to_the_very_next_message() {
    // Charla remembers that a sender may send a message type until the state changes: the
    // change must be seen by the next send, in both directions.
    let (_s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    assert_eq!(
        send(
            &bob,
            &room,
            "t1",
            json!({"msgtype": "m.text", "body": "one"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send(
            &bob,
            &room,
            "t2",
            json!({"msgtype": "m.text", "body": "two"})
        )
        .await
        .0,
        200
    );

    let mut levels = state_ok(&alice, &room, "m.room.power_levels", "").await;
    levels["events"]["m.room.message"] = json!(50);
    let put_levels = |levels: Value| {
        let alice = &alice;
        let path = room_path(&room, "state/m.room.power_levels/");
        async move { alice.put(&path, levels).await.0 }
    };
    assert_eq!(put_levels(levels.clone()).await, 200);
    let (status, body) = send(
        &bob,
        &room,
        "t3",
        json!({"msgtype": "m.text", "body": "three"}),
    )
    .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    // Other types keep their own level, and Alice (100) still sends.
    let (status, _) = bob
        .put(&room_path(&room, "send/m.reaction/t4"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        send(
            &alice,
            &room,
            "a1",
            json!({"msgtype": "m.text", "body": "from alice"})
        )
        .await
        .0,
        200
    );

    levels["users"]["@bob:localhost"] = json!(50);
    assert_eq!(put_levels(levels).await, 200);
    assert_eq!(
        send(
            &bob,
            &room,
            "t5",
            json!({"msgtype": "m.text", "body": "five"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        bodies(&history(&alice, &room).await),
        ["one", "two", "from alice", "five"]
    );
}

// ---------------------------------------------------------------------------------------------
// State

#[tokio::test]
async fn state_round_trip_with_and_without_state_key() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;

    // The three spellings of the empty state key.
    let forms = ["state/m.room.topic", "state/m.room.topic/"];
    for (i, form) in forms.iter().enumerate() {
        let topic = json!({ "topic": format!("topic {i}") });
        let (status, body) = alice.put(&room_path(&room, form), topic.clone()).await;
        assert_eq!(status, 200, "PUT {form}: {body}");
        let event_id = body["event_id"].as_str().expect("event_id").to_owned();
        for read in ["state/m.room.topic", "state/m.room.topic/"] {
            let (status, got) = alice.get(&room_path(&room, read)).await;
            assert_eq!((status, &got), (200, &topic), "GET {read} after PUT {form}");
        }
        let (status, full) = alice
            .get(&room_path(&room, "state/m.room.topic/?format=event"))
            .await;
        assert_eq!(status, 200, "{full}");
        assert_eq!(full["event_id"], event_id.as_str());
        assert_eq!(full["content"], topic);
    }

    // A state key with special characters.
    let key = "a key/with:odd#chars";
    let (status, body) = alice
        .put(
            &room_path(&room, &format!("state/org.example.thing/{}", enc(key))),
            json!({ "v": [1, null] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        state_ok(&alice, &room, "org.example.thing", key).await,
        json!({ "v": [1, null] })
    );
    let in_state = full_state(&alice, &room)
        .await
        .into_iter()
        .find(|e| e["type"] == "org.example.thing")
        .unwrap();
    assert_eq!(in_state["state_key"], key);
    // The topic appears once in the full state, with its last value.
    let topics: Vec<Value> = full_state(&alice, &room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.topic")
        .collect();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0]["content"], json!({ "topic": "topic 1" }));
    assert_eq!(
        topics[0]["unsigned"]["prev_content"],
        json!({ "topic": "topic 0" })
    );

    // Absent state: 404.
    let (status, body) = state(&alice, &room, "m.room.avatar", "").await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice.get(&room_path(&room, "state/m.room.avatar")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = state(&alice, &room, "org.example.thing", "other").await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn joined_rooms_members_and_joined_members() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let (status, _) = bob
        .put(
            &format!("{V3}/profile/{}/displayname", enc("@bob:localhost")),
            json!({ "displayname": "Bob B." }),
        )
        .await;
    assert_eq!(status, 200);
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let other = alice.create_room(json!({})).await;
    assert_eq!(bob.join(&room).await.0, 200);
    assert_eq!(invite(&alice, &room, "@carol:localhost").await.0, 200);

    let mut want = vec![room.clone(), other.clone()];
    want.sort();
    assert_eq!(joined_rooms(&alice).await, want);
    assert_eq!(joined_rooms(&bob).await, vec![room.clone()]);
    assert!(
        joined_rooms(&carol).await.is_empty(),
        "an invite is not a join"
    );

    let members = |query: &'static str| {
        let alice = alice.clone();
        let room = room.clone();
        async move {
            let (status, body) = alice
                .get(&room_path(&room, &format!("members{query}")))
                .await;
            assert_eq!(status, 200, "{body}");
            let mut out: Vec<(String, String)> = body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    assert_eq!(e["type"], "m.room.member");
                    (
                        e["state_key"].as_str().unwrap().to_owned(),
                        e["content"]["membership"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            out.sort();
            out
        }
    };
    let pair = |u: &str, m: &str| (u.to_owned(), m.to_owned());
    assert_eq!(
        members("").await,
        vec![
            pair("@alice:localhost", "join"),
            pair("@bob:localhost", "join"),
            pair("@carol:localhost", "invite")
        ]
    );
    assert_eq!(
        members("?membership=join").await,
        vec![
            pair("@alice:localhost", "join"),
            pair("@bob:localhost", "join")
        ]
    );
    assert_eq!(
        members("?membership=invite").await,
        vec![pair("@carol:localhost", "invite")]
    );
    assert_eq!(
        members("?not_membership=join").await,
        vec![pair("@carol:localhost", "invite")]
    );

    let (status, body) = alice.get(&room_path(&room, "joined_members")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "joined": {
            "@alice:localhost": { "display_name": "alice" },
            "@bob:localhost": { "display_name": "Bob B." },
        } })
    );
}

// ---------------------------------------------------------------------------------------------
// Sending and reading

#[tokio::test]
async fn send_is_idempotent_per_device_and_txn_id() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let first = alice.send_text(&room, "same-txn", "once").await;
    let again = alice.send_text(&room, "same-txn", "once (retry)").await;
    assert_eq!(first, again);
    assert_eq!(bodies(&history(&alice, &room).await), vec!["once"]);

    // The same transaction id from another device of the same user is another message.
    let (status, res) = s
        .client()
        .post(
            &format!("{V3}/login"),
            json!({ "type": "m.login.password", "user": "alice", "password": "secret-pw" }),
        )
        .await;
    assert_eq!(status, 200);
    let mut other = s.client();
    other.token = res["access_token"].as_str().map(str::to_owned);
    let second = other.send_text(&room, "same-txn", "from the phone").await;
    assert_ne!(first, second);
    assert_eq!(
        bodies(&history(&alice, &room).await),
        vec!["once", "from the phone"]
    );

    // The sending device sees its transaction id; other devices do not.
    let (_, ev) = alice
        .get(&room_path(&room, &format!("event/{}", enc(&first))))
        .await;
    assert_eq!(ev["unsigned"]["transaction_id"], "same-txn");
    let (_, ev) = other
        .get(&room_path(&room, &format!("event/{}", enc(&first))))
        .await;
    assert!(ev["unsigned"].get("transaction_id").is_none(), "{ev}");
}

/// The spec scopes a txnId to a device and an endpoint path: the same id sent to another room
/// or as another event type is a new request (a client counting per room, or several senders
/// sharing a token, as the `whatsapp` bench does). Only the same path is a retry.
#[tokio::test]
async fn send_txn_ids_are_scoped_to_the_room_and_event_type() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let first_room = alice.create_room(json!({})).await;
    let second_room = alice.create_room(json!({})).await;
    let in_first = alice
        .send_text(&first_room, "t1", "to the first room")
        .await;
    let in_second = alice
        .send_text(&second_room, "t1", "to the second room")
        .await;
    assert_ne!(in_first, in_second);
    let (status, custom) = alice
        .put(
            &room_path(&first_room, "send/org.example.note/t1"),
            json!({ "body": "another type" }),
        )
        .await;
    assert_eq!(status, 200, "{custom}");
    let custom = custom["event_id"].as_str().unwrap().to_owned();
    assert_ne!(custom, in_first);

    // Retries on each path answer with that path's event and add nothing.
    assert_eq!(
        alice.send_text(&second_room, "t1", "retry").await,
        in_second
    );
    assert_eq!(alice.send_text(&first_room, "t1", "retry").await, in_first);
    assert_eq!(
        bodies(&history(&alice, &first_room).await),
        vec!["to the first room"]
    );
    assert_eq!(
        bodies(&history(&alice, &second_room).await),
        vec!["to the second room"]
    );
    let (_, ev) = alice
        .get(&room_path(&first_room, &format!("event/{}", enc(&custom))))
        .await;
    assert_eq!(ev["type"], "org.example.note");
    assert_eq!(ev["content"], json!({ "body": "another type" }));
    assert_eq!(ev["unsigned"]["transaction_id"], "t1");
}

#[tokio::test]
async fn messages_paginate_both_ways() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let setup = history(&alice, &room).await.len();
    let sent: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
    for (i, b) in sent.iter().enumerate() {
        alice.send_text(&room, &format!("t{i}"), b).await;
    }

    // Backwards from the end, 10 at a time: newest first, then older, until `end` is absent.
    let page1 = messages(&alice, &room, "dir=b&limit=10").await;
    let chunk1 = page1["chunk"].as_array().unwrap();
    assert_eq!(
        bodies(chunk1),
        sent[15..].iter().rev().cloned().collect::<Vec<_>>()
    );
    assert!(page1["start"].is_string());
    let end1 = page1["end"].as_str().expect("more history").to_owned();
    let page2 = messages(&alice, &room, &format!("dir=b&limit=10&from={end1}")).await;
    assert_eq!(page2["start"], end1.as_str());
    let chunk2 = page2["chunk"].as_array().unwrap();
    assert_eq!(
        bodies(chunk2),
        sent[5..15].iter().rev().cloned().collect::<Vec<_>>()
    );
    let end2 = page2["end"].as_str().expect("more history").to_owned();
    let page3 = messages(&alice, &room, &format!("dir=b&limit=100&from={end2}")).await;
    let chunk3 = page3["chunk"].as_array().unwrap();
    assert_eq!(
        chunk3.len(),
        5 + setup,
        "the rest of the room, setup events included"
    );
    assert_eq!(
        bodies(chunk3),
        sent[..5].iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(chunk3.last().unwrap()["type"], "m.room.create");
    assert!(page3.get("end").is_none(), "end of history: {page3}");

    // Forwards from the start: oldest first, continuing with `end`.
    let mut forward = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = "dir=f&limit=8".to_owned();
        if let Some(f) = &from {
            q.push_str(&format!("&from={f}"));
        }
        let page = messages(&alice, &room, &q).await;
        pages += 1;
        forward.extend(page["chunk"].as_array().unwrap().iter().cloned());
        match page["end"].as_str() {
            Some(e) => from = Some(e.to_owned()),
            None => break,
        }
        assert!(pages < 20, "pagination does not end");
    }
    assert_eq!(forward.len(), setup + 25);
    assert_eq!(bodies(&forward), sent);
    assert_eq!(forward[0]["type"], "m.room.create");

    // A backwards page that starts where a forward page ended meets it without overlap.
    let page = messages(&alice, &room, "dir=f&limit=12").await;
    let ahead = page["end"].as_str().unwrap();
    let back = messages(&alice, &room, &format!("dir=b&limit=100&from={ahead}")).await;
    let mut back_ids = ids(back["chunk"].as_array().unwrap());
    back_ids.reverse();
    assert_eq!(back_ids, ids(page["chunk"].as_array().unwrap()));

    // `to` bounds a page: from the newest back to the token after page 1.
    let page = messages(&alice, &room, &format!("dir=b&limit=100&to={end1}")).await;
    assert_eq!(
        bodies(page["chunk"].as_array().unwrap()),
        sent[15..].iter().rev().cloned().collect::<Vec<_>>()
    );
    // And forwards, up to a token.
    let page = messages(
        &alice,
        &room,
        &format!("dir=f&limit=100&from={end2}&to={end1}"),
    )
    .await;
    assert_eq!(
        bodies(page["chunk"].as_array().unwrap()),
        sent[5..15].to_vec()
    );

    // A type filter.
    let filter = enc(r#"{"types":["m.room.message"]}"#);
    let page = messages(&alice, &room, &format!("dir=b&limit=30&filter={filter}")).await;
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 25);
    assert!(chunk.iter().all(|e| e["type"] == "m.room.message"));
    let filter = enc(r#"{"not_types":["m.room.message"]}"#);
    let page = messages(&alice, &room, &format!("dir=f&limit=30&filter={filter}")).await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), setup);
}

#[tokio::test]
async fn event_and_context() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({ "name": "ctx" })).await;
    let mut sent = Vec::new();
    for i in 0..9 {
        sent.push(
            alice
                .send_text(&room, &format!("t{i}"), &format!("m{i}"))
                .await,
        );
    }
    let (status, ev) = alice
        .get(&room_path(&room, &format!("event/{}", enc(&sent[4]))))
        .await;
    assert_eq!(status, 200);
    assert_eq!(ev["event_id"], sent[4].as_str());
    assert_eq!(ev["room_id"], room.as_str());
    assert_eq!(ev["sender"], "@alice:localhost");
    assert_eq!(ev["type"], "m.room.message");
    assert_eq!(ev["content"], json!({ "msgtype": "m.text", "body": "m4" }));
    assert!(ev["origin_server_ts"].is_u64());

    let (status, ctx) = alice
        .get(&room_path(
            &room,
            &format!("context/{}?limit=4", enc(&sent[4])),
        ))
        .await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], sent[4].as_str());
    // events_before is reverse-chronological, events_after chronological.
    assert_eq!(
        ids(ctx["events_before"].as_array().unwrap()),
        vec![sent[3].clone(), sent[2].clone()]
    );
    assert_eq!(
        ids(ctx["events_after"].as_array().unwrap()),
        vec![sent[5].clone(), sent[6].clone()]
    );
    let state_types: Vec<&str> = ctx["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for t in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.name",
    ] {
        assert!(state_types.contains(&t), "{t} in {state_types:?}");
    }
    // `start` and `end` continue the context through /messages.
    let before = messages(
        &alice,
        &room,
        &format!("dir=b&limit=2&from={}", ctx["start"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        ids(before["chunk"].as_array().unwrap()),
        vec![sent[1].clone(), sent[0].clone()]
    );
    let after = messages(
        &alice,
        &room,
        &format!("dir=f&limit=2&from={}", ctx["end"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        ids(after["chunk"].as_array().unwrap()),
        vec![sent[7].clone(), sent[8].clone()]
    );

    // An event of another room is not found through this one.
    let other = alice.create_room(json!({})).await;
    let (status, body) = alice
        .get(&room_path(&other, &format!("event/{}", enc(&sent[4]))))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn redaction_by_sender_and_power() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    assert_eq!(carol.join(&room).await.0, 200);
    let bob_msg = bob.send_text(&room, "b1", "oops").await;
    let carol_msg = carol.send_text(&room, "c1", "carol's").await;

    // Bob redacts his own message.
    let (status, body) = bob
        .put(
            &room_path(&room, &format!("redact/{}/r1", enc(&bob_msg))),
            json!({ "reason": "typo" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let redaction = body["event_id"].as_str().unwrap().to_owned();
    // Idempotent on the transaction id.
    let (_, again) = bob
        .put(
            &room_path(&room, &format!("redact/{}/r1", enc(&bob_msg))),
            json!({ "reason": "typo" }),
        )
        .await;
    assert_eq!(again["event_id"], redaction.as_str());

    let (status, ev) = carol
        .get(&room_path(&room, &format!("event/{}", enc(&bob_msg))))
        .await;
    assert_eq!(status, 200);
    assert_eq!(ev["content"], json!({}));
    assert_eq!(ev["type"], "m.room.message");
    let because = &ev["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction.as_str());
    assert_eq!(because["type"], "m.room.redaction");
    assert_eq!(because["sender"], "@bob:localhost");
    assert_eq!(because["content"]["reason"], "typo");
    assert_eq!(because["content"]["redacts"], bob_msg.as_str());
    let events = history(&carol, &room).await;
    let in_history = events
        .iter()
        .find(|e| e["event_id"] == bob_msg.as_str())
        .unwrap();
    assert_eq!(in_history["content"], json!({}));
    assert_eq!(
        in_history["unsigned"]["redacted_because"]["event_id"],
        redaction.as_str()
    );
    let redaction_event = events
        .iter()
        .find(|e| e["event_id"] == redaction.as_str())
        .unwrap();
    // Room v11 moved `redacts` into the content; the top-level copy stays for older clients
    // (as Synapse serves it).
    assert_eq!(redaction_event["content"]["redacts"], bob_msg.as_str());
    assert_eq!(
        redaction_event["redacts"],
        bob_msg.as_str(),
        "{redaction_event}"
    );

    // Bob (power 0) cannot redact Carol's message.
    let before = ids(&history(&alice, &room).await);
    let (status, body) = bob
        .put(
            &room_path(&room, &format!("redact/{}/r2", enc(&carol_msg))),
            json!({}),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    assert_eq!(ids(&history(&alice, &room).await), before);
    let (_, ev) = carol
        .get(&room_path(&room, &format!("event/{}", enc(&carol_msg))))
        .await;
    assert_eq!(ev["content"]["body"], "carol's");

    // Alice (power 100) can.
    let (status, _) = alice
        .put(
            &room_path(&room, &format!("redact/{}/a1", enc(&carol_msg))),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, ev) = carol
        .get(&room_path(&room, &format!("event/{}", enc(&carol_msg))))
        .await;
    assert_eq!(ev["content"], json!({}));
    assert_eq!(
        ev["unsigned"]["redacted_because"]["sender"],
        "@alice:localhost"
    );

    // Redacting a state event strips the current state too, keeping what the room version
    // preserves (`membership` for member events).
    let (_, res) = alice
        .put(
            &room_path(&room, "state/m.room.topic/"),
            json!({ "topic": "t" }),
        )
        .await;
    let topic_event = res["event_id"].as_str().unwrap().to_owned();
    let (status, _) = alice
        .put(
            &room_path(&room, &format!("redact/{}/a2", enc(&topic_event))),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(state_ok(&carol, &room, "m.room.topic", "").await, json!({}));
    let (_, res) = carol
        .put(
            &format!("{V3}/profile/{}/displayname", enc("@carol:localhost")),
            json!({ "displayname": "Carol C." }),
        )
        .await;
    assert_eq!(res, json!({}));
    let carol_member = full_state(&carol, &room)
        .await
        .into_iter()
        .find(|e| e["state_key"] == "@carol:localhost")
        .unwrap();
    let (status, _) = carol
        .put(
            &room_path(
                &room,
                &format!(
                    "redact/{}/c2",
                    enc(carol_member["event_id"].as_str().unwrap())
                ),
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        state_ok(&alice, &room, "m.room.member", "@carol:localhost").await,
        json!({ "membership": "join" })
    );
    // An event that does not exist cannot be redacted.
    let (status, body) = alice
        .put(
            &room_path(&room, &format!("redact/{}/a3", enc("$nosuchevent"))),
            json!({}),
        )
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn departed_member_reads_the_room_up_to_leaving() {
    let (_s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let (status, _) = alice
        .put(
            &room_path(&room, "state/m.room.topic/"),
            json!({ "topic": "before" }),
        )
        .await;
    assert_eq!(status, 200);
    alice.send_text(&room, "t1", "while bob is in").await;
    assert_eq!(bob.post(&room_path(&room, "leave"), json!({})).await.0, 200);
    let later = alice.send_text(&room, "t2", "after bob left").await;
    let (status, _) = alice
        .put(
            &room_path(&room, "state/m.room.topic/"),
            json!({ "topic": "after" }),
        )
        .await;
    assert_eq!(status, 200);

    // The spec lets a former member read the room as it was when they left (as Synapse does).
    let events = history(&bob, &room).await;
    assert_eq!(bodies(&events), vec!["while bob is in"]);
    let last = events.last().unwrap();
    assert_eq!(last["state_key"], "@bob:localhost");
    assert_eq!(last["content"]["membership"], "leave");
    assert_eq!(
        state_ok(&bob, &room, "m.room.topic", "").await,
        json!({ "topic": "before" })
    );
    let (status, topic) = bob.get(&room_path(&room, "state/m.room.topic")).await;
    assert_eq!((status, topic), (200, json!({ "topic": "before" })));
    let own = full_state(&bob, &room)
        .await
        .into_iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost")
        .unwrap();
    assert_eq!(own["content"]["membership"], "leave");
    let (status, body) = bob
        .get(&room_path(&room, &format!("event/{}", enc(&later))))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // Still no writing.
    let (status, body) = send(
        &bob,
        &room,
        "b1",
        json!({ "msgtype": "m.text", "body": "x" }),
    )
    .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");

    // Once forgotten, the history is gone for him.
    assert_eq!(
        bob.post(&room_path(&room, "forget"), json!({})).await.0,
        200
    );
    for path in [
        room_path(&room, "messages?dir=b"),
        room_path(&room, "state"),
    ] {
        let (status, body) = bob.get(&path).await;
        assert_error(status, &body, 403, "M_FORBIDDEN");
    }
}

// ---------------------------------------------------------------------------------------------
// History visibility

#[tokio::test]
async fn shared_history_is_visible_to_later_members() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let early = alice.send_text(&room, "t1", "before bob").await;
    assert_eq!(invite(&alice, &room, "@bob:localhost").await.0, 200);
    assert_eq!(bob.join(&room).await.0, 200);
    alice.send_text(&room, "t2", "after bob").await;
    assert_eq!(
        bodies(&history(&bob, &room).await),
        vec!["before bob", "after bob"]
    );
    let (status, _) = bob
        .get(&room_path(&room, &format!("event/{}", enc(&early))))
        .await;
    assert_eq!(status, 200);
    let sync = bob.sync(None, 0).await;
    assert_eq!(
        timeline_bodies(&sync, &room),
        vec!["before bob", "after bob"]
    );
}

#[tokio::test]
async fn joined_history_hides_what_came_before_the_join() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "private_chat" })).await;
    let (status, _) = alice
        .put(
            &room_path(&room, "state/m.room.history_visibility/"),
            json!({ "history_visibility": "joined" }),
        )
        .await;
    assert_eq!(status, 200);
    let early = alice.send_text(&room, "t1", "secret").await;
    assert_eq!(invite(&alice, &room, "@bob:localhost").await.0, 200);
    alice.send_text(&room, "t2", "while invited").await;
    assert_eq!(bob.join(&room).await.0, 200);
    alice.send_text(&room, "t3", "welcome").await;

    assert_eq!(bodies(&history(&bob, &room).await), vec!["welcome"]);
    let (status, body) = bob
        .get(&room_path(&room, &format!("event/{}", enc(&early))))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let sync = bob.sync(None, 0).await;
    assert_eq!(timeline_bodies(&sync, &room), vec!["welcome"]);
    // Bob sees his own membership events, though.
    let own: Vec<String> = history(&bob, &room)
        .await
        .iter()
        .filter(|e| e["state_key"] == "@bob:localhost")
        .map(|e| e["content"]["membership"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(own, vec!["invite", "join"]);
    // Alice still sees everything.
    assert_eq!(
        bodies(&history(&alice, &room).await),
        vec!["secret", "while invited", "welcome"]
    );
}

// ---------------------------------------------------------------------------------------------
// Aliases and the directory

#[tokio::test]
async fn alias_create_get_delete() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let other = alice.create_room(json!({})).await;
    let alias = enc("#soporte:localhost");
    let path = format!("{V3}/directory/room/{alias}");

    let (status, body) = alice.put(&path, json!({ "room_id": room })).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = bob.get(&path).await;
    assert_eq!(
        (status, body),
        (200, json!({ "room_id": room, "servers": ["localhost"] }))
    );
    let (status, body) = alice.put(&path, json!({ "room_id": other })).await;
    assert_error(status, &body, 409, "M_UNKNOWN");
    assert_eq!(bob.get(&path).await.1["room_id"], room.as_str());
    let (_, aliases) = alice.get(&room_path(&room, "aliases")).await;
    assert_eq!(aliases, json!({ "aliases": ["#soporte:localhost"] }));

    // An alias on another server is refused.
    let (status, body) = alice
        .put(
            &format!("{V3}/directory/room/{}", enc("#x:elsewhere.org")),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Bob, joined without power, cannot delete Alice's alias.
    assert_eq!(bob.join(&room).await.0, 200);
    let (status, body) = bob.delete(&path, json!({})).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = alice.delete(&path, json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = bob.get(&path).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice.delete(&path, json!({})).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // Freed: it can point elsewhere now.
    let (status, _) = alice.put(&path, json!({ "room_id": other })).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn public_room_directory_pagination_and_search() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let names = [
        "Ventas",
        "Soporte técnico",
        "Facturación",
        "Soporte VIP",
        "General",
    ];
    let mut all = Vec::new();
    for name in names {
        all.push(
            alice
                .create_room(json!({ "visibility": "public", "name": name, "topic": format!("Sala {name}") }))
                .await,
        );
    }
    all.sort();

    // GET with limit and since.
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("{V3}/publicRooms?limit=2");
        if let Some(t) = &since {
            path.push_str(&format!("&since={}", enc(t)));
        }
        let (status, page) = s.client().get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let chunk = page["chunk"].as_array().unwrap();
        assert!(chunk.len() <= 2);
        assert_eq!(page["total_room_count_estimate"], 5);
        if pages > 1 {
            assert!(page["prev_batch"].is_string(), "{page}");
        }
        seen.extend(
            chunk
                .iter()
                .map(|r| r["room_id"].as_str().unwrap().to_owned()),
        );
        match page["next_batch"].as_str() {
            Some(n) => since = Some(n.to_owned()),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, all, "every room exactly once");

    // POST with a search term, paginated as well.
    let (status, page) = alice
        .post(
            &format!("{V3}/publicRooms"),
            json!({ "limit": 1, "filter": { "generic_search_term": "soporte" } }),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let first = page["chunk"].as_array().unwrap().clone();
    assert_eq!(first.len(), 1);
    let next = page["next_batch"]
        .as_str()
        .expect("a second match")
        .to_owned();
    let (_, page) = alice
        .post(
            &format!("{V3}/publicRooms"),
            json!({ "limit": 1, "since": next, "filter": { "generic_search_term": "soporte" } }),
        )
        .await;
    let second = page["chunk"].as_array().unwrap().clone();
    assert_eq!(second.len(), 1);
    assert!(page.get("next_batch").is_none(), "{page}");
    let mut found: Vec<&str> = first
        .iter()
        .chain(second.iter())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    found.sort();
    assert_eq!(found, vec!["Soporte VIP", "Soporte técnico"]);
    // The topic is searched too.
    let (_, page) = alice
        .post(
            &format!("{V3}/publicRooms"),
            json!({ "filter": { "generic_search_term": "sala general" } }),
        )
        .await;
    let names: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["General"]);
    let (_, page) = alice
        .post(
            &format!("{V3}/publicRooms"),
            json!({ "filter": { "generic_search_term": "nothing matches" } }),
        )
        .await;
    assert_eq!(page["chunk"], json!([]));

    // Unpublishing removes a room.
    let (status, _) = alice
        .put(
            &format!("{V3}/directory/list/room/{}", enc(&all[0])),
            json!({ "visibility": "private" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, page) = s.client().get(&format!("{V3}/publicRooms")).await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 4);
}

// ---------------------------------------------------------------------------------------------
// /sync

#[tokio::test]
async fn sync_long_poll_returns_when_a_message_arrives() {
    let (_s, alice, bob, room) = alice_and_bob_in_a_public_room().await;
    let since = next_batch(&bob.sync(None, 0).await);

    let waiter = {
        let bob = bob.clone();
        let since = since.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let body = bob.sync(Some(&since), 20_000).await;
            (body, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "an incremental sync with nothing new waits"
    );
    alice.send_text(&room, "t1", "wake up").await;
    let (body, elapsed) = waiter.await.unwrap();
    assert_eq!(timeline_bodies(&body, &room), vec!["wake up"]);
    assert_ne!(next_batch(&body), since);
    assert!(
        elapsed < Duration::from_secs(10),
        "woken by the message, not by the 20 s timeout: {elapsed:?}"
    );
}

#[tokio::test]
async fn incremental_sync_has_only_changed_rooms() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let a = alice.create_room(json!({ "name": "a" })).await;
    let b = alice.create_room(json!({ "name": "b" })).await;
    let c = alice.create_room(json!({ "name": "c" })).await;
    let initial = alice.sync(None, 0).await;
    let mut all = vec![a.clone(), b.clone(), c.clone()];
    all.sort();
    assert_eq!(joined_ids(&initial), all);

    alice.send_text(&b, "t1", "only b").await;
    let sync = alice.sync(Some(&next_batch(&initial)), 0).await;
    assert_eq!(joined_ids(&sync), vec![b.clone()]);
    let timeline = &sync["rooms"]["join"][&b]["timeline"];
    assert_eq!(timeline_bodies(&sync, &b), vec!["only b"]);
    assert_ne!(timeline["limited"], true, "{timeline}");
    assert_eq!(timeline["events"].as_array().unwrap().len(), 1);
    // No state repeated in an incremental sync without state changes.
    assert!(
        sync["rooms"]["join"][&b]["state"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{sync}"
    );

    // A state change in c: only c, with the event in its timeline.
    let (status, _) = alice
        .put(
            &room_path(&c, "state/m.room.topic/"),
            json!({ "topic": "new" }),
        )
        .await;
    assert_eq!(status, 200);
    let sync2 = alice.sync(Some(&next_batch(&sync)), 0).await;
    assert_eq!(joined_ids(&sync2), vec![c.clone()]);
    let events = sync2["rooms"]["join"][&c]["timeline"]["events"]
        .as_array()
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "m.room.topic");
    // Nothing new: an empty answer at the timeout.
    let sync3 = alice.sync(Some(&next_batch(&sync2)), 0).await;
    assert!(joined_ids(&sync3).is_empty(), "{sync3}");
}

#[tokio::test]
async fn limited_sync_prev_batch_continues_in_messages() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..12 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let filter = enc(r#"{"room":{"timeline":{"limit":2}}}"#);
    let (status, sync) = alice.get(&format!("{V3}/sync?filter={filter}")).await;
    assert_eq!(status, 200);
    let timeline = &sync["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], true);
    assert_eq!(timeline_bodies(&sync, &room), vec!["m10", "m11"]);
    let prev = timeline["prev_batch"].as_str().expect("prev_batch");

    // /messages from prev_batch continues right before the timeline: no gap, no duplicate.
    let mut older = Vec::new();
    let mut from = prev.to_owned();
    loop {
        let page = messages(&alice, &room, &format!("dir=b&limit=4&from={from}")).await;
        older.extend(page["chunk"].as_array().unwrap().iter().cloned());
        match page["end"].as_str() {
            Some(e) => from = e.to_owned(),
            None => break,
        }
    }
    older.reverse();
    let mut combined = ids(&older);
    combined.extend(ids(timeline["events"].as_array().unwrap()));
    assert_eq!(combined, ids(&history(&alice, &room).await));
    assert_eq!(
        bodies(&older),
        (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );

    // The state before a limited timeline is in `state`.
    let state_types: Vec<&str> = sync["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for t in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
    ] {
        assert!(state_types.contains(&t), "{t} in {state_types:?}");
    }

    // An incremental sync with more new events than the limit is limited too.
    let since = next_batch(&sync);
    for i in 12..17 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let (_, sync) = alice
        .get(&format!("{V3}/sync?filter={filter}&since={since}"))
        .await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], true);
    assert_eq!(timeline_bodies(&sync, &room), vec!["m15", "m16"]);
    let page = messages(
        &alice,
        &room,
        &format!(
            "dir=b&limit=3&from={}",
            timeline["prev_batch"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        bodies(page["chunk"].as_array().unwrap()),
        vec!["m14", "m13", "m12"]
    );
}

#[tokio::test]
async fn sync_shows_invites_and_leaves() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice
        .create_room(json!({ "preset": "private_chat", "name": "Invitación" }))
        .await;
    let since = next_batch(&bob.sync(None, 0).await);
    alice.send_text(&room, "t0", "sent before the invite").await;
    assert_eq!(invite(&alice, &room, "@bob:localhost").await.0, 200);

    let sync = bob.sync(Some(&since), 0).await;
    let invite_state = sync["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("rooms.invite has the room")
        .clone();
    assert!(sync["rooms"]["join"].get(&room).is_none());
    let find = |t: &str| {
        invite_state
            .iter()
            .find(|e| e["type"] == t)
            .unwrap_or_else(|| panic!("{t} in invite_state: {invite_state:?}"))
            .clone()
    };
    assert_eq!(
        find("m.room.name")["content"],
        json!({ "name": "Invitación" })
    );
    assert_eq!(
        find("m.room.join_rules")["content"],
        json!({ "join_rule": "invite" })
    );
    assert_eq!(find("m.room.create")["sender"], "@alice:localhost");
    let me = find("m.room.member");
    assert_eq!(me["state_key"], "@bob:localhost");
    assert_eq!(me["content"]["membership"], "invite");
    // Stripped state: no event ids, no timeline messages.
    for e in &invite_state {
        assert!(e.get("event_id").is_none(), "{e}");
        assert_ne!(e["type"], "m.room.message");
    }
    let since = next_batch(&sync);

    // The invite is not repeated in the next incremental sync.
    let sync = bob.sync(Some(&since), 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_none(), "{sync}");

    // Joining moves the room to rooms.join, whole: it is new to the client.
    assert_eq!(bob.join(&room).await.0, 200);
    let sync = bob.sync(Some(&since), 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_none());
    let joined = &sync["rooms"]["join"][&room];
    // What is not in the timeline is in `state` (absent when the timeline holds it all).
    let mut seen: Vec<&str> = joined["state"]["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .chain(joined["timeline"]["events"].as_array().unwrap().iter())
        .filter(|e| e.get("state_key").is_some())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    for t in [
        "m.room.create",
        "m.room.join_rules",
        "m.room.name",
        "m.room.power_levels",
    ] {
        assert!(seen.contains(&t), "{t} in {seen:?}");
    }
    assert_eq!(
        timeline_bodies(&sync, &room),
        vec!["sent before the invite"],
        "shared history shows once joined"
    );
    let since = next_batch(&sync);
    let (status, _) = bob.post(&room_path(&room, "leave"), json!({})).await;
    assert_eq!(status, 200);
    let sync = bob.sync(Some(&since), 0).await;
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
    let left = &sync["rooms"]["leave"][&room]["timeline"]["events"];
    let last = left
        .as_array()
        .expect("rooms.leave has the room")
        .last()
        .unwrap();
    assert_eq!(last["type"], "m.room.member");
    assert_eq!(last["state_key"], "@bob:localhost");
    assert_eq!(last["content"]["membership"], "leave");
    // Later messages in the room do not reach Bob.
    let since = next_batch(&sync);
    alice.send_text(&room, "t1", "after bob left").await;
    let sync = bob.sync(Some(&since), 0).await;
    assert!(sync["rooms"]["leave"].get(&room).is_none(), "{sync}");
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");

    // A rejected invite (leave while invited) is a leave too.
    let other = alice.create_room(json!({})).await;
    assert_eq!(invite(&alice, &other, "@bob:localhost").await.0, 200);
    let since = next_batch(&bob.sync(Some(&since), 0).await);
    assert_eq!(
        bob.post(&room_path(&other, "leave"), json!({})).await.0,
        200
    );
    let sync = bob.sync(Some(&since), 0).await;
    assert!(sync["rooms"]["leave"].get(&other).is_some(), "{sync}");
    assert!(sync["rooms"]["invite"].get(&other).is_none(), "{sync}");
}

#[tokio::test]
async fn former_member_sees_members_as_of_leaving() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    assert_eq!(
        bob.post(&format!("{V3}/rooms/{}/leave", enc(&room)), json!({}))
            .await
            .0,
        200
    );
    assert_eq!(carol.join(&room).await.0, 200);

    let members = |body: &Value| {
        let mut m: Vec<(String, String)> = body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["state_key"].as_str().unwrap().to_owned(),
                    e["content"]["membership"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        m.sort();
        m
    };
    let (status, body) = bob.get(&format!("{V3}/rooms/{}/members", enc(&room))).await;
    assert_eq!(status, 200, "{body}");
    let pair = |u: &str, m: &str| (u.to_owned(), m.to_owned());
    // Carol joined after Bob left: Bob's view stops at his departure.
    assert_eq!(
        members(&body),
        vec![
            pair("@alice:localhost", "join"),
            pair("@bob:localhost", "leave")
        ]
    );
    let (status, body) = carol
        .get(&format!("{V3}/rooms/{}/members", enc(&room)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        members(&body),
        vec![
            pair("@alice:localhost", "join"),
            pair("@bob:localhost", "leave"),
            pair("@carol:localhost", "join")
        ]
    );
}

#[tokio::test]
async fn canonical_alias_must_point_to_the_room() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let other = alice
        .create_room(json!({ "room_alias_name": "other" }))
        .await;
    let path = format!("{V3}/rooms/{}/state/m.room.canonical_alias", enc(&room));
    // Unknown alias, and an alias of another room: refused, and nothing changes.
    let (status, body) = alice
        .put(&path, json!({ "alias": "#nowhere:localhost" }))
        .await;
    assert_error(status, &body, 400, "M_BAD_ALIAS");
    let (status, body) = alice
        .put(&path, json!({ "alias": "#other:localhost" }))
        .await;
    assert_error(status, &body, 400, "M_BAD_ALIAS");
    assert_eq!(alice.get(&path).await.0, 404);
    // An alias of this room is accepted.
    let (status, _) = alice
        .put(
            &format!("{V3}/directory/room/{}", enc("#mine:localhost")),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = alice
        .put(&path, json!({ "alias": "#mine:localhost" }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        alice.get(&path).await.1,
        json!({ "alias": "#mine:localhost" })
    );
    assert_ne!(room, other);
}
