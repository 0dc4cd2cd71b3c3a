//! Per-thread unread counts in `/sync` (`unread_thread_notifications` in the timeline filter):
//! the main timeline without threaded events, each thread root's own counts, and threaded read
//! receipts resetting only their thread.

use crate::common::{Client, TestServer, V3, enc};
use serde_json::{Value, json};

const BY_THREAD: &str = r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#;

async fn reply_in_thread(c: &Client, room: &str, txn: &str, root: &str, extra: Value) -> String {
    let mut content = json!({
        "msgtype": "m.text",
        "body": format!("in thread {txn}"),
        "m.relates_to": { "rel_type": "m.thread", "event_id": root },
    });
    if let (Some(content), Some(extra)) = (content.as_object_mut(), extra.as_object()) {
        content.extend(extra.clone());
    }
    c.send_message(room, txn, content).await
}

async fn receipt(c: &Client, room: &str, event: &str, body: Value) {
    let (status, res) = c
        .post(
            &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(room), enc(event)),
            body,
        )
        .await;
    assert_eq!(status, 200, "{res}");
}

/// The room's `unread_notifications` and `unread_thread_notifications` in a full sync.
async fn counts(c: &Client, room: &str, filter: Option<&str>) -> (Value, Value) {
    let path = match filter {
        Some(f) => format!("{V3}/sync?timeout=0&filter={}", enc(f)),
        None => format!("{V3}/sync?timeout=0"),
    };
    let (status, sync) = c.get(&path).await;
    assert_eq!(status, 200, "{sync}");
    let joined = &sync["rooms"]["join"][room];
    (
        joined["unread_notifications"].clone(),
        joined
            .get("unread_thread_notifications")
            .cloned()
            .unwrap_or(Value::Null),
    )
}

fn n(notify: u64, highlight: u64) -> Value {
    json!({ "notification_count": notify, "highlight_count": highlight })
}

#[tokio::test]
async fn threads_have_their_own_counts_and_threaded_receipts_reset_only_theirs() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);

    // Two members: every message of Alice notifies Bob (`.m.rule.room_one_to_one`).
    let root = alice.send_text(&room, "r1", "first question").await;
    alice.send_text(&room, "m1", "another thing").await;
    reply_in_thread(&alice, &room, "t1a", &root, json!({})).await;
    let t1b = reply_in_thread(&alice, &room, "t1b", &root, json!({})).await;
    reply_in_thread(
        &alice,
        &room,
        "t1c",
        &root,
        json!({ "m.mentions": { "user_ids": ["@bob:localhost"] } }),
    )
    .await;
    let root2 = alice.send_text(&room, "r2", "second question").await;
    let t2a = reply_in_thread(&alice, &room, "t2a", &root2, json!({})).await;

    // Without the filter option: one count over everything, no per-thread map.
    let (main, threads) = counts(&bob, &room, None).await;
    assert_eq!(main, n(7, 1));
    assert_eq!(threads, Value::Null);

    // With it: the main timeline holds the roots and the plain message only.
    let (main, threads) = counts(&bob, &room, Some(BY_THREAD)).await;
    assert_eq!(main, n(3, 0));
    assert_eq!(threads, json!({ &root: n(3, 1), &root2: n(1, 0) }));

    // A receipt in the first thread reads that thread up to its event, nothing else; an
    // incremental sync brings the room back with the new counts.
    let (_, sync) = bob
        .get(&format!("{V3}/sync?timeout=0&filter={}", enc(BY_THREAD)))
        .await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    receipt(&bob, &room, &t1b, json!({ "thread_id": root })).await;
    let (_, sync) = bob
        .get(&format!(
            "{V3}/sync?timeout=0&filter={}&since={since}",
            enc(BY_THREAD)
        ))
        .await;
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(joined["unread_notifications"], n(3, 0), "{sync}");
    assert_eq!(
        joined["unread_thread_notifications"],
        json!({ &root: n(1, 1), &root2: n(1, 0) })
    );
    let (main, threads) = counts(&bob, &room, Some(BY_THREAD)).await;
    assert_eq!(main, n(3, 0));
    assert_eq!(threads, json!({ &root: n(1, 1), &root2: n(1, 0) }));

    // A `main` receipt reads the main timeline only.
    receipt(&bob, &room, &root2, json!({ "thread_id": "main" })).await;
    let (main, threads) = counts(&bob, &room, Some(BY_THREAD)).await;
    assert_eq!(main, n(0, 0));
    assert_eq!(threads, json!({ &root: n(1, 1), &root2: n(1, 0) }));

    // An unthreaded receipt reads every thread up to its event.
    receipt(&bob, &room, &t2a, json!({})).await;
    let (main, threads) = counts(&bob, &room, Some(BY_THREAD)).await;
    assert_eq!(main, n(0, 0));
    assert_eq!(threads, Value::Null);

    // New activity in a thread counts there; Bob replying in a thread reads it.
    reply_in_thread(&alice, &room, "t1d", &root, json!({})).await;
    reply_in_thread(&alice, &room, "t2b", &root2, json!({})).await;
    let (main, threads) = counts(&bob, &room, Some(BY_THREAD)).await;
    assert_eq!(main, n(0, 0));
    assert_eq!(threads, json!({ &root: n(1, 0), &root2: n(1, 0) }));
    reply_in_thread(&bob, &room, "b1", &root2, json!({})).await;
    let (main, threads) = counts(&bob, &room, Some(BY_THREAD)).await;
    assert_eq!(main, n(0, 0));
    assert_eq!(threads, json!({ &root: n(1, 0) }));
}
