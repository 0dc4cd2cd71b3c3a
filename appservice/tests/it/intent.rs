//! The intent client against a fake homeserver that records exactly what it was sent (method,
//! raw path, query, `Authorization`, content type, body) and answers from a script.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Fake, Seen, fake_homeserver, seen};
use appservice::{Client, CreateRoom, Error, InitialState, RetryPolicy, RoomPreset, SendOptions};
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt, event_id, mxc_uri, room_alias_id, room_id, server_name,
    user_id,
};
use serde_json::{Value, json};

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        max_retry_after: Duration::from_secs(5),
    }
}

async fn setup() -> (Arc<Fake>, Client) {
    let (fake, base) = fake_homeserver().await;
    let client = Client::new(&base, "AS_SECRET", server_name!("example.org"))
        .unwrap()
        .with_retry_policy(fast_retries());
    (fake, client)
}

const AS_PUPPET: &str = "user_id=%40_wa_1%3Aexample.org";

#[tokio::test]
async fn ensure_registered_registers_once_and_accepts_user_in_use() {
    let (fake, client) = setup().await;
    let puppet = client.intent(user_id!("@_wa_1:example.org").to_owned());
    puppet.ensure_registered().await.unwrap();
    puppet.ensure_registered().await.unwrap();
    let register = seen(
        "POST",
        "/_matrix/client/v3/register",
        "",
        json!({ "type": "m.login.application_service", "username": "_wa_1", "inhibit_login": true }),
    );
    assert_eq!(fake.seen(), [register], "asked once");

    fake.answer(
        400,
        json!({ "errcode": "M_USER_IN_USE", "error": "User ID already taken." }),
    );
    client
        .intent(user_id!("@_wa_2:example.org").to_owned())
        .ensure_registered()
        .await
        .unwrap();
    assert_eq!(fake.seen().len(), 1);

    fake.answer(
        400,
        json!({ "errcode": "M_EXCLUSIVE", "error": "Not in namespace" }),
    );
    let err = client
        .intent(user_id!("@alice:example.org").to_owned())
        .ensure_registered()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Matrix { status: 400, errcode, message, retry_after_ms: None }
            if errcode == "M_EXCLUSIVE" && message == "Not in namespace"),
        "{err:?}"
    );
    let foreign = client
        .intent(user_id!("@_wa_3:elsewhere.org").to_owned())
        .ensure_registered()
        .await;
    assert!(
        matches!(foreign, Err(Error::InvalidRequest(_))),
        "{foreign:?}"
    );
    assert_eq!(
        fake.seen().len(),
        1,
        "the foreign user never reached the homeserver"
    );
}

