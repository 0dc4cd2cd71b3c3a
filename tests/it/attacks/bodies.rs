//! Property tests: random and mutated bodies at every request parser the server has (the
//! Client-Server API, push rules and filters, the support API, the appservice transaction
//! endpoint, the WhatsApp webhook). Whatever arrives, the server answers: never a panic (a
//! closed connection), never a 500, and a 4xx changes nothing (the stream head, which every
//! durable change moves, stays where it was).
//!
//! One server serves every case of a property, so its state accumulates as a real server's
//! would; each case is one request and its check.

use std::sync::Arc;

use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{Value, json};

use crate::common::{Client, TestServer, V3, enc};

/// Nested JSON of every type, with the strings and numbers parsers meet at their edges.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![Just(u64::MAX), Just(9_007_199_254_740_993u64)].prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinities", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        edge_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn edge_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        Just(String::new()),
        Just("@alice:localhost".to_owned()),
        Just("!nowhere:localhost".to_owned()),
        Just("$event".to_owned()),
        Just("m.room.message".to_owned()),
        Just("m.login.password".to_owned()),
        Just("\u{0}\u{202e}\u{fffd}".to_owned()),
        Just("?".repeat(600)),
        (1usize..20_000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Field names the parsers look for, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "type",
            "body",
            "msgtype",
            "content",
            "user_id",
            "room_id",
            "membership",
            "name",
            "topic",
            "preset",
            "invite",
            "auth",
            "session",
            "password",
            "identifier",
            "user",
            "username",
            "device_id",
            "pattern",
            "conditions",
            "actions",
            "kind",
            "key",
            "events",
            "room",
            "timeline",
            "limit",
            "types",
            "not_types",
            "rooms",
            "senders",
            "filter",
            "state",
            "participants",
            "priority",
            "labels",
            "status",
            "title",
            "text",
            "assignee",
            "contact",
            "channel",
            "entry",
            "changes",
            "value",
            "messages",
            "statuses",
            "from",
            "id",
            "ephemeral",
            "to_device",
            "one_time_keys",
            "device_keys",
            "pushkey",
            "app_id",
            "data",
            "url",
            "displayname",
            "avatar_url",
            "reason",
            "initial_state",
            "creation_content",
            "power_level_content_override",
            "is_direct",
        ])
        .prop_map(str::to_owned),
        "[a-z_.]{1,12}",
    ]
}

/// What a case sends: a mutation of a valid body, any JSON, or bytes that are not JSON.
#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Raw(Vec<u8>),
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Json(v) => serde_json::to_vec(v).unwrap(),
            Body::Raw(b) => b.clone(),
        }
    }
}

fn bodies(valid: Value) -> impl Strategy<Value = Body> {
    let text = serde_json::to_vec(&valid).unwrap();
    let len = text.len();
    prop_oneof![
        4 => mutated(valid).prop_map(Body::Json),
        2 => any_json().prop_map(Body::Json),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Body::Raw),
        1 => (0..len.max(1)).prop_map(move |cut| Body::Raw(text[..cut].to_vec())),
    ]
}

/// `valid` with one to three of its nodes replaced, nulled, removed or retyped.
fn mutated(valid: Value) -> impl Strategy<Value = Value> {
    let nodes = count(&valid);
    prop::collection::vec((0..nodes, 0u8..4, any_json()), 1..4).prop_map(move |edits| {
        let mut v = valid.clone();
        for (target, op, replacement) in edits {
            if let Edit::Remove = edit(&mut v, &mut 0, target, op, &replacement) {
                v = Value::Null;
            }
        }
        v
    })
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

enum Edit {
    NotHere,
    Done,
    /// The node is to be removed from its parent.
    Remove,
}

/// Applies `op` to node number `target`, counting nodes depth-first from `next`.
fn edit(v: &mut Value, next: &mut usize, target: usize, op: u8, replacement: &Value) -> Edit {
    let me = *next;
    *next += 1;
    if me == target {
        match op {
            0 => *v = replacement.clone(),
            1 => *v = Value::Null,
            2 => return Edit::Remove,
            _ => *v = Value::String(v.to_string()),
        }
        return Edit::Done;
    }
    match v {
        Value::Array(items) => {
            for n in 0..items.len() {
                match edit(&mut items[n], next, target, op, replacement) {
                    Edit::NotHere => {}
                    Edit::Done => return Edit::Done,
                    Edit::Remove => {
                        items.remove(n);
                        return Edit::Done;
                    }
                }
            }
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let Some(child) = map.get_mut(&k) else {
                    continue;
                };
                match edit(child, next, target, op, replacement) {
                    Edit::NotHere => {}
                    Edit::Done => return Edit::Done,
                    Edit::Remove => {
                        map.remove(&k);
                        return Edit::Done;
                    }
                }
            }
        }
        _ => {}
    }
    Edit::NotHere
}

