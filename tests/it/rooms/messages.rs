//! Sending and reading: transaction ids, `/messages`, `/event`, `/context`, redaction, and
//! what a departed member still reads.

use super::*;

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
