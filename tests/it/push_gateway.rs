//! Push gateway delivery: a fake push gateway on loopback records what the homeserver POSTs to
//! `/_matrix/push/v1/notify`, and can fail or reject pushkeys on demand.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{Client, OUTBOUND_TO_LOOPBACK, TestServer, V3, enc};
use axum::{Json, extract::State, http::StatusCode, routing::post};
use serde_json::{Value, json};

const NOTIFY: &str = "/_matrix/push/v1/notify";

#[derive(Default)]
pub(crate) struct Recorded {
    /// Bodies answered 200, in arrival order.
    delivered: Mutex<Vec<Value>>,
    /// Every request, failed or not.
    attempts: AtomicUsize,
    /// Requests still to answer with a 500.
    fail_next: AtomicUsize,
    /// Pushkeys answered as `rejected`.
    reject: Mutex<Vec<String>>,
}

pub(crate) struct Gateway {
    pub(crate) url: String,
    recorded: Arc<Recorded>,
}

impl Gateway {
    pub(crate) async fn start() -> Self {
        let recorded = Arc::new(Recorded::default());
        let app = axum::Router::new()
            .route(NOTIFY, post(notify))
            .with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{NOTIFY}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Gateway { url, recorded }
    }

    pub(crate) fn delivered(&self) -> Vec<Value> {
        self.recorded.delivered.lock().unwrap().clone()
    }

    /// Polls (bounded) until `n` notifications were delivered, and returns them.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} notifications not delivered in time; got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn notify(
    State(r): State<Arc<Recorded>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    r.attempts.fetch_add(1, Ordering::SeqCst);
    let failing = r
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    let reject = r.reject.lock().unwrap().clone();
    let rejected: Vec<&str> = body["notification"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["pushkey"].as_str())
        .filter(|k| reject.iter().any(|r| r == k))
        .collect();
    let answer = json!({ "rejected": rejected });
    r.delivered.lock().unwrap().push(body);
    (StatusCode::OK, Json(answer))
}

/// Alice creates a direct chat with Bob, who joins. Returns the room.
pub(crate) async fn direct_chat(s: &TestServer) -> (Client, Client, String) {
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice
        .create_room(json!({
            "preset": "trusted_private_chat",
            "is_direct": true,
            "invite": ["@bob:localhost"],
        }))
        .await;
    assert_eq!(bob.join(&room).await.0, 200);
    (alice, bob, room)
}

