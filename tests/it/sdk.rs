//! Client compatibility: the `matrix-sdk` crate (the SDK behind Element X) against a real Charla.
//!
//! Two users register and log in through the SDK, one creates a room and invites the other, they
//! talk, each sees the other's messages through sync in order with the right sender, and history
//! paginates back across several pages.

use std::time::Duration;

use crate::common::TestServer;
use matrix_sdk::{
    Client,
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, OwnedUserId, UInt,
        api::client::{account::register, room::create_room, uiaa},
        events::room::message::{
            MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent,
            SyncRoomMessageEvent,
        },
    },
};
use tokio::sync::mpsc;

/// Registers through user-interactive auth (`m.login.dummy`), then logs in on a fresh client.
async fn sdk_user(server: &TestServer, name: &str) -> Client {
    let base = server.server.base_url();
    let registrar = Client::builder()
        .homeserver_url(&base)
        .build()
        .await
        .expect("client builds");
    let mut request = register::v3::Request::new();
    request.username = Some(name.to_owned());
    request.password = Some("correct horse".to_owned());
    request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    registrar
        .matrix_auth()
        .register(request)
        .await
        .expect("SDK registration");

    let client = Client::builder()
        .homeserver_url(&base)
        .build()
        .await
        .expect("client builds");
    client
        .matrix_auth()
        .login_username(name, "correct horse")
        .initial_device_display_name("sdk test")
        .send()
        .await
        .expect("SDK login");
    client
}

/// Collects every text message the client sees through sync, in arrival order.
fn collect_messages(
    client: &Client,
) -> mpsc::UnboundedReceiver<(OwnedRoomId, OwnedUserId, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    client.add_event_handler(
        move |ev: OriginalSyncRoomMessageEvent, room: matrix_sdk::Room| {
            let tx = tx.clone();
            async move {
                if let MessageType::Text(text) = ev.content.msgtype {
                    let _ = tx.send((room.room_id().to_owned(), ev.sender, text.body));
                }
            }
        },
    );
    rx
}

/// Syncs until `n` messages arrived (or gives up after 50 rounds).
async fn sync_until(
    client: &Client,
    rx: &mut mpsc::UnboundedReceiver<(OwnedRoomId, OwnedUserId, String)>,
    n: usize,
) -> Vec<(OwnedRoomId, OwnedUserId, String)> {
    let mut got = Vec::new();
    for _ in 0..50 {
        while let Ok(m) = rx.try_recv() {
            got.push(m);
        }
        if got.len() >= n {
            break;
        }
        client
            .sync_once(SyncSettings::default().timeout(Duration::from_millis(500)))
            .await
            .expect("sync");
    }
    while let Ok(m) = rx.try_recv() {
        got.push(m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sdk_users_chat_and_paginate() {
    let server = TestServer::start().await;
    let alice = sdk_user(&server, "alice").await;
    let bob = sdk_user(&server, "bob").await;
    assert_eq!(alice.user_id().unwrap().as_str(), "@alice:localhost");
    let alice_id = alice.user_id().unwrap().to_owned();
    let bob_id = bob.user_id().unwrap().to_owned();

    let mut alice_rx = collect_messages(&alice);
    let mut bob_rx = collect_messages(&bob);
    alice
        .sync_once(SyncSettings::default())
        .await
        .expect("alice initial sync");
    bob.sync_once(SyncSettings::default())
        .await
        .expect("bob initial sync");

    // Alice creates a room and invites Bob.
    let mut create = create_room::v3::Request::new();
    create.name = Some("Support".to_owned());
    create.invite = vec![bob_id.clone()];
    let room = alice.create_room(create).await.expect("create room");
    let room_id = room.room_id().to_owned();

    // Bob sees the invite through sync and joins.
    let mut invited = None;
    for _ in 0..20 {
        bob.sync_once(SyncSettings::default().timeout(Duration::from_millis(500)))
            .await
            .expect("sync");
        if let Some(r) = bob.get_room(&room_id) {
            invited = Some(r);
            break;
        }
    }
    let invited = invited.expect("Bob sees the invite");
    assert_eq!(invited.state(), matrix_sdk::RoomState::Invited);
    invited.join().await.expect("Bob joins");

    // They talk.
    let alice_room = alice.get_room(&room_id).expect("Alice has the room");
    alice_room
        .send(RoomMessageEventContent::text_plain("Hola Bob"))
        .await
        .expect("Alice sends");
    let bob_room = bob.get_room(&room_id).expect("Bob has the room");
    bob_room
        .send(RoomMessageEventContent::text_plain("Hola Alice"))
        .await
        .expect("Bob sends");
    alice_room
        .send(RoomMessageEventContent::text_plain("¿Cómo estás?"))
        .await
        .expect("Alice sends");

    let expected = vec![
        (room_id.clone(), alice_id.clone(), "Hola Bob".to_owned()),
        (room_id.clone(), bob_id.clone(), "Hola Alice".to_owned()),
        (room_id.clone(), alice_id.clone(), "¿Cómo estás?".to_owned()),
    ];
    assert_eq!(
        sync_until(&bob, &mut bob_rx, 3).await,
        expected,
        "Bob's view"
    );
    assert_eq!(
        sync_until(&alice, &mut alice_rx, 3).await,
        expected,
        "Alice's view"
    );

    // Enough history for several pages, then paginate back through the SDK.
    for i in 0..45 {
        alice_room
            .send(RoomMessageEventContent::text_plain(format!("message {i}")))
            .await
            .expect("send");
    }
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut options = MessagesOptions::backward().from(from.as_deref());
        options.limit = UInt::from(20u32);
        let page = bob_room.messages(options).await.expect("messages");
        pages += 1;
        for event in &page.chunk {
            if let Ok(matrix_sdk::ruma::events::AnySyncTimelineEvent::MessageLike(
                matrix_sdk::ruma::events::AnySyncMessageLikeEvent::RoomMessage(
                    SyncRoomMessageEvent::Original(m),
                ),
            )) = event.raw().deserialize()
                && let MessageType::Text(t) = m.content.msgtype
            {
                bodies.push((m.sender.to_string(), t.body));
            }
        }
        match page.end {
            Some(end) if pages < 20 => from = Some(end),
            _ => break,
        }
    }
    assert!(pages >= 3, "history spans several pages, got {pages}");
    bodies.reverse();
    let mut want: Vec<(String, String)> = vec![
        (alice_id.to_string(), "Hola Bob".into()),
        (bob_id.to_string(), "Hola Alice".into()),
        (alice_id.to_string(), "¿Cómo estás?".into()),
    ];
    want.extend((0..45).map(|i| (alice_id.to_string(), format!("message {i}"))));
    assert_eq!(bodies, want, "the whole history, oldest first, once each");
}
