//! The appservice router over real HTTP on loopback: authentication, transactions (order,
//! durable dedupe, failure and redelivery), queries, ping and unknown routes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use appservice::{
    AppService, EphemeralEvent, Handler, HandlerError, Namespace, Namespaces, Registration,
};
use ruma::events::{AnySyncEphemeralRoomEvent, AnyTimelineEvent, AnyToDeviceEvent};
use ruma::serde::Raw;
use ruma::{RoomAliasId, UserId};
use serde_json::{Value, json};

/// Records everything delivered, one line each; fails the next `fail` events on request.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
    fail: AtomicU32,
    pings: Mutex<Vec<Option<String>>>,
}

impl Recorder {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
    fn push(&self, line: String) {
        self.seen.lock().unwrap().push(line);
    }
}

impl Handler for Recorder {
    async fn on_event(
        &self,
        event: AnyTimelineEvent,
        raw: &Raw<AnyTimelineEvent>,
    ) -> Result<(), HandlerError> {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err("bridge is down".into());
        }
        let body = raw.get_field::<Value>("content").unwrap().unwrap()["body"].clone();
        self.push(format!(
            "event {} {} {} {}",
            event.event_id(),
            event.sender(),
            event.event_type(),
            body
        ));
        Ok(())
    }

    async fn on_ephemeral(&self, edu: EphemeralEvent) -> Result<(), HandlerError> {
        let line = match edu {
            EphemeralEvent::Room {
                room_id,
                event: AnySyncEphemeralRoomEvent::Typing(t),
            } => {
                format!("typing {room_id} {:?}", t.content.user_ids)
            }
            EphemeralEvent::Room { room_id, event } => {
                format!("edu {room_id} {}", event.event_type())
            }
            EphemeralEvent::Presence(p) => format!("presence {} {}", p.sender, p.content.presence),
        };
        self.push(line);
        Ok(())
    }

    async fn on_to_device(&self, raw: &Raw<AnyToDeviceEvent>) -> Result<(), HandlerError> {
        let to: String = raw.get_field("to_user_id")?.unwrap_or_default();
        let event = raw.deserialize()?;
        self.push(format!("to_device {} {to}", event.event_type()));
        Ok(())
    }

    async fn query_user(&self, user_id: &UserId) -> Result<bool, HandlerError> {
        if user_id.localpart() == "_wa_broken" {
            return Err("lookup failed".into());
        }
        Ok(user_id.localpart() == "_wa_known")
    }

    async fn query_room_alias(&self, alias: &RoomAliasId) -> Result<bool, HandlerError> {
        Ok(alias.alias() == "_wa_known")
    }

    async fn on_ping(&self, transaction_id: Option<&str>) {
        self.pings
            .lock()
            .unwrap()
            .push(transaction_id.map(str::to_owned));
    }
}

/// A running appservice; dropping `stop` ends it, `done` says when it released everything.
struct Running {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn shut_down(self) {
        let _ = self.stop.send(());
        self.done.await.unwrap();
    }
}

fn registration() -> Registration {
    let mut reg = Registration::generate(
        "whatsapp",
        Some("http://127.0.0.1:1".into()),
        "wabot",
        Namespaces {
            users: vec![Namespace::new("@_wa_.*:example\\.org", true)],
            ..Default::default()
        },
    );
    reg.hs_token = "HS_SECRET".into();
    reg
}