/// One request target: method, path, a valid body, and the headers a case adds.
struct Target {
    method: reqwest::Method,
    path: String,
    valid: Value,
    /// `Some(secret)`: the body is signed as Meta signs webhooks.
    sign_with: Option<String>,
    token: Option<String>,
    /// Whether an accepted request starts work that writes later (a bridge's handling): then
    /// a 4xx cannot be told from that work by the stream head, and only the answer is checked.
    writes_later: bool,
}

/// Sends the case and checks the answer: a status, never a 5xx, and no change for a 4xx.
async fn check(s: &TestServer, target: &Target, body: &Body) -> Result<(), TestCaseError> {
    let bytes = body.bytes();
    let before = s.server.services.stream.head();
    // A `{q}` in the path takes the body, as a query parameter's value (inline filters).
    let mut req = if target.path.contains("{q}") {
        let q = enc(&String::from_utf8_lossy(&bytes));
        reqwest::Client::new().request(
            target.method.clone(),
            s.url(&target.path.replace("{q}", &q)),
        )
    } else {
        reqwest::Client::new()
            .request(target.method.clone(), s.url(&target.path))
            .header("content-type", "application/json")
            .body(bytes.clone())
    };
    if let Some(t) = &target.token {
        req = req.bearer_auth(t);
    }
    if let Some(secret) = &target.sign_with {
        req = req.header(
            "x-hub-signature-256",
            whatsapp::signature::sign(secret, &bytes),
        );
    }
    let res = req.send().await.map_err(|e| {
        TestCaseError::fail(format!(
            "{} {}: no answer ({e})",
            target.method, target.path
        ))
    })?;
    let status = res.status().as_u16();
    let answer = res.text().await.unwrap_or_default();
    prop_assert!(
        status < 500,
        "{} {} answered {status}: {answer}",
        target.method,
        target.path
    );
    if (400..500).contains(&status) && !target.writes_later {
        prop_assert_eq!(
            s.server.services.stream.head(),
            before,
            "{} {} answered {} and changed something: {}",
            target.method,
            target.path,
            status,
            answer
        );
    }
    Ok(())
}

const CASES: u32 = 64;

/// Runs `CASES` generated bodies at each target on one server, from a plain thread (proptest's
/// runner is synchronous; the server runs on `rt`).
fn run(rt: &tokio::runtime::Runtime, s: &Arc<TestServer>, targets: Vec<Target>) {
    for target in targets {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: CASES,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let strategy = bodies(target.valid.clone());
        let result = runner.run(&strategy, |body| rt.block_on(check(s, &target, &body)));
        if let Err(e) = result {
            panic!("{} {}: {e}", target.method, target.path);
        }
    }
}

/// A server with two users, a room and the support desk, WhatsApp bridge and its webhook.
struct World {
    s: Arc<TestServer>,
    alice: Client,
    room: String,
    hs_token: String,
}

async fn world() -> World {
    let s = TestServer::start_with(
        "[limits]\nsend_per_second = 100000.0\nsend_burst = 100000\n\
         login_per_second = 100000.0\nlogin_burst = 100000\n\
         [support]\nadmins = [\"@alice:localhost\"]\ngreeting = \"\"\n\
         customer_conversations_per_hour = 100000\ncustomer_conversation_burst = 100000\n\
         [bridges.whatsapp]\nenabled = true\napi_base = \"http://127.0.0.1:9/v21.0\"\n\
         phone_number_id = \"106540352242922\"\naccess_token = \"token\"\n\
         app_secret = \"app-secret\"\nverify_token = \"verify\"\n",
    )
    .await;
    let alice = s.user("alice").await;
    s.user("bob").await;
    let room = alice.create_room(json!({ "name": "fuzz" })).await;
    let registration = s
        .server
        .services
        .config
        .appservice
        .registrations
        .last()
        .cloned()
        .expect("the bridge's registration");
    let yaml = std::fs::read_to_string(registration).unwrap();
    let hs_token = yaml
        .lines()
        .find_map(|l| l.strip_prefix("hs_token:"))
        .map(|t| t.trim().trim_matches(['"', '\'']).to_owned())
        .expect("hs_token in the registration");
    World {
        s: Arc::new(s),
        alice,
        room,
        hs_token,
    }
}