#[tokio::test]
async fn every_call_asserts_the_identity_and_sends_the_exact_request() {
    let (fake, client) = setup().await;
    let puppet = client.intent(user_id!("@_wa_1:example.org").to_owned());
    let room = room_id!("!room:example.org");
    let event = event_id!("$target:example.org");

    assert_eq!(puppet.whoami().await.unwrap(), "@_wa_1:example.org");
    puppet.set_displayname("Ana (WhatsApp)").await.unwrap();
    puppet
        .set_avatar_url(Some(mxc_uri!("mxc://example.org/face")))
        .await
        .unwrap();
    puppet.set_avatar_url(None).await.unwrap();
    puppet
        .invite(room, user_id!("@agent:example.org"))
        .await
        .unwrap();
    let via = [server_name!("example.org").to_owned()];
    let joined = puppet
        .join(room_alias_id!("#support:example.org").into(), &via)
        .await;
    assert_eq!(joined.unwrap(), "!new:example.org");
    puppet.leave(room).await.unwrap();
    let text = puppet.send_text(room, "hola").await.unwrap();
    assert_eq!(text, "$ev:example.org");
    let ts = MilliSecondsSinceUnixEpoch(UInt::new(1_700_000_000_123).unwrap());
    let options = SendOptions {
        txn_id: Some("wamid.1".into()),
        ts: Some(ts),
    };
    puppet
        .send_event(
            room,
            "m.room.message",
            &json!({ "msgtype": "m.text", "body": "x" }),
            options,
        )
        .await
        .unwrap();
    puppet
        .send_state(room, "m.room.topic", "", &json!({ "topic": "t" }), Some(ts))
        .await
        .unwrap();
    let reaction = SendOptions {
        txn_id: Some("r1".into()),
        ts: None,
    };
    puppet.react(room, event, "👍", reaction).await.unwrap();
    puppet
        .redact(
            room,
            event,
            Some("deleted on WhatsApp"),
            Some("red1".into()),
        )
        .await
        .unwrap();
    puppet.send_read_receipt(room, event).await.unwrap();
    puppet
        .set_typing(room, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    puppet.set_typing(room, None).await.unwrap();

    let mut calls = fake.seen();
    let send_text = calls.remove(7);
    // Generated txnIds are unique per process and per call.
    let txn = send_text.path.rsplit('/').next().unwrap().to_owned();
    assert!(txn.starts_with("as") && txn.len() > 10, "{txn}");
    assert_eq!(
        send_text,
        seen(
            "PUT",
            &format!("/_matrix/client/v3/rooms/!room:example.org/send/m.room.message/{txn}"),
            AS_PUPPET,
            json!({ "msgtype": "m.text", "body": "hola" })
        )
    );
    let r = "/_matrix/client/v3/rooms/!room:example.org";
    let expected = [
        Seen {
            content_type: String::new(),
            ..seen(
                "GET",
                "/_matrix/client/v3/account/whoami",
                AS_PUPPET,
                Value::String(String::new()),
            )
        },
        seen(
            "PUT",
            "/_matrix/client/v3/profile/@_wa_1:example.org/displayname",
            AS_PUPPET,
            json!({ "displayname": "Ana (WhatsApp)" }),
        ),
        seen(
            "PUT",
            "/_matrix/client/v3/profile/@_wa_1:example.org/avatar_url",
            AS_PUPPET,
            json!({ "avatar_url": "mxc://example.org/face" }),
        ),
        seen(
            "PUT",
            "/_matrix/client/v3/profile/@_wa_1:example.org/avatar_url",
            AS_PUPPET,
            json!({ "avatar_url": "" }),
        ),
        seen(
            "POST",
            &format!("{r}/invite"),
            AS_PUPPET,
            json!({ "user_id": "@agent:example.org" }),
        ),
        seen(
            "POST",
            "/_matrix/client/v3/join/%23support:example.org",
            &format!("{AS_PUPPET}&via=example.org&server_name=example.org"),
            json!({}),
        ),
        seen("POST", &format!("{r}/leave"), AS_PUPPET, json!({})),
        seen(
            "PUT",
            &format!("{r}/send/m.room.message/wamid.1"),
            &format!("{AS_PUPPET}&ts=1700000000123"),
            json!({ "msgtype": "m.text", "body": "x" }),
        ),
        seen(
            "PUT",
            &format!("{r}/state/m.room.topic/"),
            &format!("{AS_PUPPET}&ts=1700000000123"),
            json!({ "topic": "t" }),
        ),
        seen(
            "PUT",
            &format!("{r}/send/m.reaction/r1"),
            AS_PUPPET,
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": "$target:example.org", "key": "👍" } }),
        ),
        seen(
            "PUT",
            &format!("{r}/redact/$target:example.org/red1"),
            AS_PUPPET,
            json!({ "reason": "deleted on WhatsApp" }),
        ),
        seen(
            "POST",
            &format!("{r}/receipt/m.read/$target:example.org"),
            AS_PUPPET,
            json!({}),
        ),
        seen(
            "PUT",
            &format!("{r}/typing/@_wa_1:example.org"),
            AS_PUPPET,
            json!({ "typing": true, "timeout": 5000 }),
        ),
        seen(
            "PUT",
            &format!("{r}/typing/@_wa_1:example.org"),
            AS_PUPPET,
            json!({ "typing": false }),
        ),
    ];
    assert_eq!(calls.len(), expected.len());
    for (call, expected) in calls.iter().zip(&expected) {
        assert_eq!(call, expected);
    }
}

#[tokio::test]
async fn create_room_and_upload() {
    let (fake, client) = setup().await;
    let bot = client.intent(user_id!("@_wa_bot:example.org").to_owned());
    let options = CreateRoom {
        name: Some("Ana".into()),
        invite: vec![user_id!("@_wa_1:example.org").to_owned()],
        is_direct: true,
        preset: Some(RoomPreset::TrustedPrivateChat),
        initial_state: vec![InitialState::new(
            "io.charla.conversation",
            "",
            &json!({ "channel": "whatsapp" }),
        )],
        power_level_content_override: Some(json!({ "users": { "@_wa_bot:example.org": 100 } })),
        ..CreateRoom::default()
    };
    assert_eq!(bot.create_room(&options).await.unwrap(), "!new:example.org");
    let uri = bot
        .upload(b"\x89PNG...".to_vec(), "image/png", Some("foto 1.png"))
        .await
        .unwrap();
    assert_eq!(uri, "mxc://example.org/abc");
    let calls = fake.seen();
    let bot_query = "user_id=%40_wa_bot%3Aexample.org";
    assert_eq!(
        calls[0],
        seen(
            "POST",
            "/_matrix/client/v3/createRoom",
            bot_query,
            json!({
                "name": "Ana",
                "invite": ["@_wa_1:example.org"],
                "is_direct": true,
                "preset": "trusted_private_chat",
                "initial_state": [{ "type": "io.charla.conversation", "state_key": "", "content": { "channel": "whatsapp" } }],
                "power_level_content_override": { "users": { "@_wa_bot:example.org": 100 } },
            })
        )
    );
    assert_eq!(
        calls[1],
        Seen {
            method: "POST".into(),
            path: "/_matrix/media/v3/upload".into(),
            query: format!("{bot_query}&filename=foto+1.png"),
            auth: "Bearer AS_SECRET".into(),
            content_type: "image/png".into(),
            body: Value::String(String::from_utf8_lossy(b"\x89PNG...").into_owned()),
        }
    );
}

#[tokio::test]
async fn rate_limits_and_transient_errors_are_retried_with_the_same_request() {
    let (fake, client) = setup().await;
    let puppet = client.intent(user_id!("@_wa_1:example.org").to_owned());
    let room = room_id!("!room:example.org");

    // 429 with retry_after_ms, then 503, then success: one logical send, three identical tries.
    fake.answer(
        429,
        json!({ "errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 2 }),
    );
    fake.answer(
        503,
        json!({ "errcode": "M_UNKNOWN", "error": "restarting" }),
    );
    assert_eq!(
        puppet.send_text(room, "hola").await.unwrap(),
        "$ev:example.org"
    );
    let tries = fake.seen();
    assert_eq!(tries.len(), 3);
    assert!(
        tries.iter().all(|t| *t == tries[0]),
        "same path, txnId and body each time: {tries:#?}"
    );

    // A 429 with only a Retry-After header (seconds) is honoured too.
    fake.script
        .lock()
        .unwrap()
        .push_back((429, "{}".into(), Some("0")));
    puppet.set_typing(room, None).await.unwrap();
    assert_eq!(fake.seen().len(), 2);

    // Bounded: four 503s in a row (first try + 3 retries) give the error back.
    for _ in 0..4 {
        fake.answer(
            503,
            json!({ "errcode": "M_UNKNOWN", "error": "still down" }),
        );
    }
    let err = puppet.send_text(room, "x").await.unwrap_err();
    assert_eq!(
        (err.status(), err.errcode()),
        (Some(503), Some("M_UNKNOWN"))
    );
    assert_eq!(fake.seen().len(), 4);

    // createRoom is not idempotent: a 500 is returned at once.
    fake.answer(500, json!({ "errcode": "M_UNKNOWN", "error": "boom" }));
    let err = puppet
        .create_room(&CreateRoom::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(fake.seen().len(), 1);

    // A 429 asking for longer than max_retry_after goes back to the caller.
    fake.answer(
        429,
        json!({ "errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 600_000 }),
    );
    let err = puppet.send_text(room, "y").await.unwrap_err();
    assert!(
        matches!(&err, Error::Matrix { status: 429, retry_after_ms: Some(600_000), errcode, .. } if errcode == "M_LIMIT_EXCEEDED"),
        "{err:?}"
    );
    assert_eq!(fake.seen().len(), 1);

    // Client errors are never retried; a non-JSON error body keeps status and text.
    fake.script
        .lock()
        .unwrap()
        .push_back((404, "no such thing".into(), None));
    let err = puppet.leave(room).await.unwrap_err();
    assert!(
        matches!(&err, Error::Matrix { status: 404, errcode, message, .. } if errcode == "M_UNKNOWN" && message == "no such thing"),
        "{err:?}"
    );
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(
        &format!("http://127.0.0.1:{port}"),
        "AS_SECRET",
        server_name!("example.org"),
    )
    .unwrap()
    .with_retry_policy(fast_retries());
    let err = client
        .intent(user_id!("@_wa_1:example.org").to_owned())
        .whoami()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.is_connect()),
        "{err:?}"
    );
}

#[tokio::test]
async fn ping_asks_the_homeserver_and_returns_its_duration() {
    let (fake, client) = setup().await;
    assert_eq!(client.ping("whatsapp", Some("meow")).await.unwrap(), 7);
    assert_eq!(
        fake.seen(),
        [seen(
            "POST",
            "/_matrix/client/v1/appservice/whatsapp/ping",
            "",
            json!({ "transaction_id": "meow" })
        )]
    );
    fake.answer(
        502,
        json!({ "errcode": "M_CONNECTION_FAILED", "error": "unreachable" }),
    );
    let err = client.ping("whatsapp", None).await.unwrap_err();
    assert_eq!(
        (err.status(), err.errcode()),
        (Some(502), Some("M_CONNECTION_FAILED"))
    );
    assert_eq!(
        fake.seen(),
        [seen(
            "POST",
            "/_matrix/client/v1/appservice/whatsapp/ping",
            "",
            json!({})
        )]
    );
}
