//! The echo bot of `examples/echo.rs` end to end: a homeserver-like caller pushes transactions
//! to the `AppService`, the bot answers through its intent to a recording fake homeserver.

use crate::common;

#[path = "../../examples/echo.rs"]
#[allow(dead_code)]
mod echo;

use crate::common::{fake_homeserver, seen};
use appservice::{AppService, Namespace, Namespaces, Registration, RetryPolicy};
use serde_json::{Value, json};

fn event(kind: &str, id: &str, sender: &str, state_key: Option<&str>, content: Value) -> Value {
    let mut event = json!({
        "type": kind, "event_id": id, "sender": sender, "room_id": "!room:example.org",
        "origin_server_ts": 1_700_000_000_000u64, "content": content,
    });
    if let Some(key) = state_key {
        event["state_key"] = key.into();
    }
    event
}

async fn push(base: &str, txn: &str, events: Vec<Value>) -> u16 {
    reqwest::Client::new()
        .put(format!("{base}/_matrix/app/v1/transactions/{txn}"))
        .bearer_auth("HS")
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_echo_bot_answers_joins_and_survives_a_failed_send() {
    let (fake, homeserver) = fake_homeserver().await;
    let mut registration = Registration::generate(
        "echo",
        Some("http://127.0.0.1:1".into()),
        "echobot",
        Namespaces {
            users: vec![Namespace::new("@echo_.*:example\\.org", true)],
            ..Default::default()
        },
    );
    registration.hs_token = "HS".into();
    registration.as_token = "AS".into();
    let dir = tempfile::tempdir().unwrap();
    let app = AppService::builder(registration, &homeserver, ruma::server_name!("example.org"))
        .state_dir(dir.path())
        .retry_policy(RetryPolicy::none())
        .build_with(|parts| echo::Echo { bot: parts.bot() })
        .unwrap();
    assert_eq!(app.bot().user_id(), "@echobot:example.org");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(app.serve(listener));

    let as_bot = |mut s: common::Seen| {
        s.auth = "Bearer AS".into();
        s
    };
    let bot_query = "user_id=%40echobot%3Aexample.org";

    // An invite for the bot makes it join; a message is echoed; its own echo is not.
    let invite = event(
        "m.room.member",
        "$inv:example.org",
        "@alice:example.org",
        Some("@echobot:example.org"),
        json!({ "membership": "invite" }),
    );
    let hola = event(
        "m.room.message",
        "$1:example.org",
        "@alice:example.org",
        None,
        json!({ "msgtype": "m.text", "body": "hola" }),
    );
    let own = event(
        "m.room.message",
        "$2:example.org",
        "@echobot:example.org",
        None,
        json!({ "msgtype": "m.text", "body": "echo: hola" }),
    );
    assert_eq!(push(&base, "1", vec![invite, hola.clone(), own]).await, 200);
    let echo_send = as_bot(seen(
        "PUT",
        "/_matrix/client/v3/rooms/!room:example.org/send/m.room.message/echo-$1:example.org",
        bot_query,
        json!({ "msgtype": "m.text", "body": "echo: hola" }),
    ));
    // The 200 came after the handler's requests: both are already recorded.
    assert_eq!(
        fake.seen(),
        [
            as_bot(seen(
                "POST",
                "/_matrix/client/v3/join/!room:example.org",
                bot_query,
                json!({})
            )),
            echo_send.clone(),
        ]
    );

    // The homeserver refuses the echo once: the transaction fails with 500 and nothing is
    // recorded as done; the retry sends the same echo (same txnId) and succeeds.
    fake.answer(503, json!({ "errcode": "M_UNKNOWN", "error": "busy" }));
    let hello = event(
        "m.room.message",
        "$3:example.org",
        "@bob:example.org",
        None,
        json!({ "msgtype": "m.text", "body": "hello" }),
    );
    assert_eq!(push(&base, "2", vec![hello.clone()]).await, 500);
    assert_eq!(push(&base, "2", vec![hello]).await, 200);
    let hello_echo = as_bot(seen(
        "PUT",
        "/_matrix/client/v3/rooms/!room:example.org/send/m.room.message/echo-$3:example.org",
        bot_query,
        json!({ "msgtype": "m.text", "body": "echo: hello" }),
    ));
    assert_eq!(fake.seen(), [hello_echo.clone(), hello_echo]);

    // A retried, already processed transaction sends nothing.
    assert_eq!(push(&base, "1", vec![hola]).await, 200);
    assert_eq!(fake.seen(), []);
}
