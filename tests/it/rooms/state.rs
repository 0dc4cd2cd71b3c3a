//! Room state by type and key, and who is in which room.

use super::*;

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
