//! Event relationships against the Client-Server API v1.16: edits (`m.replace`), reactions
//! (`m.annotation`), threads (`m.thread`), references, `/relations`, `/threads` and the bundled
//! aggregations on `/event`, `/messages`, `/context` and `/sync`.

use crate::common::{Client, TestServer, V3, assert_error, enc};
use serde_json::{Value, json};

const V1: &str = "/_matrix/client/v1";

/// Alice creates a public room, Bob and Carol join it.
async fn room_with_three() -> (TestServer, Client, Client, Client, String) {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    assert_eq!(carol.join(&room).await.0, 200);
    (s, alice, bob, carol, room)
}

/// Sends an event of any type; returns the status and body.
async fn send_event(c: &Client, room: &str, kind: &str, txn: &str, content: Value) -> (u16, Value) {
    c.put(
        &format!("{V3}/rooms/{}/send/{kind}/{txn}", enc(room)),
        content,
    )
    .await
}

async fn send_ok(c: &Client, room: &str, kind: &str, txn: &str, content: Value) -> String {
    let (status, body) = send_event(c, room, kind, txn, content).await;
    assert_eq!(status, 200, "send {kind}: {body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn edit(c: &Client, room: &str, txn: &str, target: &str, text: &str) -> String {
    send_ok(
        c,
        room,
        "m.room.message",
        txn,
        json!({
            "msgtype": "m.text",
            "body": format!("* {text}"),
            "m.new_content": { "msgtype": "m.text", "body": text },
            "m.relates_to": { "rel_type": "m.replace", "event_id": target },
        }),
    )
    .await
}

async fn react(c: &Client, room: &str, txn: &str, target: &str, key: &str) -> (u16, Value) {
    send_event(
        c,
        room,
        "m.reaction",
        txn,
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } }),
    )
    .await
}

async fn reply_in_thread(c: &Client, room: &str, txn: &str, root: &str, text: &str) -> String {
    send_ok(
        c,
        room,
        "m.room.message",
        txn,
        json!({
            "msgtype": "m.text",
            "body": text,
            "m.relates_to": { "rel_type": "m.thread", "event_id": root },
        }),
    )
    .await
}

async fn redact(c: &Client, room: &str, txn: &str, target: &str) {
    let (status, body) = c
        .put(
            &format!("{V3}/rooms/{}/redact/{}/{txn}", enc(room), enc(target)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "redact: {body}");
}

async fn get_event(c: &Client, room: &str, id: &str) -> Value {
    let (status, body) = c
        .get(&format!("{V3}/rooms/{}/event/{}", enc(room), enc(id)))
        .await;
    assert_eq!(status, 200, "event: {body}");
    body
}

/// `GET /relations/{id}[/rest]?query`, expecting 200.
async fn relations(c: &Client, room: &str, id: &str, rest: &str, query: &str) -> Value {
    let (status, body) = c
        .get(&format!(
            "{V1}/rooms/{}/relations/{}{rest}?{query}",
            enc(room),
            enc(id)
        ))
        .await;
    assert_eq!(status, 200, "relations {rest}?{query}: {body}");
    body
}

async fn threads(c: &Client, room: &str, query: &str) -> Value {
    let (status, body) = c
        .get(&format!("{V1}/rooms/{}/threads?{query}", enc(room)))
        .await;
    assert_eq!(status, 200, "threads?{query}: {body}");
    body
}

fn ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn find<'a>(events: &'a Value, id: &str) -> &'a Value {
    events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {events}"))
}

/// Asserts that `bundle` is exactly the edit `edit_id` by `sender` with `text` as new content.
fn assert_edit_bundle(bundle: &Value, edit_id: &str, target: &str, sender: &str, text: &str) {
    assert_eq!(bundle["event_id"], edit_id, "{bundle}");
    assert_eq!(bundle["sender"], sender);
    assert_eq!(bundle["type"], "m.room.message");
    assert_eq!(
        bundle["content"],
        json!({
            "msgtype": "m.text",
            "body": format!("* {text}"),
            "m.new_content": { "msgtype": "m.text", "body": text },
            "m.relates_to": { "rel_type": "m.replace", "event_id": target },
        })
    );
    assert!(bundle["origin_server_ts"].is_u64());
}