pub(crate) async fn set_pusher(c: &Client, pushkey: &str, data: Value) {
    let (status, body) = c
        .post(
            &format!("{V3}/pushers/set"),
            json!({
                "kind": "http",
                "app_id": "com.example.app",
                "pushkey": pushkey,
                "app_display_name": "Example",
                "device_display_name": "Phone",
                "lang": "en",
                "data": data,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_direct_message_is_pushed_with_the_spec_body_and_own_messages_are_not() {
    let s = TestServer::start_with(OUTBOUND_TO_LOOPBACK).await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = direct_chat(&s).await;
    set_pusher(
        &bob,
        "bob-phone",
        json!({ "url": gateway.url, "custom": "kept" }),
    )
    .await;

    // (Not naming Bob: his display name in the body would highlight.)
    let first = alice.send_text(&room, "a1", "hello there").await;
    // Bob's own message, then another of Alice's: only Alice's two reach Bob's gateway.
    bob.send_text(&room, "b1", "hi alice").await;
    let second = alice.send_text(&room, "a2", "how are you?").await;
    let got = gateway.wait_for(2).await;

    let n = &got[0]["notification"];
    assert_eq!(n["event_id"], first, "{n}");
    assert_eq!(n["room_id"], room);
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], "@alice:localhost");
    assert_eq!(n["sender_display_name"], "alice");
    assert_eq!(
        n["content"],
        json!({ "msgtype": "m.text", "body": "hello there" })
    );
    assert_eq!(n["prio"], "high");
    assert_eq!(n["counts"], json!({ "unread": 1 }));
    assert!(n.get("room_name").is_none(), "the room has no name: {n}");
    let devices = n["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    let device = &devices[0];
    assert_eq!(device["app_id"], "com.example.app");
    assert_eq!(device["pushkey"], "bob-phone");
    assert!(
        device["pushkey_ts"].as_u64().unwrap() > 1_600_000_000,
        "{device}"
    );
    assert_eq!(
        device["data"],
        json!({ "custom": "kept" }),
        "no url in data"
    );
    assert_eq!(device["tweaks"], json!({ "sound": "default" }));

    assert_eq!(got[1]["notification"]["event_id"], second);
    // Bob spoke in between, which read the room: the badge counts the room once.
    assert_eq!(got[1]["notification"]["counts"], json!({ "unread": 1 }));
    assert_eq!(got.len(), 2, "Bob's own message was pushed: {got:?}");
}

#[tokio::test]
async fn a_mention_highlights_and_event_id_only_sends_no_content() {
    let s = TestServer::start_with(OUTBOUND_TO_LOOPBACK).await;
    let gateway = Gateway::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "name": "Support" }))
        .await;
    assert_eq!(bob.join(&room).await.0, 200);
    assert_eq!(carol.join(&room).await.0, 200);
    set_pusher(&bob, "bob-phone", json!({ "url": gateway.url })).await;
    set_pusher(
        &carol,
        "carol-phone",
        json!({ "url": gateway.url, "format": "event_id_only" }),
    )
    .await;

    // A plain message in a group notifies without sound (`.m.rule.message`): low priority.
    let morning = alice.send_text(&room, "a0", "good morning").await;
    let mention = alice
        .send_message(
            &room,
            "a1",
            json!({
                "msgtype": "m.text",
                "body": "can you take this one?",
                "m.mentions": { "user_ids": ["@bob:localhost"] },
            }),
        )
        .await;
    let carol_mention = alice
        .send_message(
            &room,
            "a2",
            json!({
                "msgtype": "m.text",
                "body": "secret order 1234",
                "m.mentions": { "user_ids": ["@carol:localhost"] },
            }),
        )
        .await;
    let got = gateway.wait_for(6).await;
    let to = |pushkey: &str| -> Vec<Value> {
        got.iter()
            .map(|b| b["notification"].clone())
            .filter(|n| n["devices"][0]["pushkey"] == pushkey)
            .collect()
    };
    let (to_bob, to_carol) = (to("bob-phone"), to("carol-phone"));
    let ids = |list: &[Value]| {
        list.iter()
            .map(|n| n["event_id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&to_bob),
        [json!(morning), json!(mention), json!(carol_mention)]
    );
    assert_eq!(
        ids(&to_carol),
        [json!(morning), json!(mention), json!(carol_mention)]
    );

    assert_eq!(to_bob[0]["prio"], "low");
    assert_eq!(to_bob[0]["devices"][0]["tweaks"], json!({}));
    assert_eq!(to_bob[1]["room_name"], "Support");
    assert_eq!(to_bob[1]["prio"], "high");
    assert_eq!(to_bob[1]["counts"], json!({ "unread": 1 }));
    assert_eq!(
        to_bob[1]["devices"][0]["tweaks"],
        json!({ "sound": "default", "highlight": true })
    );
    assert_eq!(to_bob[2]["devices"][0]["tweaks"], json!({}));

    let mention_of_carol = &to_carol[2];
    let mut keys: Vec<&str> = mention_of_carol
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["counts", "devices", "event_id", "prio", "room_id"],
        "{mention_of_carol}"
    );
    assert_eq!(mention_of_carol["room_id"], room);
    assert_eq!(mention_of_carol["prio"], "high");
    assert_eq!(mention_of_carol["counts"], json!({ "unread": 1 }));
    assert_eq!(
        mention_of_carol["devices"][0]["data"],
        json!({ "format": "event_id_only" })
    );
    assert_eq!(
        mention_of_carol["devices"][0]["tweaks"],
        json!({ "sound": "default", "highlight": true })
    );
    assert_eq!(got.len(), 6, "{got:?}");
}

#[tokio::test]
async fn a_rejected_pushkey_removes_the_pusher() {
    let s = TestServer::start_with(OUTBOUND_TO_LOOPBACK).await;
    let gateway = Gateway::start().await;
    gateway
        .recorded
        .reject
        .lock()
        .unwrap()
        .push("stale-token".into());
    let (alice, bob, room) = direct_chat(&s).await;
    set_pusher(&bob, "stale-token", json!({ "url": gateway.url })).await;
    alice.send_text(&room, "a1", "hello").await;
    gateway.wait_for(1).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = bob.get(&format!("{V3}/pushers")).await;
        assert_eq!(status, 200);
        if body["pushers"] == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "pusher still there: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing more goes to the removed pusher.
    let gateway2 = Gateway::start().await;
    set_pusher(&bob, "new-token", json!({ "url": gateway2.url })).await;
    let third = alice.send_text(&room, "a3", "and now?").await;
    let got = gateway2.wait_for(1).await;
    assert_eq!(got[0]["notification"]["event_id"], third);
    assert_eq!(gateway.delivered().len(), 1);
}

#[tokio::test]
async fn a_failing_gateway_gets_each_notification_exactly_once_after_retries() {
    let s = TestServer::start_with(OUTBOUND_TO_LOOPBACK).await;
    let gateway = Gateway::start().await;
    gateway.recorded.fail_next.store(2, Ordering::SeqCst);
    let (alice, bob, room) = direct_chat(&s).await;
    set_pusher(&bob, "bob-phone", json!({ "url": gateway.url })).await;

    let first = alice.send_text(&room, "a1", "one").await;
    let got = gateway.wait_for(1).await;
    assert_eq!(got[0]["notification"]["event_id"], first);
    assert_eq!(gateway.recorded.attempts.load(Ordering::SeqCst), 3);

    // A later message comes after it, with no repeat of the first in between.
    let second = alice.send_text(&room, "a2", "two").await;
    let got = gateway.wait_for(2).await;
    let ids: Vec<&Value> = got.iter().map(|b| &b["notification"]["event_id"]).collect();
    assert_eq!(ids, [&json!(first), &json!(second)]);
    assert_eq!(gateway.recorded.attempts.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn reading_the_room_sends_a_badge_update() {
    let s = TestServer::start_with(OUTBOUND_TO_LOOPBACK).await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = direct_chat(&s).await;
    set_pusher(&bob, "bob-phone", json!({ "url": gateway.url })).await;
    let first = alice.send_text(&room, "a1", "one").await;
    gateway.wait_for(1).await;

    let (status, body) = bob
        .post(
            &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&first)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = gateway.wait_for(2).await;
    let badge = &got[1]["notification"];
    assert_eq!(
        badge,
        &json!({
            "counts": { "unread": 0 },
            "devices": [{
                "app_id": "com.example.app",
                "pushkey": "bob-phone",
                "pushkey_ts": badge["devices"][0]["pushkey_ts"],
                "data": {},
            }],
        })
    );
}

#[tokio::test]
async fn queued_notifications_survive_a_restart() {
    let s = TestServer::start_with(OUTBOUND_TO_LOOPBACK).await;
    let gateway = Gateway::start().await;
    // The gateway fails until the restart, which must find the notification still queued.
    gateway.recorded.fail_next.store(1_000, Ordering::SeqCst);
    let (alice, bob, room) = direct_chat(&s).await;
    set_pusher(&bob, "bob-phone", json!({ "url": gateway.url })).await;
    let first = alice.send_text(&room, "a1", "before the restart").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.recorded.attempts.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "never attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sender is in its first backoff (half a second): the restart comes before a retry.
    gateway.recorded.fail_next.store(0, Ordering::SeqCst);
    let s = s.restart().await;
    let got = gateway.wait_for(1).await;
    assert_eq!(got[0]["notification"]["event_id"], first);
    let mut alice = alice;
    alice.base = s.server.base_url();
    let second = alice.send_text(&room, "a2", "after the restart").await;
    let got = gateway.wait_for(2).await;
    let ids: Vec<&Value> = got.iter().map(|b| &b["notification"]["event_id"]).collect();
    assert_eq!(ids, [&json!(first), &json!(second)]);
    drop(bob);
}

#[tokio::test]
async fn an_invite_is_pushed_to_the_invitee_and_rooms_they_are_not_in_are_not() {
    let s = TestServer::start_with(OUTBOUND_TO_LOOPBACK).await;
    let gateway = Gateway::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    set_pusher(&bob, "bob-phone", json!({ "url": gateway.url })).await;
    // A room Bob is not in.
    let elsewhere = alice.create_room(json!({ "preset": "public_chat" })).await;
    alice.send_text(&elsewhere, "x1", "not for bob").await;
    let room = alice
        .create_room(json!({ "preset": "private_chat", "name": "Order 1234" }))
        .await;
    let (status, body) = alice
        .post(
            &format!("{V3}/rooms/{}/invite", enc(&room)),
            json!({ "user_id": "@bob:localhost" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = gateway.wait_for(1).await;
    let n = &got[0]["notification"];
    assert_eq!(n["room_id"], room, "{n}");
    assert_eq!(n["type"], "m.room.member");
    assert_eq!(n["sender"], "@alice:localhost");
    assert_eq!(n["membership"], "invite");
    assert_eq!(n["user_is_target"], true);
    assert_eq!(n["room_name"], "Order 1234");
    assert_eq!(n["content"]["membership"], "invite");

    // Once Bob joined, Alice's message follows; nothing came from the other room.
    assert_eq!(bob.join(&room).await.0, 200);
    let message = alice.send_text(&room, "m1", "welcome").await;
    let got = gateway.wait_for(2).await;
    assert_eq!(got[1]["notification"]["event_id"], message);
    assert_eq!(got.len(), 2, "{got:?}");
}
