//! The Application Service API, homeserver side: registration files, `as_token` identity
//! assertion, exclusive namespaces, the durable transaction queue, queries and ping. The
//! appservice here is a real HTTP server on loopback that records what Charla sends it.

use crate::common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::common::{Client, TestServer, V3, assert_error, enc};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post, put},
};
use serde_json::{Value, json};

const AS_TOKEN: &str = "as-token-wa";
const HS_TOKEN: &str = "hs-token-wa";

/// What the fake appservice saw, and how it should answer.
#[derive(Default)]
pub(crate) struct Seen {
    /// Every transaction attempt: (txn id, Authorization header, body).
    pub(crate) attempts: Vec<(String, String, Value)>,
    /// Transactions to refuse with 500 before accepting.
    pub(crate) fail_next: usize,
    pub(crate) user_queries: Vec<String>,
    pub(crate) pings: Vec<(String, Value)>,
}

pub(crate) type Shared = Arc<Mutex<Seen>>;

fn auth(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn transaction(
    State(seen): State<Shared>,
    Path(txn): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut seen = seen.lock().unwrap();
    seen.attempts.push((txn, auth(&headers), body));
    if seen.fail_next > 0 {
        seen.fail_next -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    (StatusCode::OK, Json(json!({})))
}

async fn user_query(
    State(seen): State<Shared>,
    Path(user): Path<String>,
) -> (StatusCode, Json<Value>) {
    seen.lock().unwrap().user_queries.push(user);
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "errcode": "M_NOT_FOUND" })),
    )
}

async fn ping(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    seen.lock().unwrap().pings.push((auth(&headers), body));
    Json(json!({}))
}

/// Starts the fake appservice; returns its URL and what it records.
pub(crate) async fn fake_appservice() -> (String, Shared) {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
        .route("/_matrix/app/v1/users/{user}", get(user_query))
        .route("/_matrix/app/v1/ping", post(ping))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn registration(url: &str) -> String {
    format!(
        "id: whatsapp\nurl: {url}\nas_token: {AS_TOKEN}\nhs_token: {HS_TOKEN}\n\
         sender_localpart: whatsappbot\nrate_limited: false\n\
         namespaces:\n  users:\n    - exclusive: true\n      regex: '@whatsapp_.*:localhost'\n  \
         aliases:\n    - exclusive: true\n      regex: '#whatsapp_.*:localhost'\n  rooms: []\n"
    )
}

/// A server with the fake appservice registered.
async fn server_with_appservice() -> (TestServer, Shared, std::path::PathBuf) {
    server_with_registration("").await
}

/// Same, with extra registration keys.
async fn server_with_registration(extra: &str) -> (TestServer, Shared, std::path::PathBuf) {
    let (url, seen) = fake_appservice().await;
    let dir = tempfile::tempdir().unwrap().keep();
    let file = dir.join("whatsapp.yaml");
    std::fs::write(&file, registration(&url) + extra).unwrap();
    let s = TestServer::start_with(&format!("[appservice]\nregistrations = [{file:?}]\n")).await;
    (s, seen, file)
}

/// A client using the appservice's token, optionally asserting a user.
fn appservice_client(s: &TestServer) -> Client {
    let mut c = s.client();
    c.token = Some(AS_TOKEN.to_owned());
    c
}

fn as_user(path: &str, user: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}user_id={}", enc(user))
}

async fn register_puppet(c: &Client, localpart: &str) -> (u16, Value) {
    c.post(
        &format!("{V3}/register"),
        json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true }),
    )
    .await
}

