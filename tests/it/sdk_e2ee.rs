//! End-to-end encryption with the `matrix-sdk` crate (the SDK behind Element X) against a real
//! Charla: Alice and Bob in an `m.megolm.v1.aes-sha2` room; Alice's messages reach Bob
//! encrypted and he decrypts the exact plaintext; Bob then logs in on a second device, which
//! decrypts the messages Alice sends after that.

use std::time::Duration;

use crate::common::TestServer;
use matrix_sdk::{
    Client,
    config::SyncSettings,
    ruma::{
        OwnedUserId,
        api::client::{account::register, room::create_room, uiaa},
        events::{
            InitialStateEvent,
            room::{
                encryption::RoomEncryptionEventContent,
                message::{MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent},
            },
        },
    },
};
use tokio::sync::mpsc;

pub(crate) const PASSWORD: &str = "correct horse";

async fn register(base: &str, name: &str) {
    let registrar = Client::builder()
        .homeserver_url(base)
        .build()
        .await
        .expect("client builds");
    let mut request = register::v3::Request::new();
    request.username = Some(name.to_owned());
    request.password = Some(PASSWORD.to_owned());
    request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    registrar
        .matrix_auth()
        .register(request)
        .await
        .expect("SDK registration");
}

/// A fresh device: a new client with its own (in-memory) crypto store, logged in.
pub(crate) async fn login(base: &str, name: &str, device_name: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(base)
        .build()
        .await
        .expect("client builds");
    client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .initial_device_display_name(device_name)
        .send()
        .await
        .expect("SDK login");
    client
}

/// Every text message the client decrypts (or reads) through sync: (sender, body, encrypted).
pub(crate) fn collect(client: &Client) -> mpsc::UnboundedReceiver<(OwnedUserId, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent| {
        let tx = tx.clone();
        async move {
            if let MessageType::Text(text) = ev.content.msgtype {
                let _ = tx.send((ev.sender, text.body));
            }
        }
    });
    rx
}

pub(crate) async fn sync(client: &Client) {
    client
        .sync_once(SyncSettings::default().timeout(Duration::from_millis(300)))
        .await
        .expect("sync");
}

/// Syncs until `n` messages arrived (at most 40 rounds).
pub(crate) async fn sync_until(
    client: &Client,
    rx: &mut mpsc::UnboundedReceiver<(OwnedUserId, String)>,
    n: usize,
) -> Vec<(OwnedUserId, String)> {
    let mut got = Vec::new();
    for _ in 0..40 {
        while let Ok(m) = rx.try_recv() {
            got.push(m);
        }
        if got.len() >= n {
            break;
        }
        sync(client).await;
    }
    got
}