fn target(method: reqwest::Method, path: String, valid: Value, token: &Option<String>) -> Target {
    Target {
        method,
        path,
        valid,
        sign_with: None,
        token: token.clone(),
        writes_later: false,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn client_server_bodies_never_break_the_server() {
    use reqwest::Method as M;
    let rt = runtime();
    let w = rt.block_on(world());
    let t = &w.alice.token;
    let room = enc(&w.room);
    let targets = vec![
        target(
            M::POST,
            format!("{V3}/register"),
            json!({ "username": "fuzzer", "password": "pw", "auth": { "type": "m.login.dummy" } }),
            &None,
        ),
        target(
            M::POST,
            format!("{V3}/login"),
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "x" }),
            &None,
        ),
        target(
            M::POST,
            format!("{V3}/createRoom"),
            json!({ "name": "r", "preset": "private_chat", "invite": ["@bob:localhost"],
                    "initial_state": [{ "type": "m.room.topic", "state_key": "", "content": { "topic": "t" } }],
                    "power_level_content_override": { "users_default": 0 } }),
            t,
        ),
        target(
            M::PUT,
            format!("{V3}/rooms/{room}/send/m.room.message/fz"),
            json!({ "msgtype": "m.text", "body": "hi", "m.relates_to": { "rel_type": "m.thread", "event_id": "$x" } }),
            t,
        ),
        target(
            M::PUT,
            format!("{V3}/rooms/{room}/state/m.room.name"),
            json!({ "name": "n" }),
            t,
        ),
        target(
            M::PUT,
            format!("{V3}/rooms/{room}/state/m.room.power_levels"),
            json!({ "users": { "@alice:localhost": 100 }, "events_default": 0 }),
            t,
        ),
        target(
            M::PUT,
            format!(
                "{V3}/rooms/{room}/state/m.room.member/{}",
                enc("@alice:localhost")
            ),
            json!({ "membership": "join", "displayname": "Alice" }),
            t,
        ),
        target(
            M::POST,
            format!("{V3}/rooms/{room}/invite"),
            json!({ "user_id": "@bob:localhost" }),
            t,
        ),
        target(
            M::POST,
            format!("{V3}/rooms/{room}/receipt/m.read/$nope"),
            json!({ "thread_id": "main" }),
            t,
        ),
        target(
            M::PUT,
            format!("{V3}/rooms/{room}/typing/{}", enc("@alice:localhost")),
            json!({ "typing": true, "timeout": 3000 }),
            t,
        ),
        target(
            M::PUT,
            format!("{V3}/profile/{}/displayname", enc("@alice:localhost")),
            json!({ "displayname": "Alice" }),
            t,
        ),
        target(
            M::POST,
            format!("{V3}/user/{}/filter", enc("@alice:localhost")),
            json!({ "room": { "timeline": { "limit": 10, "types": ["m.room.message"] },
                              "state": { "lazy_load_members": true } } }),
            t,
        ),
        target(
            M::PUT,
            format!("{V3}/pushrules/global/override/fz"),
            json!({ "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": "a*b?" }],
                    "actions": ["notify", { "set_tweak": "highlight" }] }),
            t,
        ),
        target(
            M::PUT,
            format!("{V3}/pushrules/global/content/fz"),
            json!({ "pattern": "cake", "actions": ["notify"] }),
            t,
        ),
        target(
            M::POST,
            format!("{V3}/pushers/set"),
            json!({ "kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A",
                    "device_display_name": "D", "lang": "en",
                    "data": { "url": "https://push.example.com/_matrix/push/v1/notify" } }),
            t,
        ),
        target(
            M::PUT,
            format!(
                "{V3}/user/{}/account_data/org.example",
                enc("@alice:localhost")
            ),
            json!({ "a": 1 }),
            t,
        ),
        target(
            M::POST,
            format!("{V3}/keys/upload"),
            json!({ "one_time_keys": { "signed_curve25519:AAAA": { "key": "k", "signatures": {} } } }),
            t,
        ),
        target(
            M::POST,
            format!("{V3}/keys/query"),
            json!({ "device_keys": { "@bob:localhost": [] } }),
            t,
        ),
        target(
            M::POST,
            format!("{V3}/keys/claim"),
            json!({ "one_time_keys": { "@bob:localhost": { "DEV": "signed_curve25519" } } }),
            t,
        ),
        target(
            M::PUT,
            format!("{V3}/sendToDevice/m.test/fz"),
            json!({ "messages": { "@bob:localhost": { "*": { "a": 1 } } } }),
            t,
        ),
        target(
            M::POST,
            format!("{V3}/account/password"),
            json!({ "new_password": "x" }),
            t,
        ),
        target(
            M::GET,
            format!("{V3}/sync?timeout=0&filter={{q}}"),
            json!({ "room": { "timeline": { "limit": 5, "not_senders": ["@bob:localhost"] },
                              "rooms": [w.room], "include_leave": true },
                    "presence": { "types": [] }, "event_fields": ["content.body"] }),
            t,
        ),
        target(
            M::GET,
            format!("{V3}/rooms/{room}/messages?dir=b&filter={{q}}"),
            json!({ "types": ["m.room.message"], "limit": 3, "lazy_load_members": true }),
            t,
        ),
        target(
            M::POST,
            format!("{V3}/search"),
            json!({ "search_categories": { "room_events": { "search_term": "x" } } }),
            t,
        ),
    ];
    run(&rt, &w.s, targets);
}