async fn start<H: Handler>(state_dir: &std::path::Path, handler: Arc<H>) -> Running {
    let app = AppService::builder(
        registration(),
        "http://127.0.0.1:1",
        ruma::server_name!("example.org"),
    )
    .state_dir(state_dir)
    .build(handler)
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        app.serve_until(listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running { base, stop, done }
}

/// Sends a request and returns status and JSON body.
async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn message(id: &str, sender: &str, body: &str) -> Value {
    json!({
        "type": "m.room.message", "event_id": id, "sender": sender, "room_id": "!room:example.org",
        "origin_server_ts": 1_700_000_000_000u64, "content": { "msgtype": "m.text", "body": body }
    })
}

fn unauthorized() -> Value {
    json!({ "errcode": "M_UNAUTHORIZED", "error": "Missing homeserver token" })
}

fn forbidden() -> Value {
    json!({ "errcode": "M_FORBIDDEN", "error": "Invalid homeserver token" })
}

#[tokio::test]
async fn every_endpoint_refuses_a_missing_or_wrong_hs_token() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let app = start(dir.path(), recorder.clone()).await;
    let txn = json!({ "events": [message("$a", "@alice:example.org", "hi")] });
    let endpoints = [
        (
            "PUT",
            format!("{}/_matrix/app/v1/transactions/1", app.base),
            Some(txn.clone()),
        ),
        (
            "GET",
            format!("{}/_matrix/app/v1/users/@_wa_known:example.org", app.base),
            None,
        ),
        (
            "GET",
            format!("{}/_matrix/app/v1/rooms/%23_wa_known:example.org", app.base),
            None,
        ),
        (
            "POST",
            format!("{}/_matrix/app/v1/ping", app.base),
            Some(json!({})),
        ),
        (
            "PUT",
            format!("{}/transactions/1", app.base),
            Some(txn.clone()),
        ),
    ];
    for (method, url, body) in &endpoints {
        assert_eq!(
            call(method, url, None, body.clone()).await,
            (401, unauthorized()),
            "{method} {url}"
        );
        assert_eq!(
            call(method, url, Some("WRONG"), body.clone()).await,
            (403, forbidden()),
            "{method} {url}"
        );
        // Legacy query parameter: wrong is refused too, and it must agree with the header.
        let wrong_query = format!("{url}?access_token=WRONG");
        assert_eq!(
            call(method, &wrong_query, None, body.clone()).await,
            (403, forbidden())
        );
        assert_eq!(
            call(method, &wrong_query, Some("HS_SECRET"), body.clone()).await,
            (403, forbidden())
        );
    }
    assert_eq!(
        recorder.seen(),
        Vec::<String>::new(),
        "nothing delivered without the right token"
    );
    assert_eq!(
        *recorder.pings.lock().unwrap(),
        Vec::<Option<String>>::new()
    );

    // The scheme is case-insensitive.
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/app/v1/ping", app.base))
        .header("authorization", "bearer HS_SECRET")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The legacy query parameter alone is accepted.
    let url = format!(
        "{}/_matrix/app/v1/transactions/legacy?access_token=HS_SECRET",
        app.base
    );
    assert_eq!(call("PUT", &url, None, Some(txn)).await, (200, json!({})));
    assert_eq!(
        recorder.seen(),
        ["event $a @alice:example.org m.room.message \"hi\""]
    );
    app.shut_down().await;
}

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

#[tokio::test]
async fn bad_bodies_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let app = start(dir.path(), recorder.clone()).await;
    let url = format!("{}/_matrix/app/v1/transactions/9", app.base);
    let client = reqwest::Client::new();
    let response = client
        .put(&url)
        .bearer_auth("HS_SECRET")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["errcode"],
        "M_NOT_JSON"
    );
    let (status, body) = call(
        "PUT",
        &url,
        Some("HS_SECRET"),
        Some(json!({ "events": {} })),
    )
    .await;
    assert_eq!((status, &body["errcode"]), (400, &json!("M_BAD_JSON")));
    let huge = format!(
        "{{\"events\":[],\"pad\":\"{}\"}}",
        "x".repeat(appservice::server::MAX_BODY_BYTES)
    );
    let response = client
        .put(&url)
        .bearer_auth("HS_SECRET")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "errcode": "M_TOO_LARGE", "error": "Request body too large" })
    );
    // Nothing was recorded as done: the same txnId with a good body is delivered.
    let good = json!({ "events": [message("$1", "@alice:example.org", "ok")] });
    assert_eq!(
        call("PUT", &url, Some("HS_SECRET"), Some(good)).await,
        (200, json!({}))
    );
    assert_eq!(
        recorder.seen(),
        ["event $1 @alice:example.org m.room.message \"ok\""]
    );
    // A body with no `events` (or null ones) is an empty transaction.
    let url = format!("{}/_matrix/app/v1/transactions/10", app.base);
    assert_eq!(
        call(
            "PUT",
            &url,
            Some("HS_SECRET"),
            Some(json!({ "events": null }))
        )
        .await,
        (200, json!({}))
    );
    assert_eq!(recorder.seen().len(), 1);
    app.shut_down().await;
}

