//! Error paths of the Client-Server API: status codes, errcodes and bodies as the spec (v1.16)
//! gives them, and for every refused write, proof that nothing changed.

use crate::common::{Client, TestServer, V3, assert_error, enc};
use reqwest::Method;
use serde_json::{Value, json};

/// Sends a request with no body at all (no `Content-Type` either), as some clients do.
async fn bare(c: &Client, method: Method, path: &str) -> (u16, Value) {
    let mut req = c.http.request(method, format!("{}{}", c.base, path));
    if let Some(t) = &c.token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let bytes = res.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Every event of a room, oldest first, as a member reads it through `/messages`.
async fn timeline(c: &Client, room: &str) -> Vec<Value> {
    let (status, body) = c
        .get(&format!(
            "{V3}/rooms/{}/messages?dir=b&limit=1000",
            enc(room)
        ))
        .await;
    assert_eq!(status, 200, "messages: {body}");
    assert!(
        body.get("end").is_none(),
        "one page holds the whole room: {body}"
    );
    let mut events = body["chunk"].as_array().unwrap().clone();
    events.reverse();
    events
}

fn event_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The bodies of the room's `m.room.message` events, oldest first.
async fn message_bodies(c: &Client, room: &str) -> Vec<String> {
    timeline(c, room)
        .await
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn joined_rooms(c: &Client) -> Vec<String> {
    let (status, body) = c.get(&format!("{V3}/joined_rooms")).await;
    assert_eq!(status, 200, "joined_rooms: {body}");
    let mut rooms: Vec<String> = body["joined_rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    rooms.sort();
    rooms
}

fn send_path(room: &str, txn: &str) -> String {
    format!("{V3}/rooms/{}/send/m.room.message/{txn}", enc(room))
}

#[tokio::test]
async fn unknown_endpoint_is_404_unrecognized() {
    let s = TestServer::start().await;
    let anon = s.client();
    let alice = s.user("alice").await;
    for (c, path) in [
        (&anon, "/_matrix/client/v3/no_such_endpoint"),
        (&anon, "/_matrix/client/v9/sync"),
        (&anon, "/nothing/here"),
        (
            &alice,
            "/_matrix/client/v3/rooms/!r:localhost/no_such_thing",
        ),
    ] {
        let (status, body) = c.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(
            body,
            json!({ "errcode": "M_UNRECOGNIZED", "error": "Unrecognized request" }),
            "{path}"
        );
    }
    let (status, body) = alice
        .post("/_matrix/client/v3/no_such_endpoint", json!({}))
        .await;
    assert_eq!(
        (status, &body["errcode"]),
        (404, &json!("M_UNRECOGNIZED")),
        "{body}"
    );
}

#[tokio::test]
async fn wrong_method_on_known_path_is_405_unrecognized() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let cases: Vec<(Method, String)> = vec![
        (Method::POST, "/_matrix/client/versions".into()),
        (Method::GET, format!("{V3}/createRoom")),
        (Method::DELETE, format!("{V3}/sync")),
        (Method::PUT, format!("{V3}/login")),
        (
            Method::GET,
            format!("{V3}/rooms/{}/send/m.room.message/t1", enc(&room)),
        ),
        (Method::POST, format!("{V3}/account/whoami")),
    ];
    for (method, path) in cases {
        let (status, body) = alice.raw(method.clone(), &path, b"{}".to_vec()).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(
            body,
            json!({ "errcode": "M_UNRECOGNIZED", "error": "Unrecognized request" })
        );
    }
    // The GET on the send path stored nothing.
    assert!(message_bodies(&alice, &room).await.is_empty());
}

#[tokio::test]
async fn missing_token_is_401_and_changes_nothing() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let before = event_ids(&timeline(&alice, &room).await);
    let anon = s.client();

    let (status, body) = anon.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 401);
    assert_eq!(body["errcode"], "M_MISSING_TOKEN", "{body}");

    let (status, body) = anon
        .put(
            &send_path(&room, "t1"),
            json!({ "msgtype": "m.text", "body": "anon" }),
        )
        .await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN");
    let (status, body) = anon.post(&format!("{V3}/createRoom"), json!({})).await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN");
    let (status, body) = anon.get(&format!("{V3}/sync")).await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN");
    // The hand-written empty-state-key route authenticates too.
    let (status, body) = anon
        .put(
            &format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)),
            json!({ "topic": "anon" }),
        )
        .await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN");

    assert_eq!(event_ids(&timeline(&alice, &room).await), before);
    assert_eq!(joined_rooms(&alice).await, vec![room]);
}

