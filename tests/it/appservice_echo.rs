//! Charla's own appservice toolkit against Charla, end to end over real HTTP: the toolkit's
//! example echo bot joins when invited and answers every message, as a bridge would.

use crate::common;

/// The toolkit's echo bot example, the very handler a user would run.
#[path = "../../appservice/examples/echo.rs"]
#[allow(dead_code)]
mod echo;

use std::time::{Duration, Instant};

use crate::common::{V3, enc};
use appservice::{AppService, Namespace, Namespaces, Registration};
use echo::Echo;
use serde_json::json;

#[tokio::test]
async fn the_toolkit_echo_bot_joins_and_answers_through_charla() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let as_url = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("echo.yaml");
    let namespaces = Namespaces {
        users: vec![Namespace::new("@echo_.*:localhost", true)],
        ..Namespaces::default()
    };
    let registration = Registration::generate("echo", Some(as_url), "echobot", namespaces);
    registration.write_file(&file).unwrap();

    let s = common::TestServer::start_with(&format!("[appservice]\nregistrations = [{file:?}]\n"))
        .await;
    let server_name = ruma::server_name!("localhost").to_owned();
    let app = AppService::builder(registration, &s.server.base_url(), &server_name)
        .state_dir(dir.path().join("state"))
        .build_with(|parts| Echo { bot: parts.bot() })
        .unwrap();
    tokio::spawn(app.serve(listener));

    let alice = s.user("alice").await;
    let room = alice
        .create_room(json!({ "invite": ["@echobot:localhost"] }))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, members) = alice
            .get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
            .await;
        if members["joined"].get("@echobot:localhost").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the bot never joined: {members}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.send_text(&room, "t1", "hola").await;
    loop {
        let (_, page) = alice
            .get(&format!("{V3}/rooms/{}/messages?dir=b&limit=5", enc(&room)))
            .await;
        let echoed =
            page["chunk"].as_array().unwrap().iter().find(|e| {
                e["sender"] == "@echobot:localhost" && e["content"]["body"] == "echo: hola"
            });
        if echoed.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no echo: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