#[tokio::test]
async fn edit_is_bundled_on_event_messages_context_and_sync() {
    let (s, alice, bob, _carol, room) = room_with_three().await;
    let original = alice.send_text(&room, "t1", "helo").await;
    let after = alice.send_text(&room, "t2", "next").await;
    // Read once before the edit, so a cached copy must not hide the edit afterwards.
    assert!(
        get_event(&bob, &room, &original).await["unsigned"]
            .get("m.relations")
            .is_none()
    );
    let edit_id = edit(&alice, &room, "t3", &original, "hello").await;

    // /event: the original content stays, the edit is bundled in full.
    let event = get_event(&bob, &room, &original).await;
    assert_eq!(
        event["content"],
        json!({ "msgtype": "m.text", "body": "helo" })
    );
    let relations = &event["unsigned"]["m.relations"];
    assert_eq!(relations.as_object().unwrap().len(), 1, "{relations}");
    assert_edit_bundle(
        &relations["m.replace"],
        &edit_id,
        &original,
        "@alice:localhost",
        "hello",
    );
    // The edit itself has no children.
    assert!(
        get_event(&bob, &room, &edit_id).await["unsigned"]
            .get("m.relations")
            .is_none()
    );
    // Events without children carry no `m.relations`.
    assert!(
        get_event(&bob, &room, &after).await["unsigned"]
            .get("m.relations")
            .is_none()
    );

    // /messages: the original keeps its place (before `after`); the edit is a later event.
    let (status, page) = bob
        .get(&format!("{V3}/rooms/{}/messages?dir=b&limit=3", enc(&room)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&page["chunk"]),
        [edit_id.as_str(), after.as_str(), original.as_str()]
    );
    assert_edit_bundle(
        &find(&page["chunk"], &original)["unsigned"]["m.relations"]["m.replace"],
        &edit_id,
        &original,
        "@alice:localhost",
        "hello",
    );

    // /context
    let (status, ctx) = bob
        .get(&format!(
            "{V3}/rooms/{}/context/{}?limit=2",
            enc(&room),
            enc(&original)
        ))
        .await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], original.as_str());
    assert_edit_bundle(
        &ctx["event"]["unsigned"]["m.relations"]["m.replace"],
        &edit_id,
        &original,
        "@alice:localhost",
        "hello",
    );

    // /sync (initial): the timeline's original carries the bundle, without `room_id`.
    let sync = bob.sync(None, 0).await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    let bundle = &find(timeline, &original)["unsigned"]["m.relations"]["m.replace"];
    assert_edit_bundle(bundle, &edit_id, &original, "@alice:localhost", "hello");
    assert!(bundle.get("room_id").is_none(), "{bundle}");

    // The index and the parent's mark are durable: the bundle survives a restart.
    let s = s.restart().await;
    let mut bob = bob;
    bob.base = s.server.base_url();
    assert_edit_bundle(
        &get_event(&bob, &room, &original).await["unsigned"]["m.relations"]["m.replace"],
        &edit_id,
        &original,
        "@alice:localhost",
        "hello",
    );
}

