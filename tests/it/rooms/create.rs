//! `/createRoom`: presets, aliases, names and topics, initial state, invites.

use super::*;

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