/// The events of every accepted transaction, in order.
fn delivered(seen: &Shared) -> Vec<Value> {
    let seen = seen.lock().unwrap();
    let mut accepted = Vec::new();
    let mut refused = seen.fail_next;
    let _ = &mut refused;
    // Only the last attempt of each txn id was accepted (attempts of one id are consecutive).
    let mut i = 0;
    while i < seen.attempts.len() {
        let mut j = i;
        while j + 1 < seen.attempts.len() && seen.attempts[j + 1].0 == seen.attempts[i].0 {
            j += 1;
        }
        accepted.extend(
            seen.attempts[j].2["events"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        i = j + 1;
    }
    accepted
}

async fn wait_for(seen: &Shared, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&seen.lock().unwrap()) {
        assert!(Instant::now() < deadline, "appservice never saw {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn puppets_register_without_password_and_act_through_assertion() {
    let (s, _seen, _) = server_with_appservice().await;
    let asc = appservice_client(&s);
    let (status, body) = register_puppet(&asc, "whatsapp_34600111222").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@whatsapp_34600111222:localhost");
    assert!(body.get("access_token").is_none(), "inhibit_login: {body}");

    // Outside the namespace: refused.
    let (status, body) = register_puppet(&asc, "mallory").await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");
    // Without the token the login type is refused.
    let (status, body) = s
        .client()
        .post(
            &format!("{V3}/register"),
            json!({ "type": "m.login.application_service", "username": "whatsapp_1" }),
        )
        .await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN");

    // whoami: the sender by default, the asserted user with ?user_id=.
    let (_, body) = asc.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(body["user_id"], "@whatsappbot:localhost");
    let puppet = "@whatsapp_34600111222:localhost";
    let (status, body) = asc
        .get(&as_user(&format!("{V3}/account/whoami"), puppet))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["user_id"], puppet);
    let (status, body) = asc
        .get(&as_user(
            &format!("{V3}/account/whoami"),
            "@alice:localhost",
        ))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = asc
        .get(&as_user(
            &format!("{V3}/account/whoami"),
            "@whatsapp_unregistered:localhost",
        ))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");

    // The puppet creates a room and sends with the remote timestamp.
    let (status, body) = asc
        .post(&as_user(&format!("{V3}/createRoom"), puppet), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    let (status, body) = asc
        .put(
            &as_user(
                &format!(
                    "{V3}/rooms/{}/send/m.room.message/t1?ts=1700000000000",
                    enc(&room)
                ),
                puppet,
            ),
            json!({ "msgtype": "m.text", "body": "hola" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let event_id = body["event_id"].as_str().unwrap();
    let (_, event) = asc
        .get(&as_user(
            &format!("{V3}/rooms/{}/event/{}", enc(&room), enc(event_id)),
            puppet,
        ))
        .await;
    assert_eq!(event["sender"], puppet);
    assert_eq!(event["origin_server_ts"], 1_700_000_000_000u64);

    // A normal user's ?ts= is ignored.
    let alice = s.user("alice").await;
    let own = alice.create_room(json!({})).await;
    let (_, body) = alice
        .put(
            &format!("{V3}/rooms/{}/send/m.room.message/t1?ts=5", enc(&own)),
            json!({ "msgtype": "m.text", "body": "x" }),
        )
        .await;
    let (_, event) = alice
        .get(&format!(
            "{V3}/rooms/{}/event/{}",
            enc(&own),
            enc(body["event_id"].as_str().unwrap())
        ))
        .await;
    assert!(event["origin_server_ts"].as_u64().unwrap() > 5);
}

#[tokio::test]
async fn exclusive_namespaces_are_refused_to_others() {
    let (s, _seen, _) = server_with_appservice().await;
    let (status, body) = s
        .client()
        .post(
            &format!("{V3}/register"),
            json!({ "username": "whatsapp_999", "password": "pw-123456", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let (status, body) = alice
        .put(
            &format!("{V3}/directory/room/{}", enc("#whatsapp_x:localhost")),
            json!({ "room_id": room }),
        )
        .await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");
    let (status, body) = alice
        .post(
            &format!("{V3}/createRoom"),
            json!({ "room_alias_name": "whatsapp_y" }),
        )
        .await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");
    // The appservice itself may.
    let asc = appservice_client(&s);
    let (status, body) = asc
        .post(
            &format!("{V3}/createRoom"),
            json!({ "room_alias_name": "whatsapp_y" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn events_of_interest_are_pushed_in_order_and_retried_with_the_same_txn() {
    let (s, seen, _) = server_with_appservice().await;
    let asc = appservice_client(&s);
    register_puppet(&asc, "whatsapp_1").await;
    let puppet = "@whatsapp_1:localhost";
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    // Not interesting yet: no namespaced user in the room.
    alice.send_text(&room, "t0", "private").await;
    let (status, _) = alice
        .post(
            &format!("{V3}/rooms/{}/invite", enc(&room)),
            json!({ "user_id": puppet }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = asc
        .post(
            &as_user(&format!("{V3}/rooms/{}/join", enc(&room)), puppet),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    seen.lock().unwrap().fail_next = 2;
    for i in 1..=3 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("msg {i}"))
            .await;
    }
    wait_for(&seen, "three messages", |s| {
        s.fail_next == 0
            && s.attempts
                .iter()
                .filter(|a| a.2.to_string().contains("msg 3"))
                .count()
                > 0
    })
    .await;
    let events = delivered(&seen);
    let kinds: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["content"]["body"]
                    .as_str()
                    .or(e["content"]["membership"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("m.room.member".into(), "invite".into()),
            ("m.room.member".into(), "join".into()),
            ("m.room.message".into(), "msg 1".into()),
            ("m.room.message".into(), "msg 2".into()),
            ("m.room.message".into(), "msg 3".into()),
        ],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e["room_id"], room.as_str());
    }
    let seen = seen.lock().unwrap();
    assert!(
        seen.attempts
            .iter()
            .all(|a| a.1 == format!("Bearer {HS_TOKEN}"))
    );
    // The two refusals hit one transaction (whichever was next): it was tried three times with
    // the same body, and every other transaction once.
    let mut ids: Vec<&str> = seen.attempts.iter().map(|a| a.0.as_str()).collect();
    ids.dedup();
    assert_eq!(seen.attempts.len(), ids.len() + 2, "{:?}", seen.attempts);
    let retried = ids
        .iter()
        .find(|id| seen.attempts.iter().filter(|a| a.0 == **id).count() == 3)
        .expect("one transaction retried twice");
    let bodies: Vec<_> = seen
        .attempts
        .iter()
        .filter(|a| a.0 == *retried)
        .map(|a| &a.2)
        .collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    // Transaction ids only grow.
    let ids: Vec<u64> = seen.attempts.iter().map(|a| a.0.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
}

#[tokio::test]
async fn a_pending_transaction_survives_a_restart_unchanged() {
    let (s, seen, _) = server_with_appservice().await;
    let asc = appservice_client(&s);
    register_puppet(&asc, "whatsapp_1").await;
    let puppet = "@whatsapp_1:localhost";
    let (_, body) = asc
        .post(&as_user(&format!("{V3}/createRoom"), puppet), json!({}))
        .await;
    let room = body["room_id"].as_str().unwrap().to_owned();
    wait_for(&seen, "the room creation", |s| !s.attempts.is_empty()).await;
    seen.lock().unwrap().fail_next = usize::MAX;
    let before = seen.lock().unwrap().attempts.len();
    asc.put(
        &as_user(
            &format!("{V3}/rooms/{}/send/m.room.message/x1", enc(&room)),
            puppet,
        ),
        json!({ "msgtype": "m.text", "body": "while down" }),
    )
    .await;
    wait_for(&seen, "a refused attempt", |s| s.attempts.len() > before).await;
    let (txn, _, body) = seen.lock().unwrap().attempts.last().unwrap().clone();
    let s = s.restart().await;
    seen.lock().unwrap().fail_next = 0;
    wait_for(&seen, "the retry after restart", |s| {
        s.attempts.last().is_some_and(|a| a.0 == txn)
            && s.fail_next == 0
            && s.attempts.len() > before + 1
    })
    .await;
    let last = seen.lock().unwrap().attempts.last().unwrap().clone();
    assert_eq!(last.0, txn);
    assert_eq!(last.2, body);
    // And it is delivered once: nothing more follows for that message.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = delivered(&seen)
        .iter()
        .filter(|e| e["content"]["body"] == "while down")
        .count();
    assert_eq!(count, 1);
    drop(s);
}

#[tokio::test]
async fn unknown_namespaced_users_are_queried_and_ping_round_trips() {
    let (s, seen, _) = server_with_appservice().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let (status, body) = alice
        .post(
            &format!("{V3}/rooms/{}/invite", enc(&room)),
            json!({ "user_id": "@whatsapp_555:localhost" }),
        )
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    assert_eq!(
        seen.lock().unwrap().user_queries,
        vec!["@whatsapp_555:localhost"]
    );

    let asc = appservice_client(&s);
    let (status, body) = asc
        .post(
            "/_matrix/client/v1/appservice/whatsapp/ping",
            json!({ "transaction_id": "ping-1" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["duration_ms"].is_u64());
    let pings = seen.lock().unwrap().pings.clone();
    assert_eq!(
        pings,
        vec![(
            format!("Bearer {HS_TOKEN}"),
            json!({ "transaction_id": "ping-1" })
        )]
    );
    let (status, body) = asc
        .post("/_matrix/client/v1/appservice/other/ping", json!({}))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = alice
        .post("/_matrix/client/v1/appservice/whatsapp/ping", json!({}))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_bad_registration_file_stops_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        registration("http://127.0.0.1:9")
            .replace("'@whatsapp_.*:localhost'", "'@whatsapp_(:localhost'"),
    )
    .unwrap();
    let config = common::config_for(
        &dir.path().join("data"),
        &format!("[appservice]\nregistrations = [{file:?}]\n"),
    );
    let err = charla::server::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("regex"), "{err}");
    assert!(err.to_string().contains("bad.yaml"), "{err}");
}

#[tokio::test]
async fn ephemeral_events_reach_an_appservice_that_asks_for_them() {
    let (s, seen, _) = server_with_registration("de.sorunome.msc2409.push_ephemeral: true\n").await;
    let asc = appservice_client(&s);
    register_puppet(&asc, "whatsapp_1").await;
    let puppet = "@whatsapp_1:localhost";
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({ "invite": [puppet] })).await;
    asc.post(
        &as_user(&format!("{V3}/rooms/{}/join", enc(&room)), puppet),
        json!({}),
    )
    .await;
    let event = alice.send_text(&room, "t1", "hola").await;
    alice
        .put(
            &format!(
                "{V3}/rooms/{}/typing/{}",
                enc(&room),
                enc("@alice:localhost")
            ),
            json!({ "typing": true, "timeout": 10000 }),
        )
        .await;
    alice
        .post(
            &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event)),
            json!({}),
        )
        .await;
    let edus = |s: &Seen| -> Vec<Value> {
        s.attempts
            .iter()
            .flat_map(|a| a.2["ephemeral"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    wait_for(&seen, "typing and a receipt", |s| {
        let e = edus(s);
        e.iter().any(|e| e["type"] == "m.typing") && e.iter().any(|e| e["type"] == "m.receipt")
    })
    .await;
    let seen = seen.lock().unwrap();
    let all = edus(&seen);
    let typing = all.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(typing["room_id"], room.as_str());
    assert_eq!(typing["content"]["user_ids"], json!(["@alice:localhost"]));
    let receipt = all.iter().find(|e| e["type"] == "m.receipt").unwrap();
    assert!(
        receipt["content"][&event]["m.read"]["@alice:localhost"]["ts"].is_u64(),
        "{receipt}"
    );
    // The unstable name carries the same events.
    let with = seen
        .attempts
        .iter()
        .find(|a| a.2.get("ephemeral").is_some())
        .unwrap();
    assert_eq!(with.2["ephemeral"], with.2["de.sorunome.msc2409.ephemeral"]);
}
