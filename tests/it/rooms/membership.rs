//! Membership: invites, joins, leaving and forgetting, kicks, bans, and the power they need.

use super::*;

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