#[test]
fn support_api_bodies_never_break_the_server() {
    use reqwest::Method as M;
    let rt = runtime();
    let w = rt.block_on(world());
    let t = &w.alice.token;
    let api = "/api/support/v1";
    let room = enc(&w.room);
    let targets = vec![
        target(
            M::POST,
            format!("{api}/conversations"),
            json!({ "participants": ["@bob:localhost"], "name": "c", "priority": "high",
                    "labels": ["vip"], "contact": { "name": "B" } }),
            t,
        ),
        target(
            M::PATCH,
            format!("{api}/conversations/{room}"),
            json!({ "status": "pending", "priority": "low", "add_labels": ["x"], "language": "es" }),
            t,
        ),
        target(
            M::POST,
            format!("{api}/conversations/{room}/assign"),
            json!({ "user_id": "@alice:localhost" }),
            t,
        ),
        target(
            M::POST,
            format!("{api}/conversations/{room}/notes"),
            json!({ "text": "note" }),
            t,
        ),
        target(
            M::POST,
            format!("{api}/tickets"),
            json!({ "room_id": w.room, "title": "t", "priority": "urgent" }),
            t,
        ),
        target(
            M::PATCH,
            format!("{api}/tickets/1"),
            json!({ "status": "resolved", "assignee": null }),
            t,
        ),
    ];
    run(&rt, &w.s, targets);
}

#[test]
fn appservice_and_webhook_bodies_never_break_the_server() {
    use reqwest::Method as M;
    let rt = runtime();
    let w = rt.block_on(world());
    let txn = json!({
        "events": [{ "type": "m.room.message", "room_id": w.room, "sender": "@alice:localhost",
                     "event_id": "$e", "origin_server_ts": 1, "content": { "msgtype": "m.text", "body": "hi" } }],
        "ephemeral": [{ "type": "m.receipt", "room_id": w.room, "content": {} }],
    });
    let webhook = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "1", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": "106540352242922" },
            "contacts": [{ "profile": { "name": "María" }, "wa_id": "34600111222" }],
            "messages": [{ "from": "34600111222", "id": "wamid.X", "timestamp": "1700000000",
                           "type": "text", "text": { "body": "Hola" } }],
            "statuses": [{ "id": "wamid.Y", "status": "read", "timestamp": "1700000000",
                           "recipient_id": "34600111222" }]
        } }] }],
    });
    let transaction = Target {
        writes_later: true,
        ..target(
            M::PUT,
            "/bridges/whatsapp/_matrix/app/v1/transactions/fz".to_owned(),
            txn,
            &Some(w.hs_token.clone()),
        )
    };
    let signed = Target {
        method: M::POST,
        path: "/bridges/whatsapp/webhook".to_owned(),
        valid: webhook,
        sign_with: Some("app-secret".to_owned()),
        token: None,
        writes_later: true,
    };
    run(&rt, &w.s, vec![transaction, signed]);
    // Everything the webhook accepted was taken apart by the inbox without stopping it: the
    // server still answers and the bridge is alive.
    let (status, _) = rt.block_on(w.alice.get(&format!("{V3}/account/whoami")));
    assert_eq!(status, 200);
}