#[tokio::test]
async fn bad_token_in_header_or_query_is_401_unknown_token() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let before = event_ids(&timeline(&alice, &room).await);

    let mut bad = s.client();
    bad.token = Some("not-a-token".into());
    let (status, body) = bad.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 401);
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN", "{body}");
    assert_eq!(body["soft_logout"], false, "{body}");
    let (status, body) = bad
        .put(
            &send_path(&room, "t1"),
            json!({ "msgtype": "m.text", "body": "x" }),
        )
        .await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");

    let anon = s.client();
    let (status, body) = anon
        .get(&format!("{V3}/account/whoami?access_token=not-a-token"))
        .await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(body["soft_logout"], false);
    let path = format!("{}?access_token=not-a-token", send_path(&room, "t2"));
    let (status, body) = anon
        .put(&path, json!({ "msgtype": "m.text", "body": "x" }))
        .await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");

    assert_eq!(event_ids(&timeline(&alice, &room).await), before);
}

#[tokio::test]
async fn access_token_in_query_string_works() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let token = alice.token.clone().unwrap();
    let room = alice.create_room(json!({})).await;
    let anon = s.client();

    let (status, body) = anon
        .get(&format!("{V3}/account/whoami?access_token={token}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");

    let path = format!("{}?access_token={token}", send_path(&room, "q1"));
    let (status, body) = anon
        .put(&path, json!({ "msgtype": "m.text", "body": "via query" }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(message_bodies(&alice, &room).await, vec!["via query"]);

    // Query-token auth reaches the hand-written empty-state-key routes as well.
    let path = format!(
        "{V3}/rooms/{}/state/m.room.topic?access_token={token}",
        enc(&room)
    );
    let (status, body) = anon.put(&path, json!({ "topic": "queried" })).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = anon.get(&path).await;
    assert_eq!((status, body), (200, json!({ "topic": "queried" })));
}

#[tokio::test]
async fn malformed_json_is_400_not_json_and_changes_nothing() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let before = event_ids(&timeline(&alice, &room).await);

    let cases: Vec<(Method, String, &[u8])> = vec![
        (Method::POST, format!("{V3}/createRoom"), b"{bad"),
        (
            Method::PUT,
            send_path(&room, "t1"),
            b"{\"msgtype\": \"m.text\", \"body\": ",
        ),
        (
            Method::PUT,
            format!("{V3}/rooms/{}/state/m.room.name/", enc(&room)),
            b"not json",
        ),
        (
            Method::PUT,
            format!("{V3}/rooms/{}/state/m.room.name", enc(&room)),
            b"{'name': 'x'}",
        ),
        (
            Method::PUT,
            format!("{V3}/user/{}/account_data/x.y", enc("@alice:localhost")),
            b"{",
        ),
        (
            Method::POST,
            format!("{V3}/rooms/{}/invite", enc(&room)),
            b"\xff\xfe",
        ),
    ];
    for (method, path, body) in cases {
        let (status, res) = alice.raw(method.clone(), &path, body.to_vec()).await;
        assert_eq!(status, 400, "{method} {path}: {res}");
        assert_eq!(
            res,
            json!({ "errcode": "M_NOT_JSON", "error": "Content not JSON." }),
            "{path}"
        );
    }
    let (status, res) = s
        .client()
        .raw(
            Method::POST,
            &format!("{V3}/register"),
            b"{\"username\":".to_vec(),
        )
        .await;
    assert_error(status, &res, 400, "M_NOT_JSON");

    assert_eq!(event_ids(&timeline(&alice, &room).await), before);
    assert_eq!(joined_rooms(&alice).await, vec![room]);
    let (status, _) = alice
        .get(&format!(
            "{V3}/user/{}/account_data/x.y",
            enc("@alice:localhost")
        ))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn wrong_json_shape_is_400_bad_json_and_changes_nothing() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let _bob = s.user("bob").await;
    let room = alice.create_room(json!({})).await;
    let before = event_ids(&timeline(&alice, &room).await);

    let cases: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            format!("{V3}/createRoom"),
            json!({ "name": 5 }),
        ),
        (
            Method::POST,
            format!("{V3}/createRoom"),
            json!({ "invite": "@bob:localhost" }),
        ),
        (
            Method::POST,
            format!("{V3}/createRoom"),
            json!({ "preset": "no_such_preset" }),
        ),
        (Method::POST, format!("{V3}/createRoom"), json!([1, 2])),
        (
            Method::POST,
            format!("{V3}/rooms/{}/invite", enc(&room)),
            json!({ "user_id": 7 }),
        ),
        (Method::PUT, send_path(&room, "arr"), json!([1])),
        (Method::PUT, send_path(&room, "str"), json!("text")),
        (Method::PUT, send_path(&room, "num"), json!(5)),
        (
            Method::PUT,
            format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room)),
            json!(["topic"]),
        ),
        (
            Method::PUT,
            format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)),
            json!("topic"),
        ),
        (
            Method::PUT,
            format!("{V3}/user/{}/account_data/x.y", enc("@alice:localhost")),
            json!([1]),
        ),
    ];
    for (method, path, body) in cases {
        let (status, res) = alice
            .raw(method.clone(), &path, serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(
            (status, &res["errcode"]),
            (400, &json!("M_BAD_JSON")),
            "{method} {path} {body}: {res}"
        );
    }
    // A login without a password is malformed, not a wrong password.
    let (status, res) = s
        .client()
        .post(
            &format!("{V3}/login"),
            json!({ "type": "m.login.password", "user": "alice" }),
        )
        .await;
    assert_error(status, &res, 400, "M_BAD_JSON");

    assert_eq!(event_ids(&timeline(&alice, &room).await), before);
    assert_eq!(joined_rooms(&alice).await, vec![room.clone()]);
    let (_, sync) = alice.get(&format!("{V3}/sync")).await;
    assert!(
        sync["rooms"]["invite"]
            .as_object()
            .is_none_or(|m| m.is_empty())
    );
    let (status, _) = alice
        .get(&format!(
            "{V3}/user/{}/account_data/x.y",
            enc("@alice:localhost")
        ))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn oversized_body_is_413_too_large_and_stores_nothing() {
    let s = TestServer::start_with("[limits]\nmax_request_bytes = 1000\n").await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let before = event_ids(&timeline(&alice, &room).await);
    let big = "x".repeat(2000);

    let (status, body) = alice
        .put(
            &send_path(&room, "big"),
            json!({ "msgtype": "m.text", "body": big }),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body,
        json!({ "errcode": "M_TOO_LARGE", "error": "Request body too large" })
    );

    let (status, body) = alice
        .put(
            &format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)),
            json!({ "topic": big }),
        )
        .await;
    assert_error(status, &body, 413, "M_TOO_LARGE");
    let (status, body) = alice
        .put(
            &format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room)),
            json!({ "topic": big }),
        )
        .await;
    assert_error(status, &body, 413, "M_TOO_LARGE");
    let (status, body) = alice
        .post(&format!("{V3}/createRoom"), json!({ "topic": big }))
        .await;
    assert_error(status, &body, 413, "M_TOO_LARGE");

    assert_eq!(event_ids(&timeline(&alice, &room).await), before);
    assert_eq!(joined_rooms(&alice).await, vec![room.clone()]);
    // A body just under the limit still goes through.
    let (status, body) = alice
        .put(
            &send_path(&room, "small"),
            json!({ "msgtype": "m.text", "body": "x".repeat(900) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(message_bodies(&alice, &room).await, vec!["x".repeat(900)]);
}

#[tokio::test]
async fn send_rate_limit_is_429_with_retry_after_and_stores_nothing() {
    let s = TestServer::start_with("[limits]\nsend_per_second = 1.0\nsend_burst = 2\n").await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);

    let first = alice.send_text(&room, "t1", "one").await;
    alice.send_text(&room, "t2", "two").await;
    let (status, body) = alice
        .put(
            &send_path(&room, "t3"),
            json!({ "msgtype": "m.text", "body": "three" }),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
    let retry = body["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms is an integer");
    assert!((1..=1000).contains(&retry), "retry_after_ms = {retry}");

    // A retry of a transaction that went through is answered, not limited: it stores nothing.
    let (status, body) = alice
        .put(
            &send_path(&room, "t1"),
            json!({ "msgtype": "m.text", "body": "one" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({ "event_id": first })));

    // The limit is per user: bob still sends.
    bob.send_text(&room, "b1", "bob's").await;
    assert_eq!(
        message_bodies(&alice, &room).await,
        vec!["one", "two", "bob's"]
    );
}

#[tokio::test]
async fn login_rate_limit_is_429_with_retry_after() {
    let s = TestServer::start_with("[limits]\nlogin_per_second = 0.1\nlogin_burst = 2\n").await;
    let _alice = s.user("alice").await;
    let _bob = s.user("bob").await;
    let anon = s.client();
    let login = |user: &str, password: &str| json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    let (status, body) = anon
        .post(&format!("{V3}/login"), login("alice", "wrong"))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = anon
        .post(&format!("{V3}/login"), login("alice", "secret-pw"))
        .await;
    assert_eq!(status, 200, "{body}");
    // The third attempt, even with the right password, is refused before it is checked.
    let (status, body) = anon
        .post(&format!("{V3}/login"), login("alice", "secret-pw"))
        .await;
    assert_error(status, &body, 429, "M_LIMIT_EXCEEDED");
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body}"
    );
    // The full user id counts against the same bucket as the localpart.
    let (status, body) = anon
        .post(
            &format!("{V3}/login"),
            login("@alice:localhost", "secret-pw"),
        )
        .await;
    assert_error(status, &body, 429, "M_LIMIT_EXCEEDED");
    // From this address every account is limited now (spraying); from another address,
    // another account logs in (its own and its address's allowances are untouched).
    let (status, body) = anon
        .post(&format!("{V3}/login"), login("bob", "secret-pw"))
        .await;
    assert_error(status, &body, 429, "M_LIMIT_EXCEEDED");
    let other_address = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let res = other_address
        .post(s.url(&format!("{V3}/login")))
        .json(&login("bob", "secret-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn register_taken_name_is_400_user_in_use() {
    let s = TestServer::start().await;
    let _alice = s.user("alice").await;
    let anon = s.client();
    for name in ["alice", "ALICE"] {
        let (status, body) = anon
            .post(
                &format!("{V3}/register"),
                json!({ "username": name, "password": "another-pw", "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_error(status, &body, 400, "M_USER_IN_USE");
        // Refused before the auth stages: no UIA challenge for a taken name.
        let (status, body) = anon
            .post(
                &format!("{V3}/register"),
                json!({ "username": name, "password": "another-pw" }),
            )
            .await;
        assert_error(status, &body, 400, "M_USER_IN_USE");
    }
    // The existing account keeps its password.
    let (status, _) = anon
        .post(
            &format!("{V3}/login"),
            json!({ "type": "m.login.password", "user": "alice", "password": "secret-pw" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = anon
        .post(
            &format!("{V3}/login"),
            json!({ "type": "m.login.password", "user": "alice", "password": "another-pw" }),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn invalid_username_is_400_invalid_username() {
    let s = TestServer::start().await;
    let anon = s.client();
    for name in ["bad name", "al:ice", "émile", "a@b", "", &"a".repeat(250)] {
        let (status, body) = anon
            .post(
                &format!("{V3}/register"),
                json!({ "username": name, "password": "pw-123456", "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_error(status, &body, 400, "M_INVALID_USERNAME");
        let (status, body) = anon
            .get(&format!("{V3}/register/available?username={}", enc(name)))
            .await;
        assert_error(status, &body, 400, "M_INVALID_USERNAME");
    }
}

#[tokio::test]
async fn guest_registration_is_403_guest_access_forbidden() {
    let s = TestServer::start().await;
    let anon = s.client();
    for body in [
        json!({}),
        json!({ "username": "guesty", "password": "pw", "auth": { "type": "m.login.dummy" } }),
    ] {
        let (status, res) = anon.post(&format!("{V3}/register?kind=guest"), body).await;
        assert_error(status, &res, 403, "M_GUEST_ACCESS_FORBIDDEN");
    }
    let (status, res) = bare(&anon, Method::POST, &format!("{V3}/register?kind=guest")).await;
    assert_error(status, &res, 403, "M_GUEST_ACCESS_FORBIDDEN");
    // Nothing was created: the name is still free.
    let (status, res) = anon
        .get(&format!("{V3}/register/available?username=guesty"))
        .await;
    assert_eq!((status, res), (200, json!({ "available": true })));
}

#[tokio::test]
async fn unknown_room_is_forbidden_or_not_found() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let _bob = s.user("bob").await;
    let room = "!nosuchroom:localhost";
    let r = enc(room);

    // Reading or writing a room one is not in: 403, whether or not it exists (as Synapse).
    let forbidden: Vec<(Method, String, Value)> = vec![
        (
            Method::PUT,
            send_path(room, "t1"),
            json!({ "msgtype": "m.text", "body": "x" }),
        ),
        (
            Method::GET,
            format!("{V3}/rooms/{r}/messages?dir=b"),
            Value::Null,
        ),
        (Method::GET, format!("{V3}/rooms/{r}/state"), Value::Null),
        (
            Method::GET,
            format!("{V3}/rooms/{r}/state/m.room.name/"),
            Value::Null,
        ),
        (
            Method::GET,
            format!("{V3}/rooms/{r}/state/m.room.name"),
            Value::Null,
        ),
        (Method::GET, format!("{V3}/rooms/{r}/members"), Value::Null),
        (
            Method::GET,
            format!("{V3}/rooms/{r}/joined_members"),
            Value::Null,
        ),
        (
            Method::PUT,
            format!("{V3}/rooms/{r}/state/m.room.name/"),
            json!({ "name": "x" }),
        ),
        (
            Method::POST,
            format!("{V3}/rooms/{r}/invite"),
            json!({ "user_id": "@bob:localhost" }),
        ),
        (
            Method::PUT,
            format!("{V3}/directory/room/{}", enc("#a:localhost")),
            json!({ "room_id": room }),
        ),
    ];
    for (method, path, body) in forbidden {
        let (status, res) = if body.is_null() {
            alice.get(&path).await
        } else {
            alice
                .raw(method.clone(), &path, serde_json::to_vec(&body).unwrap())
                .await
        };
        assert_eq!(status, 403, "{method} {path}: {res}");
        assert_eq!(res["errcode"], "M_FORBIDDEN", "{method} {path}: {res}");
    }

    // Joining something that does not exist: 404.
    let (status, res) = alice.join(room).await;
    assert_error(status, &res, 404, "M_NOT_FOUND");
    let (status, res) = alice.post(&format!("{V3}/rooms/{r}/join"), json!({})).await;
    assert_error(status, &res, 404, "M_NOT_FOUND");
    let (status, res) = alice.join("#nosuchalias:localhost").await;
    assert_error(status, &res, 404, "M_NOT_FOUND");
    let (status, res) = alice
        .get(&format!(
            "{V3}/directory/room/{}",
            enc("#nosuchalias:localhost")
        ))
        .await;
    assert_error(status, &res, 404, "M_NOT_FOUND");
    let (status, res) = alice
        .post(&format!("{V3}/rooms/{r}/leave"), json!({}))
        .await;
    assert_error(status, &res, 404, "M_NOT_FOUND");

    // An unknown event in a room one is in: 404.
    let real = alice.create_room(json!({})).await;
    let (status, res) = alice
        .get(&format!("{V3}/rooms/{}/event/{}", enc(&real), enc("$nope")))
        .await;
    assert_error(status, &res, 404, "M_NOT_FOUND");
    let (status, res) = alice
        .get(&format!(
            "{V3}/rooms/{}/context/{}",
            enc(&real),
            enc("$nope")
        ))
        .await;
    assert_error(status, &res, 404, "M_NOT_FOUND");

    // Nothing was created along the way.
    assert_eq!(joined_rooms(&alice).await, vec![real]);
    let (status, _) = alice
        .get(&format!("{V3}/directory/room/{}", enc("#a:localhost")))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn empty_body_where_every_field_is_optional_works() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;

    // createRoom with no body at all: a private room.
    let (status, res) = bare(&alice, Method::POST, &format!("{V3}/createRoom")).await;
    assert_eq!(status, 200, "{res}");
    let private = res["room_id"].as_str().unwrap().to_owned();

    let public = alice.create_room(json!({ "preset": "public_chat" })).await;
    let (status, res) = bare(&bob, Method::POST, &format!("{V3}/join/{}", enc(&public))).await;
    assert_eq!((status, &res["room_id"]), (200, &json!(public)), "{res}");
    let (status, res) = bare(
        &bob,
        Method::POST,
        &format!("{V3}/rooms/{}/leave", enc(&public)),
    )
    .await;
    assert_eq!((status, res), (200, json!({})));
    let (status, res) = bare(
        &bob,
        Method::POST,
        &format!("{V3}/rooms/{}/join", enc(&public)),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    let mut rooms = vec![private.clone(), public.clone()];
    rooms.sort();
    assert_eq!(joined_rooms(&alice).await, rooms);
    assert_eq!(joined_rooms(&bob).await, vec![public.clone()]);

    // An empty JSON body with only whitespace counts as empty too.
    let (status, res) = bob
        .raw(
            Method::POST,
            &format!("{V3}/rooms/{}/leave", enc(&public)),
            b"  \n".to_vec(),
        )
        .await;
    assert_eq!((status, res), (200, json!({})));
    assert!(joined_rooms(&bob).await.is_empty());

    // logout with no body: the token stops working.
    let (status, res) = bare(&bob, Method::POST, &format!("{V3}/logout")).await;
    assert_eq!((status, res), (200, json!({})));
    let (status, res) = bob.get(&format!("{V3}/account/whoami")).await;
    assert_error(status, &res, 401, "M_UNKNOWN_TOKEN");
    let (status, res) = bare(&alice, Method::POST, &format!("{V3}/logout/all")).await;
    assert_eq!((status, res), (200, json!({})));
    let (status, _) = alice.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn null_for_optional_fields_works() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (status, res) = alice
        .post(
            &format!("{V3}/createRoom"),
            json!({ "name": null, "topic": null, "preset": null, "room_alias_name": null, "invite": null,
                    "creation_content": null, "initial_state": null, "power_level_content_override": null }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let room = res["room_id"].as_str().unwrap().to_owned();
    let (status, state) = alice.get(&format!("{V3}/rooms/{}/state", enc(&room))).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(!types.contains(&"m.room.name"), "{types:?}");
    assert!(!types.contains(&"m.room.topic"), "{types:?}");
    assert!(!types.contains(&"m.room.canonical_alias"), "{types:?}");
    // The null preset fell back to private_chat.
    let (_, rules) = alice
        .get(&format!(
            "{V3}/rooms/{}/state/m.room.join_rules/",
            enc(&room)
        ))
        .await;
    assert_eq!(rules, json!({ "join_rule": "invite" }));

    // Nulls in the login and register bodies too.
    let anon = s.client();
    let (status, res) = anon
        .post(
            &format!("{V3}/register"),
            json!({ "username": "bob", "password": "pw-bob-1", "device_id": null,
                    "initial_device_display_name": null, "inhibit_login": null,
                    "auth": { "type": "m.login.dummy", "session": null } }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert!(res["access_token"].is_string());
    let (status, res) = anon
        .post(
            &format!("{V3}/login"),
            json!({ "type": "m.login.password", "user": "bob", "password": "pw-bob-1",
                    "device_id": null, "initial_device_display_name": null }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["user_id"], "@bob:localhost");

    // But in event content, null is content and is stored as sent.
    let (status, res) = alice
        .put(
            &send_path(&room, "n1"),
            json!({ "msgtype": "m.text", "body": "hi", "x.extra": null }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let events = timeline(&alice, &room).await;
    let last = events.last().unwrap();
    assert_eq!(
        last["content"],
        json!({ "msgtype": "m.text", "body": "hi", "x.extra": null })
    );
}

#[tokio::test]
async fn invalid_query_parameters_are_400_invalid_param() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let r = enc(&room);
    for path in [
        format!("{V3}/sync?since=garbage"),
        format!("{V3}/sync?filter=999"),
        format!("{V3}/rooms/{r}/messages?dir=b&from=garbage"),
        format!("{V3}/rooms/{r}/messages?dir=b&to=garbage"),
        format!("{V3}/rooms/{r}/messages?dir=x"),
        format!("{V3}/rooms/{r}/messages?dir=b&limit=abc"),
        format!("{V3}/publicRooms?since=garbage"),
    ] {
        let (status, body) = alice.get(&path).await;
        assert_eq!(
            (status, &body["errcode"]),
            (400, &json!("M_INVALID_PARAM")),
            "{path}: {body}"
        );
    }
    // A sync token from the future (a wiped database, another server) is refused, not waited on.
    let (status, body) = alice
        .get(&format!("{V3}/sync?since=s999999&timeout=30000"))
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn oversized_shared_secret_registration_is_a_matrix_error() {
    let s = TestServer::start_with(
        "[registration]\nshared_secret = \"a-shared-secret-for-tests\"\n[limits]\nmax_request_bytes = 1000\n",
    )
    .await;
    let c = s.client();
    let body = serde_json::json!({ "nonce": "x", "username": "u", "password": "p".repeat(3000), "mac": "00" });
    let (status, res) = c.post("/_synapse/admin/v1/register", body).await;
    assert_eq!(status, 413);
    assert_eq!(res["errcode"], "M_TOO_LARGE");
}