#[tokio::test]
async fn invalid_edits_are_not_bundled_and_the_latest_valid_one_wins() {
    let (_s, alice, bob, _carol, room) = room_with_three().await;
    let original = alice.send_text(&room, "t1", "helo").await;
    // Another sender cannot edit Alice's message.
    let by_bob = edit(&bob, &room, "b1", &original, "hijacked").await;
    assert!(
        get_event(&alice, &room, &original).await["unsigned"]
            .get("m.relations")
            .is_none()
    );
    // Nor can an edit change the event type, or lack `m.new_content`.
    send_ok(
        &alice,
        &room,
        "m.sticker",
        "t2",
        json!({ "body": "x", "url": "mxc://localhost/x", "info": {},
                "m.new_content": { "body": "y" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": original } }),
    )
    .await;
    send_ok(
        &alice,
        &room,
        "m.room.message",
        "t3",
        json!({ "msgtype": "m.text", "body": "* no new content",
                "m.relates_to": { "rel_type": "m.replace", "event_id": original } }),
    )
    .await;
    assert!(
        get_event(&alice, &room, &original).await["unsigned"]
            .get("m.relations")
            .is_none()
    );

    // Two valid edits: the most recent (origin_server_ts, then the largest event id) wins.
    let first = edit(&alice, &room, "t4", &original, "hello").await;
    let second = edit(&alice, &room, "t5", &original, "hello!").await;
    let (e1, e2) = (
        get_event(&alice, &room, &first).await,
        get_event(&alice, &room, &second).await,
    );
    let key = |e: &Value| {
        (
            e["origin_server_ts"].as_u64().unwrap(),
            e["event_id"].as_str().unwrap().to_owned(),
        )
    };
    let (winner, text) = if key(&e2) >= key(&e1) {
        (&second, "hello!")
    } else {
        (&first, "hello")
    };
    let bundle = &get_event(&bob, &room, &original).await["unsigned"]["m.relations"];
    assert_edit_bundle(
        &bundle["m.replace"],
        winner,
        &original,
        "@alice:localhost",
        text,
    );

    // An edit of an edit is ignored: nothing bundles on the edit.
    edit(&alice, &room, "t6", &first, "edit of an edit").await;
    assert!(
        get_event(&alice, &room, &first).await["unsigned"]
            .get("m.relations")
            .is_none()
    );

    // Bob's invalid edit is still listed by /relations: the index keeps every child.
    let listed = relations(&alice, &room, &original, "/m.replace", "limit=10").await;
    assert!(ids(&listed["chunk"]).contains(&by_bob));

    // Redacting the original drops the m.replace bundle.
    redact(&alice, &room, "r1", &original).await;
    let event = get_event(&alice, &room, &original).await;
    assert_eq!(event["content"], json!({}));
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");
}

#[tokio::test]
async fn reactions_are_listed_paginated_and_deduplicated() {
    let (_s, alice, bob, carol, room) = room_with_three().await;
    let message = alice.send_text(&room, "t1", "question").await;
    let r1 = react(&bob, &room, "b1", &message, "👍").await.1["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r2 = react(&carol, &room, "c1", &message, "👍").await.1["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r3 = react(&bob, &room, "b2", &message, "🎉").await.1["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A plain reply to the message is not an annotation.
    alice.send_text(&room, "t2", "unrelated").await;

    // Annotations are not bundled.
    assert!(
        get_event(&alice, &room, &message).await["unsigned"]
            .get("m.relations")
            .is_none()
    );

    // Newest first, two per page.
    let page1 = relations(&alice, &room, &message, "/m.annotation", "limit=2").await;
    assert_eq!(ids(&page1["chunk"]), [r3.as_str(), r2.as_str()]);
    let summary: Vec<(String, String)> = page1["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["sender"].as_str().unwrap().to_owned(),
                e["content"]["m.relates_to"]["key"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("@bob:localhost".to_owned(), "🎉".to_owned()),
            ("@carol:localhost".to_owned(), "👍".to_owned())
        ]
    );
    assert!(page1.get("prev_batch").is_none(), "{page1}");
    let next = page1["next_batch"].as_str().expect("more pages");
    let page2 = relations(
        &alice,
        &room,
        &message,
        "/m.annotation",
        &format!("limit=2&from={next}"),
    )
    .await;
    assert_eq!(ids(&page2["chunk"]), [r1.as_str()]);
    assert!(page2.get("next_batch").is_none(), "{page2}");
    assert_eq!(page2["prev_batch"], next);
    // `to` stops before the children at or below the token.
    let bounded = relations(
        &alice,
        &room,
        &message,
        "/m.annotation",
        &format!("limit=10&to={next}"),
    )
    .await;
    assert_eq!(ids(&bounded["chunk"]), [r3.as_str(), r2.as_str()]);
    assert!(bounded.get("next_batch").is_none(), "{bounded}");

    // Forwards: oldest first. With the event type filter, the same three.
    let forward = relations(
        &alice,
        &room,
        &message,
        "/m.annotation/m.reaction",
        "dir=f&limit=10",
    )
    .await;
    assert_eq!(
        ids(&forward["chunk"]),
        [r1.as_str(), r2.as_str(), r3.as_str()]
    );
    assert_eq!(forward["chunk"][0]["room_id"], room.as_str());
    let other_type = relations(&alice, &room, &message, "/m.annotation/m.room.message", "").await;
    assert_eq!(other_type["chunk"], json!([]));

    // The same reaction twice is refused and stores nothing; another key is fine.
    let (status, body) = react(&bob, &room, "b3", &message, "👍").await;
    assert_error(status, &body, 400, "M_DUPLICATE_ANNOTATION");
    let all = relations(&alice, &room, &message, "", "limit=10").await;
    assert_eq!(ids(&all["chunk"]), [r3.as_str(), r2.as_str(), r1.as_str()]);
    // A retry of the first send (same txn) returns the first event, not an error.
    let (status, retry) = react(&bob, &room, "b1", &message, "👍").await;
    assert_eq!(
        (status, retry["event_id"].as_str()),
        (200, Some(r1.as_str()))
    );

    // Once redacted, the reaction leaves the list and may be sent again.
    redact(&bob, &room, "rb1", &r1).await;
    let listed = relations(&alice, &room, &message, "/m.annotation", "limit=10").await;
    assert_eq!(ids(&listed["chunk"]), [r3.as_str(), r2.as_str()]);
    let (status, again) = react(&bob, &room, "b4", &message, "👍").await;
    assert_eq!(status, 200, "{again}");
}

#[tokio::test]
async fn threads_are_listed_with_their_summary() {
    let (_s, alice, bob, carol, room) = room_with_three().await;
    let root = alice.send_text(&room, "t1", "Order #42 is late").await;
    let other_root = carol.send_text(&room, "c1", "Another topic").await;
    let reply1 = reply_in_thread(&bob, &room, "b1", &root, "checking").await;
    reply_in_thread(&carol, &room, "c2", &other_root, "anyone?").await;
    let reply2 = reply_in_thread(&alice, &room, "t2", &root, "thanks").await;
    let reply3 = reply_in_thread(&bob, &room, "b2", &root, "shipped today").await;

    // Most recently active first: `root` had the last reply.
    let list = threads(&bob, &room, "").await;
    assert_eq!(ids(&list["chunk"]), [root.as_str(), other_root.as_str()]);
    assert!(list.get("next_batch").is_none(), "{list}");
    let summary = &list["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 3);
    assert_eq!(summary["current_user_participated"], true);
    assert_eq!(summary["latest_event"]["event_id"], reply3.as_str());
    assert_eq!(summary["latest_event"]["sender"], "@bob:localhost");
    assert_eq!(summary["latest_event"]["content"]["body"], "shipped today");
    assert_eq!(summary["latest_event"]["room_id"], room.as_str());

    // Participation is per viewer: Alice sent the root, Carol took no part in it.
    let for_alice = &get_event(&alice, &room, &root).await["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(for_alice["current_user_participated"], true);
    let for_carol = threads(&carol, &room, "").await;
    let carol_summary = &find(&for_carol["chunk"], &root)["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(carol_summary["current_user_participated"], false);
    assert_eq!(carol_summary["count"], 3);

    // include=participated: Carol only sees her own thread, Bob only the first.
    let mine = threads(&carol, &room, "include=participated").await;
    assert_eq!(ids(&mine["chunk"]), [other_root.as_str()]);
    let bobs = threads(&bob, &room, "include=participated").await;
    assert_eq!(ids(&bobs["chunk"]), [root.as_str()]);

    // Pagination: one per page.
    let page1 = threads(&bob, &room, "limit=1").await;
    assert_eq!(ids(&page1["chunk"]), [root.as_str()]);
    let next = page1["next_batch"].as_str().unwrap();
    let page2 = threads(&bob, &room, &format!("limit=1&from={next}")).await;
    assert_eq!(ids(&page2["chunk"]), [other_root.as_str()]);
    assert!(page2.get("next_batch").is_none(), "{page2}");

    // An unknown `include` is refused.
    let (status, body) = bob
        .get(&format!("{V1}/rooms/{}/threads?include=some", enc(&room)))
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");

    // The thread's events, newest first, through /relations.
    let in_thread = relations(&bob, &room, &root, "/m.thread", "limit=10").await;
    assert_eq!(
        ids(&in_thread["chunk"]),
        [reply3.as_str(), reply2.as_str(), reply1.as_str()]
    );

    // A thread cannot start from an event that has a relation.
    let (status, body) = send_event(
        &bob,
        &room,
        "m.room.message",
        "b3",
        json!({ "msgtype": "m.text", "body": "nested",
                "m.relates_to": { "rel_type": "m.thread", "event_id": reply1 } }),
    )
    .await;
    assert_error(status, &body, 400, "M_UNKNOWN");
}

#[tokio::test]
async fn redacted_reply_leaves_the_thread() {
    let (_s, alice, bob, _carol, room) = room_with_three().await;
    let root = alice.send_text(&room, "t1", "root").await;
    let other_root = alice.send_text(&room, "t2", "other root").await;
    let reply1 = reply_in_thread(&bob, &room, "b1", &root, "one").await;
    reply_in_thread(&bob, &room, "b2", &other_root, "elsewhere").await;
    let reply2 = reply_in_thread(&bob, &room, "b3", &root, "two").await;

    // Redacting the latest reply: count and latest_event fall back to the previous reply, and
    // the thread's place in the list follows its new latest activity.
    redact(&bob, &room, "r1", &reply2).await;
    let list = threads(&alice, &room, "").await;
    assert_eq!(ids(&list["chunk"]), [other_root.as_str(), root.as_str()]);
    let summary = &find(&list["chunk"], &root)["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 1);
    assert_eq!(summary["latest_event"]["event_id"], reply1.as_str());
    let listed = relations(&alice, &room, &root, "", "limit=10").await;
    assert_eq!(ids(&listed["chunk"]), [reply1.as_str()]);

    // Redacting the last reply removes the thread from the list and the bundle from the root.
    redact(&bob, &room, "r2", &reply1).await;
    assert_eq!(
        ids(&threads(&alice, &room, "").await["chunk"]),
        [other_root.as_str()]
    );
    assert!(
        get_event(&alice, &room, &root).await["unsigned"]
            .get("m.relations")
            .is_none()
    );
}

#[tokio::test]
async fn references_are_bundled_and_recursion_follows_children() {
    let (_s, alice, bob, _carol, room) = room_with_three().await;
    let root = alice.send_text(&room, "t1", "poll").await;
    let reference = send_ok(
        &bob,
        &room,
        "m.room.message",
        "b1",
        json!({ "msgtype": "m.text", "body": "see above",
                "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
    )
    .await;
    let reaction = react(&alice, &room, "t2", &reference, "👀").await.1["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let event = get_event(&bob, &room, &root).await;
    assert_eq!(
        event["unsigned"]["m.relations"],
        json!({ "m.reference": { "chunk": [{ "event_id": reference }] } })
    );

    // Without recurse only the direct child; with it, the reaction to the child too.
    let direct = relations(&bob, &room, &root, "", "").await;
    assert_eq!(ids(&direct["chunk"]), [reference.as_str()]);
    assert!(direct.get("recursion_depth").is_none());
    let deep = relations(&bob, &room, &root, "", "recurse=true").await;
    assert_eq!(ids(&deep["chunk"]), [reaction.as_str(), reference.as_str()]);
    assert_eq!(deep["recursion_depth"], 3);
    // Filters apply to the returned events.
    let only_reactions = relations(&bob, &room, &root, "/m.annotation", "recurse=true").await;
    assert_eq!(ids(&only_reactions["chunk"]), [reaction.as_str()]);
}

#[tokio::test]
async fn relations_need_a_visible_parent() {
    let (s, alice, _bob, _carol, room) = room_with_three().await;
    let message = alice.send_text(&room, "t1", "hi").await;
    react(&alice, &room, "t2", &message, "👍").await;
    let outsider = s.user("mallory").await;

    // Not in the room: 403, as Synapse.
    for path in [
        format!("{V1}/rooms/{}/relations/{}", enc(&room), enc(&message)),
        format!("{V1}/rooms/{}/threads", enc(&room)),
    ] {
        let (status, body) = outsider.get(&path).await;
        assert_error(status, &body, 403, "M_FORBIDDEN");
    }
    // Unknown parent: 404.
    let (status, body) = alice
        .get(&format!(
            "{V1}/rooms/{}/relations/{}",
            enc(&room),
            enc("$unknown:localhost")
        ))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // A parent from another room: 404 too.
    let elsewhere = alice.create_room(json!({})).await;
    let (status, body) = alice
        .get(&format!(
            "{V1}/rooms/{}/relations/{}",
            enc(&elsewhere),
            enc(&message)
        ))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // No token: 401.
    let (status, body) = s
        .client()
        .get(&format!(
            "{V1}/rooms/{}/relations/{}",
            enc(&room),
            enc(&message)
        ))
        .await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN");
    // A bad token: 400.
    let (status, body) = alice
        .get(&format!(
            "{V1}/rooms/{}/relations/{}?from=nope",
            enc(&room),
            enc(&message)
        ))
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn relations_to_unknown_or_foreign_events_are_accepted_but_not_indexed() {
    let (_s, alice, _bob, _carol, room) = room_with_three().await;
    let elsewhere = alice.create_room(json!({})).await;
    let foreign = alice.send_text(&elsewhere, "e1", "other room").await;
    // Sending works (the spec says such relationships are ignored), nothing is aggregated.
    edit(&alice, &room, "t1", &foreign, "cross-room edit").await;
    react(&alice, &room, "t2", "$unknown:localhost", "👍").await;
    assert!(
        get_event(&alice, &elsewhere, &foreign).await["unsigned"]
            .get("m.relations")
            .is_none()
    );
    let listed = relations(&alice, &elsewhere, &foreign, "", "").await;
    assert_eq!(listed["chunk"], json!([]));
}

#[tokio::test]
async fn children_follow_history_visibility() {
    let (_s, alice, bob, carol, room) = room_with_three().await;
    let message = alice.send_text(&room, "t1", "before").await;
    let seen = react(&carol, &room, "c1", &message, "👍").await.1["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = bob
        .post(&format!("{V3}/rooms/{}/leave", enc(&room)), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Sent after Bob left: he may read the room up to his departure only.
    react(&alice, &room, "t2", &message, "🎉").await;

    let for_bob = relations(&bob, &room, &message, "/m.annotation", "limit=10").await;
    assert_eq!(ids(&for_bob["chunk"]), [seen.as_str()]);
    let for_carol = relations(&carol, &room, &message, "/m.annotation", "limit=10").await;
    assert_eq!(for_carol["chunk"].as_array().unwrap().len(), 2);
}
