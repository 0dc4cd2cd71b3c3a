//! Receipts, read markers, typing, presence, unread counts, pushers and `/notifications`,
//! as clients see them through the Client-Server API.

use std::time::{Duration, Instant};

use crate::common::{Client, TestServer, V3, assert_error, enc};
use serde_json::{Value, json};

/// Alice creates a room and Bob joins; both have synced once. Returns their next tokens.
async fn alice_and_bob(s: &TestServer) -> (Client, Client, String) {
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    (alice, bob, room)
}

fn room_path(room: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room))
}

/// The room's ephemeral events of a type in a sync response.
fn ephemeral<'a>(sync: &'a Value, room: &str, kind: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .map(|events| events.iter().filter(|e| e["type"] == kind).collect())
        .unwrap_or_default()
}

/// Long-polls until `found` returns something or the deadline passes.
async fn sync_until<T>(
    c: &Client,
    mut since: String,
    within: Duration,
    found: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let body = c.sync(Some(&since), 1000).await;
        if let Some(t) = found(&body) {
            return t;
        }
        since = body["next_batch"].as_str().unwrap().to_owned();
        assert!(
            Instant::now() < deadline,
            "not seen in time; last sync {body}"
        );
    }
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

fn counts(sync: &Value, room: &str) -> (u64, u64) {
    let unread = &sync["rooms"]["join"][room]["unread_notifications"];
    (
        unread["notification_count"].as_u64().unwrap(),
        unread["highlight_count"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn read_receipt_reaches_the_other_member_and_private_ones_do_not() {
    let s = TestServer::start().await;
    let (alice, bob, room) = alice_and_bob(&s).await;
    let first = alice.send_text(&room, "t1", "one").await;
    let second = alice.send_text(&room, "t2", "two").await;
    let since = next_batch(&alice.sync(None, 0).await);

    let (status, body) = bob
        .post(
            &room_path(&room, &format!("receipt/m.read/{}", enc(&second))),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let receipt = sync_until(&alice, since.clone(), Duration::from_secs(5), |b| {
        ephemeral(b, &room, "m.receipt")
            .first()
            .map(|e| (*e).clone())
    })
    .await;
    let by_bob = &receipt["content"][&second]["m.read"]["@bob:localhost"];
    assert!(by_bob["ts"].as_u64().unwrap() > 0, "{receipt}");
    assert!(by_bob.get("thread_id").is_none(), "{receipt}");

    // An older event does not move the receipt back.
    let (status, _) = bob
        .post(
            &room_path(&room, &format!("receipt/m.read/{}", enc(&first))),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let initial = alice.sync(None, 0).await;
    let receipts = ephemeral(&initial, &room, "m.receipt");
    assert_eq!(receipts.len(), 1, "{initial}");
    assert!(receipts[0]["content"][&second]["m.read"]["@bob:localhost"].is_object());
    assert!(receipts[0]["content"].get(&first).is_none(), "{initial}");

    // A private receipt is seen by its owner only.
    let since = next_batch(&alice.sync(None, 0).await);
    let third = alice.send_text(&room, "t3", "three").await;
    let (status, _) = bob
        .post(
            &room_path(&room, &format!("receipt/m.read.private/{}", enc(&third))),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let mine = bob.sync(None, 0).await;
    let own = ephemeral(&mine, &room, "m.receipt");
    assert!(
        own[0]["content"][&third]["m.read.private"]["@bob:localhost"].is_object(),
        "{mine}"
    );
    let theirs = alice.sync(Some(&since), 0).await;
    for e in ephemeral(&theirs, &room, "m.receipt") {
        assert!(
            e["content"].get(&third).is_none(),
            "private receipt leaked: {e}"
        );
    }

    // A threaded receipt carries its thread id.
    let (status, _) = bob
        .post(
            &room_path(&room, &format!("receipt/m.read/{}", enc(&third))),
            json!({ "thread_id": "main" }),
        )
        .await;
    assert_eq!(status, 200);
    let body = bob.sync(None, 0).await;
    let e = ephemeral(&body, &room, "m.receipt");
    assert_eq!(
        e[0]["content"][&third]["m.read"]["@bob:localhost"]["thread_id"],
        "main"
    );
}

#[tokio::test]
async fn receipts_are_refused_for_strangers_unknown_events_and_unknown_types() {
    let s = TestServer::start().await;
    let (alice, _bob, room) = alice_and_bob(&s).await;
    let event = alice.send_text(&room, "t1", "hi").await;
    let carol = s.user("carol").await;
    let (status, body) = carol
        .post(
            &room_path(&room, &format!("receipt/m.read/{}", enc(&event))),
            json!({}),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = alice
        .post(
            &room_path(&room, "receipt/m.read/$nope:localhost"),
            json!({}),
        )
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice
        .post(
            &room_path(&room, &format!("receipt/m.fully_read/{}", enc(&event))),
            json!({ "thread_id": "main" }),
        )
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn read_markers_set_fully_read_and_the_read_receipt() {
    let s = TestServer::start().await;
    let (alice, bob, room) = alice_and_bob(&s).await;
    let event = alice.send_text(&room, "t1", "hi").await;
    let (status, body) = bob
        .post(
            &room_path(&room, "read_markers"),
            json!({ "m.fully_read": event, "m.read": event }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, marker) = bob
        .get(&format!(
            "{V3}/user/{}/rooms/{}/account_data/m.fully_read",
            enc("@bob:localhost"),
            enc(&room)
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(marker, json!({ "event_id": event }));
    let body = alice.sync(None, 0).await;
    let e = ephemeral(&body, &room, "m.receipt");
    assert!(
        e[0]["content"][&event]["m.read"]["@bob:localhost"].is_object(),
        "{body}"
    );
}

#[tokio::test]
async fn unread_counts_follow_push_rules_and_reset_with_the_read_receipt() {
    let s = TestServer::start().await;
    let (alice, bob, room) = alice_and_bob(&s).await;
    alice.send_text(&room, "t1", "hello").await;
    alice.send_text(&room, "t2", "how are you").await;
    let last = alice.send_text(&room, "t3", "bob, are you there?").await;
    let body = bob.sync(None, 0).await;
    // The third mentions Bob's display name: a highlight by the default rules.
    assert_eq!(counts(&body, &room), (3, 1), "{body}");
    // Alice's own messages never count for her.
    assert_eq!(counts(&alice.sync(None, 0).await, &room), (0, 0));

    let since = next_batch(&body);
    let (status, _) = bob
        .post(
            &room_path(&room, &format!("receipt/m.read/{}", enc(&last))),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let body = bob.sync(Some(&since), 5000).await;
    assert_eq!(counts(&body, &room), (0, 0), "{body}");

    // A muting room rule (dont_notify) stops the counting.
    let (status, body) = bob
        .put(
            &format!("{V3}/pushrules/global/room/{}", enc(&room)),
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    alice.send_text(&room, "t4", "muted").await;
    let body = bob.sync(None, 0).await;
    assert_eq!(counts(&body, &room), (0, 0), "{body}");
}

#[tokio::test]
async fn typing_reaches_the_room_and_expires() {
    let s = TestServer::start().await;
    let (alice, bob, room) = alice_and_bob(&s).await;
    let since = next_batch(&alice.sync(None, 0).await);
    let (status, body) = bob
        .put(
            &room_path(&room, &format!("typing/{}", enc("@bob:localhost"))),
            json!({ "typing": true, "timeout": 1500 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (users, since) = sync_until(&alice, since, Duration::from_secs(5), |b| {
        ephemeral(b, &room, "m.typing")
            .first()
            .map(|e| (e["content"]["user_ids"].clone(), next_batch(b)))
    })
    .await;
    assert_eq!(users, json!(["@bob:localhost"]));
    // Nobody stops it: it expires on its own and the room is told.
    let started = Instant::now();
    let users = sync_until(&alice, since, Duration::from_secs(10), |b| {
        ephemeral(b, &room, "m.typing")
            .first()
            .map(|e| e["content"]["user_ids"].clone())
    })
    .await;
    assert_eq!(users, json!([]));
    assert!(started.elapsed() >= Duration::from_millis(500));

    // Only for yourself, and only in a room you are in.
    let (status, body) = bob
        .put(
            &room_path(&room, &format!("typing/{}", enc("@alice:localhost"))),
            json!({ "typing": true, "timeout": 1000 }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let carol = s.user("carol").await;
    let (status, body) = carol
        .put(
            &room_path(&room, &format!("typing/{}", enc("@carol:localhost"))),
            json!({ "typing": true, "timeout": 1000 }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
}

fn presence_of<'a>(sync: &'a Value, user: &str) -> Option<&'a Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["sender"] == user)
}

#[tokio::test]
async fn presence_is_shared_with_room_members_and_times_out() {
    let s =
        TestServer::start_with("[presence]\nidle_timeout_secs = 60\noffline_timeout_secs = 1\n")
            .await;
    let (alice, bob, _room) = alice_and_bob(&s).await;
    let carol = s.user("carol").await;
    let since = next_batch(&alice.sync(None, 0).await);

    let (status, body) = bob
        .put(
            &format!("{V3}/presence/{}/status", enc("@bob:localhost")),
            json!({ "presence": "online", "status_msg": "en la oficina" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (event, since) = sync_until(&alice, since, Duration::from_secs(5), |b| {
        presence_of(b, "@bob:localhost").map(|e| (e.clone(), next_batch(b)))
    })
    .await;
    assert_eq!(event["content"]["presence"], "online", "{event}");
    assert_eq!(event["content"]["status_msg"], "en la oficina");
    assert_eq!(event["content"]["currently_active"], true);
    assert!(event["content"]["last_active_ago"].is_u64());

    let (status, body) = alice
        .get(&format!("{V3}/presence/{}/status", enc("@bob:localhost")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["presence"], "online");
    assert_eq!(body["status_msg"], "en la oficina");
    // Carol shares no room with Bob.
    let (status, body) = carol
        .get(&format!("{V3}/presence/{}/status", enc("@bob:localhost")))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = carol
        .put(
            &format!("{V3}/presence/{}/status", enc("@bob:localhost")),
            json!({ "presence": "offline" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");

    // Bob never syncs: after the offline timeout Alice sees him go offline.
    let event = sync_until(&alice, since, Duration::from_secs(10), |b| {
        presence_of(b, "@bob:localhost")
            .filter(|e| e["content"]["presence"] == "offline")
            .cloned()
    })
    .await;
    assert_eq!(event["content"]["currently_active"], false);
}

#[tokio::test]
async fn syncing_marks_a_user_online_unless_told_otherwise() {
    let s = TestServer::start().await;
    let (alice, bob, _room) = alice_and_bob(&s).await;
    let (status, _) = bob
        .get(&format!("{V3}/sync?timeout=0&set_presence=offline"))
        .await;
    assert_eq!(status, 200);
    let (_, body) = alice
        .get(&format!("{V3}/presence/{}/status", enc("@bob:localhost")))
        .await;
    assert_eq!(body["presence"], "offline", "{body}");
    bob.sync(None, 0).await;
    let (_, body) = alice
        .get(&format!("{V3}/presence/{}/status", enc("@bob:localhost")))
        .await;
    assert_eq!(body["presence"], "online", "{body}");
}

#[tokio::test]
async fn pushers_are_stored_listed_and_deleted() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let pusher = json!({
        "kind": "http",
        "app_id": "com.example.app",
        "pushkey": "device-token-1",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "es",
        "data": { "url": "https://push.example.com/_matrix/push/v1/notify", "format": "event_id_only" }
    });
    let (status, body) = alice
        .post(&format!("{V3}/pushers/set"), pusher.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice.get(&format!("{V3}/pushers")).await;
    assert_eq!(status, 200);
    assert_eq!(body["pushers"].as_array().unwrap().len(), 1, "{body}");
    let got = &body["pushers"][0];
    assert_eq!(got["pushkey"], "device-token-1");
    assert_eq!(
        got["data"]["url"],
        "https://push.example.com/_matrix/push/v1/notify"
    );
    assert_eq!(got["lang"], "es");

    let mut bad = pusher.clone();
    bad["data"]["url"] = json!("https://push.example.com/other");
    let (status, body) = alice.post(&format!("{V3}/pushers/set"), bad).await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");

    let (status, _) = alice
        .post(
            &format!("{V3}/pushers/set"),
            json!({ "kind": null, "app_id": "com.example.app", "pushkey": "device-token-1" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alice.get(&format!("{V3}/pushers")).await;
    assert_eq!(body["pushers"], json!([]));
}

#[tokio::test]
async fn notifications_list_what_notified_and_whether_it_was_read() {
    let s = TestServer::start().await;
    let (alice, bob, room) = alice_and_bob(&s).await;
    alice.send_text(&room, "t1", "first").await;
    let mention = alice.send_text(&room, "t2", "bob: look at this").await;
    let (status, body) = bob.get(&format!("{V3}/notifications")).await;
    assert_eq!(status, 200, "{body}");
    let list = body["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{body}");
    assert_eq!(list[0]["event"]["event_id"], mention.as_str());
    assert_eq!(list[0]["room_id"], room.as_str());
    assert_eq!(list[0]["read"], false);
    assert!(
        list[0]["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("notify"))
    );

    let (status, body) = bob.get(&format!("{V3}/notifications?only=highlight")).await;
    assert_eq!(status, 200);
    let list = body["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["event"]["content"]["body"], "bob: look at this");

    bob.post(
        &room_path(&room, &format!("receipt/m.read/{}", enc(&mention))),
        json!({}),
    )
    .await;
    let (_, body) = bob.get(&format!("{V3}/notifications?limit=1")).await;
    assert_eq!(body["notifications"][0]["read"], true, "{body}");
    let next = body["next_token"].as_str().expect("a next page").to_owned();
    let (_, body) = bob
        .get(&format!("{V3}/notifications?limit=1&from={next}"))
        .await;
    assert_eq!(
        body["notifications"][0]["event"]["content"]["body"], "first",
        "{body}"
    );
}
