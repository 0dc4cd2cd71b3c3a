//! Who may read a room's state (#18 item 16): an invited or banned user who never joined
//! could read the full `/state` and `/members` of a room whose history is `joined`, because
//! their own membership event (which they may always see) was the room's latest event.

use serde_json::json;

use crate::common::{Client, TestServer, V3, assert_error, enc};

async fn state_reads(c: &Client, room: &str) -> Vec<(String, u16, serde_json::Value)> {
    let mut out = Vec::new();
    for path in [
        format!("{V3}/rooms/{}/state", enc(room)),
        format!("{V3}/rooms/{}/members", enc(room)),
        format!("{V3}/rooms/{}/joined_members", enc(room)),
        format!("{V3}/rooms/{}/state/m.room.topic", enc(room)),
        format!("{V3}/rooms/{}/messages?dir=b", enc(room)),
    ] {
        let (status, body) = c.get(&path).await;
        out.push((path, status, body));
    }
    out
}

#[tokio::test]
async fn invited_or_banned_users_who_never_joined_cannot_read_the_room() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat",
            "topic": "salaries 2027",
            "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                                "content": { "history_visibility": "joined" } }],
        }))
        .await;
    let (status, _) = alice
        .post(
            &format!("{V3}/rooms/{}/invite", enc(&room)),
            json!({ "user_id": "@bob:localhost" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .post(
            &format!("{V3}/rooms/{}/ban", enc(&room)),
            json!({ "user_id": "@carol:localhost" }),
        )
        .await;
    assert_eq!(status, 200);
    // Bob's invite and Carol's ban are the room's latest events in turn.
    for who in [&bob, &carol] {
        for (path, status, body) in state_reads(who, &room).await {
            assert_eq!(status, 403, "{path}: {body}");
            assert_error(status, &body, 403, "M_FORBIDDEN");
        }
    }
    // Bob still sees his invite, with its stripped state, through /sync.
    let sync = bob.sync(None, 0).await;
    let invite_state = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        invite_state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost"),
        "{sync}"
    );
    // Once joined he reads the room.
    assert_eq!(bob.join(&room).await.0, 200);
    let (status, body) = bob
        .get(&format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)))
        .await;
    assert_eq!(
        (status, body["topic"].as_str()),
        (200, Some("salaries 2027"))
    );
}

#[tokio::test]
async fn a_world_readable_room_is_readable_by_anyone_and_a_former_member_sees_it_as_they_left() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let stranger = s.user("stranger").await;
    let open = alice
        .create_room(json!({
            "preset": "public_chat",
            "topic": "announcements",
            "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                                "content": { "history_visibility": "world_readable" } }],
        }))
        .await;
    let (status, body) = stranger
        .get(&format!("{V3}/rooms/{}/state/m.room.topic", enc(&open)))
        .await;
    assert_eq!(
        (status, body["topic"].as_str()),
        (200, Some("announcements"))
    );

    let room = alice
        .create_room(json!({ "preset": "public_chat", "topic": "before" }))
        .await;
    assert_eq!(bob.join(&room).await.0, 200);
    let (status, _) = bob
        .post(&format!("{V3}/rooms/{}/leave", enc(&room)), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .put(
            &format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)),
            json!({ "topic": "after" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = bob
        .get(&format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)))
        .await;
    assert_eq!((status, body["topic"].as_str()), (200, Some("before")));
}
