//! Charla's own appservice toolkit against Charla, end to end over real HTTP: an echo bot that
//! joins when invited and answers every message, as a bridge would.

mod common;

use std::time::{Duration, Instant};

use appservice::{AppService, Handler, HandlerError, Intent, Namespace, Namespaces, Registration};
use common::{V3, enc};
use ruma::{
    RoomOrAliasId,
    events::{
        AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
        room::{member::MembershipState, message::RoomMessageEventContent},
    },
    serde::Raw,
};
use serde_json::json;

struct Echo {
    bot: Intent,
}

impl Handler for Echo {
    async fn on_event(
        &self,
        event: AnyTimelineEvent,
        _raw: &Raw<AnyTimelineEvent>,
    ) -> Result<(), HandlerError> {
        match event {
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
                MessageLikeEvent::Original(m),
            )) if m.sender != self.bot.user_id() => {
                let echo =
                    RoomMessageEventContent::text_plain(format!("echo: {}", m.content.body()));
                let options = appservice::SendOptions {
                    txn_id: Some(format!("echo-{}", m.event_id)),
                    ..Default::default()
                };
                self.bot.send_message(&m.room_id, &echo, options).await?;
            }
            AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(m)))
                if m.state_key == self.bot.user_id()
                    && m.content.membership == MembershipState::Invite =>
            {
                let room: &RoomOrAliasId = (&*m.room_id).into();
                self.bot.join(room, &[]).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

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
