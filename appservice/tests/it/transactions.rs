//! Transactions over real HTTP on loopback: typed delivery in order, durable dedupe (also
//! across a restart and while a first attempt still runs), handler failure and redelivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::server::*;
use appservice::{Handler, HandlerError};
use ruma::events::AnyTimelineEvent;
use ruma::serde::Raw;
use serde_json::json;

#[tokio::test]
async fn a_transaction_is_delivered_in_order_and_only_once_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let app = start(dir.path(), recorder.clone()).await;
    let url = format!("{}/_matrix/app/v1/transactions/txn-1", app.base);
    let body = json!({
        "events": [
            message("$1", "@alice:example.org", "one"),
            message("$2", "@_wa_bob:example.org", "two"),
            message("$3", "@alice:example.org", "three"),
        ],
        "ephemeral": [
            { "type": "m.typing", "room_id": "!room:example.org", "content": { "user_ids": ["@alice:example.org"] } },
            { "type": "m.presence", "sender": "@alice:example.org", "content": { "presence": "online" } },
            { "type": "m.receipt", "room_id": "!room:example.org", "content": {
                "$1": { "m.read": { "@alice:example.org": { "ts": 1 } } } } },
        ],
        // Synapse sends both names when both flags are set: the stable one wins.
        "de.sorunome.msc2409.ephemeral": [
            { "type": "m.presence", "sender": "@dup:example.org", "content": { "presence": "online" } },
        ],
        "de.sorunome.msc2409.to_device": [
            { "type": "m.dummy", "sender": "@alice:example.org", "to_user_id": "@_wa_bob:example.org",
              "to_device_id": "DEV", "content": {} },
        ],
    });
    let expected = [
        "event $1 @alice:example.org m.room.message \"one\"",
        "event $2 @_wa_bob:example.org m.room.message \"two\"",
        "event $3 @alice:example.org m.room.message \"three\"",
        "typing !room:example.org [\"@alice:example.org\"]",
        "presence @alice:example.org online",
        "edu !room:example.org m.receipt",
        "to_device m.dummy @_wa_bob:example.org",
    ];
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(body.clone())).await,
        (200, json!({}))
    );
    assert_eq!(recorder.seen(), expected);

    // The homeserver retries (its 200 was lost): answered 200, not delivered again.
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(body.clone())).await,
        (200, json!({}))
    );
    assert_eq!(recorder.seen(), expected);
    app.shut_down().await;

    // A restarted appservice still knows txn-1; the legacy path shares the same store.
    let app = start(dir.path(), recorder.clone()).await;
    let url = format!("{}/_matrix/app/v1/transactions/txn-1", app.base);
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(body.clone())).await,
        (200, json!({}))
    );
    let legacy = format!("{}/transactions/txn-1", app.base);
    assert_eq!(
        call("PUT", &legacy, Some("HS_SECRET"), Some(body)).await,
        (200, json!({}))
    );
    assert_eq!(recorder.seen(), expected);

    // The next txnId is new and delivered; MSC2409's EDU key is used when alone.
    let url = format!("{}/transactions/txn-2", app.base);
    let body = json!({
        "events": [message("$4", "@alice:example.org", "four")],
        "de.sorunome.msc2409.ephemeral": [
            { "type": "m.presence", "sender": "@carol:example.org", "content": { "presence": "offline" } },
        ],
    });
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(body)).await,
        (200, json!({}))
    );
    assert_eq!(
        recorder.seen()[7..],
        [
            "event $4 @alice:example.org m.room.message \"four\"",
            "presence @carol:example.org offline"
        ]
    );
    app.shut_down().await;
}

#[tokio::test]
async fn a_failing_handler_answers_500_and_the_retry_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder {
        fail: AtomicU32::new(2),
        ..Default::default()
    });
    let app = start(dir.path(), recorder.clone()).await;
    let url = format!("{}/_matrix/app/v1/transactions/7", app.base);
    let body = json!({ "events": [message("$1", "@alice:example.org", "one"), message("$2", "@alice:example.org", "two")] });
    let failed = json!({ "errcode": "M_UNKNOWN", "error": "The appservice could not process the transaction" });
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(body.clone())).await,
        (500, failed.clone())
    );
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(body.clone())).await,
        (500, failed)
    );
    assert_eq!(recorder.seen(), Vec::<String>::new());
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(body.clone())).await,
        (200, json!({}))
    );
    let expected = [
        "event $1 @alice:example.org m.room.message \"one\"",
        "event $2 @alice:example.org m.room.message \"two\"",
    ];
    assert_eq!(recorder.seen(), expected);
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(body)).await,
        (200, json!({}))
    );
    assert_eq!(
        recorder.seen(),
        expected,
        "done now, so not delivered again"
    );
    app.shut_down().await;
}

/// Blocks in the handler until released, to overlap a retry with its first attempt.
#[derive(Default)]
struct Slow {
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
    delivered: AtomicU32,
}

impl Handler for Slow {
    async fn on_event(
        &self,
        _e: AnyTimelineEvent,
        _r: &Raw<AnyTimelineEvent>,
    ) -> Result<(), HandlerError> {
        // Only the first delivery waits, so a wrong second one fails the count instead of hanging.
        if self.delivered.fetch_add(1, Ordering::SeqCst) == 0 {
            self.started.notify_one();
            self.release.notified().await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_retry_that_overlaps_its_first_attempt_is_not_delivered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(Slow::default());
    let app = start(dir.path(), slow.clone()).await;
    let url = format!("{}/_matrix/app/v1/transactions/overlap", app.base);
    let body = json!({ "events": [message("$1", "@alice:example.org", "one")] });
    let first = tokio::spawn({
        let (url, body) = (url.clone(), body.clone());
        async move { call("PUT", &url, Some("HS_SECRET"), Some(body)).await }
    });
    slow.started.notified().await;
    // The first attempt is inside the handler now; the retry arrives meanwhile.
    let retry = tokio::spawn(async move { call("PUT", &url, Some("HS_SECRET"), Some(body)).await });
    slow.release.notify_one();
    assert_eq!(first.await.unwrap(), (200, json!({})));
    assert_eq!(retry.await.unwrap(), (200, json!({})));
    assert_eq!(slow.delivered.load(Ordering::SeqCst), 1);
    app.shut_down().await;
}
