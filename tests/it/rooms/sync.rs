//! `/sync`: long polls, incremental and limited syncs, invites and leaves.

use super::*;

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
