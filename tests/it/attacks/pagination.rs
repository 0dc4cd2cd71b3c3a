//! Paginating walks have a hard bound (#18 item 8): `/context` with `limit` 0 or 1 returned
//! the whole history before the event, and a filter that matches nothing made `/messages` and
//! `/sync` read a whole room in one request.

use serde_json::{Value, json};

use crate::common::{Client, TestServer, V3, enc};

const NO_LIMITS: &str = "[limits]\nsend_per_second = 100000.0\nsend_burst = 100000\n";

/// `n` messages `m0`… from 16 concurrent senders (the order does not matter here).
async fn fill(c: &Client, room: &str, n: usize) {
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (c, room) = (c.clone(), room.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                c.send_text(&room, &format!("t{i}"), &format!("m{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The event ids of a list the server may also leave out when empty.
fn ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn context_with_a_limit_of_zero_or_one_returns_at_most_that_many_events() {
    let s = TestServer::start_with(NO_LIMITS).await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..11 {
        alice
            .send_text(&room, &format!("b{i}"), &format!("before {i}"))
            .await;
    }
    let middle = alice.send_text(&room, "mid", "middle").await;
    for i in 0..3 {
        alice
            .send_text(&room, &format!("a{i}"), &format!("after {i}"))
            .await;
    }
    let context = |limit: u32| {
        let alice = alice.clone();
        let path = format!(
            "{V3}/rooms/{}/context/{}?limit={limit}",
            enc(&room),
            enc(&middle)
        );
        async move {
            let (status, body) = alice.get(&path).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let body = context(0).await;
    assert_eq!(body["event"]["event_id"], middle);
    assert_eq!(ids(&body["events_before"]).len(), 0, "{body}");
    assert_eq!(ids(&body["events_after"]).len(), 0, "{body}");
    let body = context(1).await;
    let (before, after) = (ids(&body["events_before"]), ids(&body["events_after"]));
    assert_eq!(before.len() + after.len(), 1, "{body}");
    assert_eq!(after.len(), 1, "the one event is the next: {body}");
    assert_eq!(
        body["events_after"][0]["content"]["body"], "after 0",
        "{body}"
    );
    let body = context(4).await;
    let before: Vec<&str> = body["events_before"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(before, ["before 10", "before 9"]);
}

#[tokio::test]
async fn a_filter_that_matches_nothing_pages_through_history_instead_of_reading_it_all() {
    let s = TestServer::start_with(NO_LIMITS).await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    fill(&alice, &room, 6_000).await;
    let filter = enc(&json!({ "types": ["org.example.nothing"] }).to_string());
    // /messages: every page is empty, and the walk stops at its bound with a token to go on
    // from, so reaching the start takes more than one request.
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!(
            "{V3}/rooms/{}/messages?dir=b&limit=10&filter={filter}",
            enc(&room)
        );
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, page) = alice.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            ids(&page["chunk"]),
            Vec::<String>::new(),
            "nothing matches: {page}"
        );
        pages += 1;
        assert!(pages < 100, "pagination does not end");
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    assert!(pages >= 2, "one request read the whole room");
    // /sync with the same filter: a limited, empty timeline with a token to go back from.
    let sync_filter =
        enc(&json!({ "room": { "timeline": { "types": ["org.example.nothing"] } } }).to_string());
    let (status, body) = alice.get(&format!("{V3}/sync?filter={sync_filter}")).await;
    assert_eq!(status, 200, "{body}");
    let timeline = &body["rooms"]["join"][&room]["timeline"];
    assert_eq!(ids(&timeline["events"]), Vec::<String>::new(), "{timeline}");
    assert_eq!(timeline["limited"], true, "{timeline}");
    let prev = timeline["prev_batch"].as_str().unwrap();
    // The token leads on through history: older pages come back from /messages.
    let (status, page) = alice
        .get(&format!(
            "{V3}/rooms/{}/messages?dir=b&limit=5&from={prev}",
            enc(&room)
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page["chunk"]).len(), 5, "{page}");
}