/// Alice makes an encrypted room and invites Bob, who joins; its id.
pub(crate) async fn encrypted_room_with(
    alice: &Client,
    bob: &Client,
) -> matrix_sdk::ruma::OwnedRoomId {
    let bob_id = bob.user_id().unwrap().to_owned();
    let mut create = create_room::v3::Request::new();
    create.invite = vec![bob_id.clone()];
    create.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room = alice.create_room(create).await.expect("create room");
    let room_id = room.room_id().to_owned();
    for _ in 0..20 {
        sync(bob).await;
        if bob.get_room(&room_id).is_some() {
            break;
        }
    }
    bob.get_room(&room_id)
        .expect("Bob sees the invite")
        .join()
        .await
        .expect("Bob joins");
    sync(alice).await;
    sync(bob).await;

    room_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_room_decrypts_on_every_device() {
    let server = TestServer::start().await;
    let base = server.server.base_url();
    register(&base, "alice").await;
    register(&base, "bob").await;
    let alice = login(&base, "alice", "alice phone").await;
    let bob = login(&base, "bob", "bob laptop").await;
    let alice_id = alice.user_id().unwrap().to_owned();
    // The first syncs upload each device's identity and one-time keys.
    sync(&alice).await;
    sync(&bob).await;

    let room_id = encrypted_room_with(&alice, &bob).await;
    let alice_room = alice.get_room(&room_id).expect("Alice has the room");
    assert!(
        alice_room
            .latest_encryption_state()
            .await
            .expect("encryption state")
            .is_encrypted(),
        "the room is encrypted"
    );
    let mut bob_rx = collect(&bob);
    alice_room
        .send(RoomMessageEventContent::text_plain(
            "El pedido 4411 sale hoy",
        ))
        .await
        .expect("Alice sends");

    // What the server stored and serves is ciphertext only.
    let mut http = server.client();
    http.token = alice.access_token();
    let (status, body) = http
        .get(&format!(
            "/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=1"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let event = &body["chunk"][0];
    assert_eq!(event["type"], "m.room.encrypted", "{body}");
    assert_eq!(
        event["content"]["algorithm"], "m.megolm.v1.aes-sha2",
        "{body}"
    );
    assert!(
        !body.to_string().contains("4411"),
        "the server never sees plaintext: {body}"
    );

    assert_eq!(
        sync_until(&bob, &mut bob_rx, 1).await,
        vec![(alice_id.clone(), "El pedido 4411 sale hoy".to_owned())],
        "Bob decrypts Alice's message"
    );

    // Bob logs in on a second device; Alice learns of it through device_lists.changed.
    let bob2 = login(&base, "bob", "bob phone").await;
    let mut bob2_rx = collect(&bob2);
    sync(&bob2).await;
    sync(&alice).await;
    alice_room
        .send(RoomMessageEventContent::text_plain("Y llega el jueves"))
        .await
        .expect("Alice sends again");
    let got = sync_until(&bob2, &mut bob2_rx, 1).await;
    assert_eq!(
        got,
        vec![(alice_id.clone(), "Y llega el jueves".to_owned())],
        "Bob's new device decrypts what Alice sends after it logged in"
    );
    assert_eq!(
        sync_until(&bob, &mut bob_rx, 1).await,
        vec![(alice_id.clone(), "Y llega el jueves".to_owned())],
        "Bob's first device too"
    );
}

/// Across servers: Alice on one Charla, Bob on another. Bob's keys are queried and claimed
/// through his server, Alice's room key reaches his device as a to-device message over
/// federation, and each decrypts the other's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_messages_decrypt_across_servers() {
    let crate::federation::Pair { a, b, _dirs } = crate::federation::pair("").await;
    register(&a.base_url(), "alice").await;
    register(&b.base_url(), "bob").await;
    let alice = login(&a.base_url(), "alice", "alice phone").await;
    let bob = login(&b.base_url(), "bob", "bob laptop").await;
    let (alice_id, bob_id) = (
        alice.user_id().unwrap().to_owned(),
        bob.user_id().unwrap().to_owned(),
    );
    assert_ne!(alice_id.server_name(), bob_id.server_name());
    sync(&alice).await;
    sync(&bob).await;
    let room_id = encrypted_room_with(&alice, &bob).await;

    let mut bob_rx = collect(&bob);
    let alice_room = alice.get_room(&room_id).expect("Alice has the room");
    alice_room
        .send(RoomMessageEventContent::text_plain("Factura 77 pagada"))
        .await
        .expect("Alice sends");
    assert_eq!(
        sync_until(&bob, &mut bob_rx, 1).await,
        vec![(alice_id.clone(), "Factura 77 pagada".to_owned())],
        "Bob decrypts Alice's message from the other server"
    );

    let mut alice_rx = collect(&alice);
    bob.get_room(&room_id)
        .expect("Bob has the room")
        .send(RoomMessageEventContent::text_plain("Gracias, recibido"))
        .await
        .expect("Bob sends");
    let got = sync_until(&alice, &mut alice_rx, 2).await;
    assert!(
        got.contains(&(bob_id.clone(), "Gracias, recibido".to_owned())),
        "Alice decrypts Bob's answer: {got:?}"
    );
}