#[tokio::test]
async fn user_and_alias_queries_call_the_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), Arc::new(Recorder::default())).await;
    let b = &app.base;
    let found = (200, json!({}));
    let no_user = (
        404,
        json!({ "errcode": "M_NOT_FOUND", "error": "No such user" }),
    );
    let no_alias = (
        404,
        json!({ "errcode": "M_NOT_FOUND", "error": "No such room alias" }),
    );
    let t = Some("HS_SECRET");
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/users/@_wa_known:example.org"),
            t,
            None
        )
        .await,
        found
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/users/@_wa_other:example.org"),
            t,
            None
        )
        .await,
        no_user
    );
    assert_eq!(
        call("GET", &format!("{b}/users/@_wa_known:example.org"), t, None).await,
        found
    );
    let broken = call(
        "GET",
        &format!("{b}/_matrix/app/v1/users/@_wa_broken:example.org"),
        t,
        None,
    )
    .await;
    assert_eq!(
        broken,
        (
            500,
            json!({ "errcode": "M_UNKNOWN", "error": "user query failed" })
        )
    );
    let invalid = call(
        "GET",
        &format!("{b}/_matrix/app/v1/users/not-a-user"),
        t,
        None,
    )
    .await;
    assert_eq!(
        (invalid.0, &invalid.1["errcode"]),
        (400, &json!("M_INVALID_PARAM"))
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/rooms/%23_wa_known:example.org"),
            t,
            None
        )
        .await,
        found
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/rooms/%23_wa_nope:example.org"),
            t,
            None
        )
        .await,
        no_alias
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/rooms/%23_wa_known:example.org"),
            t,
            None
        )
        .await,
        found
    );
    app.shut_down().await;

    // The default hooks know nobody.
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), Arc::new(())).await;
    let b = &app.base;
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/users/@_wa_known:example.org"),
            t,
            None
        )
        .await,
        no_user
    );
    assert_eq!(
        call(
            "GET",
            &format!("{b}/_matrix/app/v1/rooms/%23_wa_known:example.org"),
            t,
            None
        )
        .await,
        no_alias
    );
    app.shut_down().await;
}

#[tokio::test]
async fn ping_unknown_routes_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let app = start(dir.path(), recorder.clone()).await;
    let b = &app.base;
    let t = Some("HS_SECRET");
    let ping = format!("{b}/_matrix/app/v1/ping");
    assert_eq!(
        call("POST", &ping, t, Some(json!({ "transaction_id": "meow" }))).await,
        (200, json!({}))
    );
    assert_eq!(call("POST", &ping, t, None).await, (200, json!({})));
    assert_eq!(
        *recorder.pings.lock().unwrap(),
        [Some("meow".to_owned()), None]
    );

    let unrecognized = json!({ "errcode": "M_UNRECOGNIZED", "error": "Unrecognized request" });
    assert_eq!(
        call("GET", &format!("{b}/_matrix/app/v1/nothing"), t, None).await,
        (404, unrecognized.clone())
    );
    assert_eq!(
        call("GET", &ping, t, None).await,
        (405, unrecognized.clone())
    );
    let txn = format!("{b}/_matrix/app/v1/transactions/1");
    assert_eq!(
        call("POST", &txn, t, Some(json!({ "events": [] }))).await,
        (405, unrecognized)
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
