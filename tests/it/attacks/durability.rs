//! "A 200 means durable" on every path (#18 item 14): a retried transaction whose first
//! attempt is still waiting for its disk sync used to be answered at once, with an event that
//! a crash at that moment would lose and that readers could not see yet.

use serde_json::json;

use crate::common::{Client, TestServer, V3, enc};

const NO_LIMITS: &str = "[limits]\nsend_per_second = 100000.0\nsend_burst = 100000\n";

/// PUTs one message with a transaction id; the event id of the 200.
async fn put_message(c: Client, room: String, txn: String) -> String {
    let (status, body) = c
        .put(
            &format!("{V3}/rooms/{}/send/m.room.message/{txn}", enc(&room)),
            json!({ "msgtype": "m.text", "body": txn }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

/// The newest event a reader sees in the room.
async fn newest(c: &Client, room: &str) -> String {
    let (status, page) = c
        .get(&format!("{V3}/rooms/{}/messages?dir=b&limit=1", enc(room)))
        .await;
    assert_eq!(status, 200, "{page}");
    page["chunk"][0]["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_transaction_is_answered_only_once_its_event_is_durable() {
    let s = TestServer::start_with(NO_LIMITS).await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    for round in 0..40 {
        let txn = format!("txn{round}");
        // The first attempt and its retry at once, on two connections: whichever is answered
        // first, its event is already what readers see (visible means durable).
        let mut first = tokio::spawn(put_message(alice.clone(), room.clone(), txn.clone()));
        let mut retry = tokio::spawn(put_message(alice.clone(), room.clone(), txn.clone()));
        let (answered, other) = tokio::select! {
            id = &mut first => (id.unwrap(), retry),
            id = &mut retry => (id.unwrap(), first),
        };
        assert_eq!(
            newest(&alice, &room).await,
            answered,
            "round {round}: answered before durable"
        );
        assert_eq!(other.await.unwrap(), answered, "one transaction, one event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_to_device_transaction_is_answered_once_durable() {
    let s = TestServer::start_with(NO_LIMITS).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let (_, me) = bob.get(&format!("{V3}/account/whoami")).await;
    let bob_device = me["device_id"].as_str().unwrap().to_owned();
    let mut since = bob.sync(None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    for round in 0..40u64 {
        let path = format!("{V3}/sendToDevice/org.example.ping/dtxn{round}");
        let body =
            json!({ "messages": { "@bob:localhost": { bob_device.clone(): { "n": round } } } });
        let send = |c: Client, path: String, body: serde_json::Value| async move {
            let (status, body) = c.put(&path, body).await;
            assert_eq!(status, 200, "{body}");
        };
        let mut first = tokio::spawn(send(alice.clone(), path.clone(), body.clone()));
        let mut retry = tokio::spawn(send(alice.clone(), path, body));
        let other = tokio::select! {
            done = &mut first => { done.unwrap(); retry }
            done = &mut retry => { done.unwrap(); first }
        };
        // Answered: Bob's next sync has the message (visible means durable), exactly once.
        let sync = bob.sync(Some(&since), 0).await;
        other.await.unwrap();
        let got: Vec<u64> = sync["to_device"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["content"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(got, vec![round], "round {round}: answered before durable");
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
}
