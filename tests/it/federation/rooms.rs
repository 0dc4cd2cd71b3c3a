//! Rooms across two Charla servers on loopback: a user of one joins a room of the other,
//! messages, typing and receipts cross both ways in order, and a server that was down catches
//! up on what it missed, nothing lost or doubled.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Pair, pair, peer_at};
use crate::common::{Client, enc, registered, timeline_bodies};

/// Syncs (long polls) until `done` holds for what arrived, for at most 20 s; every sync
/// response seen, in order.
pub(super) async fn sync_until(
    client: &Client,
    since: &mut Option<String>,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let sync = client.sync(since.as_deref(), 1_000).await;
        *since = sync["next_batch"].as_str().map(str::to_owned);
        seen.push(sync);
        if done(&seen) {
            return seen;
        }
    }
    panic!("not seen in time: {}", Value::Array(seen));
}

/// Joins `room` through `server`, as a client names it (`?via=`).
pub(super) async fn join_via(client: &Client, room: &str, server: &str) {
    let path = format!("/_matrix/client/v3/join/{}?via={}", enc(room), enc(server));
    let (status, body) = client.post(&path, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room);
}

pub(super) async fn whoami(client: &Client) -> String {
    let (_, me) = client.get("/_matrix/client/v3/account/whoami").await;
    me["user_id"].as_str().unwrap().to_owned()
}

/// The bodies of the text messages of `room` across sync responses, in order.
pub(super) fn bodies(seen: &[Value], room: &str) -> Vec<String> {
    seen.iter().flat_map(|s| timeline_bodies(s, room)).collect()
}

/// Whether some sync response has an ephemeral event of `kind` in `room` matching `check`.
pub(super) fn ephemeral(
    seen: &[Value],
    room: &str,
    kind: &str,
    check: impl Fn(&Value) -> bool,
) -> bool {
    seen.iter().any(|s| {
        s["rooms"]["join"][room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == kind && check(e)))
    })
}

#[tokio::test]
async fn a_user_joins_a_room_of_another_server_and_messages_typing_receipts_cross() {
    let Pair { a, b, _dirs } = super::pair_with("public_rooms = true", "").await;
    let a_name = a.services.config.server_name.to_string();
    let alice = registered(&a.base_url(), "alice").await;
    let bob = registered(&b.base_url(), "bob").await;
    let bob_id = whoami(&bob).await;
    let room = alice
        .create_room(json!({ "preset": "public_chat", "name": "Partners" }))
        .await;

    // Bob on B finds it in A's public directory, then joins it through A.
    let (status, body) = alice
        .put(
            &format!("/_matrix/client/v3/directory/list/room/{}", enc(&room)),
            json!({ "visibility": "public" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, listed) = bob
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={}", enc(&a_name)),
            json!({ "filter": { "generic_search_term": "partners" } }),
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["chunk"][0]["room_id"], room, "{listed}");
    assert_eq!(listed["chunk"][0]["name"], "Partners", "{listed}");
    assert_eq!(listed["chunk"].as_array().unwrap().len(), 1, "{listed}");
    // B does not share its directory (the default): A's users are told so.
    let (status, refused) = alice
        .get(&format!(
            "/_matrix/client/v3/publicRooms?server={}",
            enc(b.services.config.server_name.as_str())
        ))
        .await;
    assert_eq!(status, 502, "{refused}");
    alice
        .send_text(&room, "a0", "written before the join")
        .await;
    join_via(&bob, &room, &a_name).await;
    // What was written before Bob came in is on B too (backfilled after his join).
    let (status, history) = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10",
            enc(&room)
        ))
        .await;
    assert_eq!(status, 200);
    assert!(
        history["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "written before the join"),
        "{history}"
    );
    // B has the room's state; A has Bob's join.
    let (status, name) = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            enc(&room)
        ))
        .await;
    assert_eq!((status, &name["name"]), (200, &json!("Partners")), "{name}");
    let (status, member) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&bob_id)
        ))
        .await;
    assert_eq!(
        (status, &member["membership"]),
        (200, &json!("join")),
        "{member}"
    );

    let (mut a_since, mut b_since) = (None, None);
    sync_until(&alice, &mut a_since, |_| true).await;
    sync_until(&bob, &mut b_since, |_| true).await;

    // Messages both ways, each side seeing the other's in the order sent.
    alice.send_text(&room, "a1", "hello from A").await;
    alice.send_text(&room, "a2", "second from A").await;
    let seen = sync_until(&bob, &mut b_since, |s| bodies(s, &room).len() >= 2).await;
    assert_eq!(bodies(&seen, &room), ["hello from A", "second from A"]);
    let sender = &seen
        .iter()
        .flat_map(|s| {
            s["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|e| e["content"]["body"] == "hello from A")
        .unwrap()["sender"];
    let alice_id = whoami(&alice).await;
    assert_eq!(sender, &json!(alice_id));

    let bobs = bob.send_text(&room, "b1", "hello from B").await;
    let seen = sync_until(&alice, &mut a_since, |s| {
        bodies(s, &room).contains(&"hello from B".to_owned())
    })
    .await;
    assert_eq!(
        bodies(&seen, &room),
        ["hello from A", "second from A", "hello from B"]
    );

    // Typing crosses.
    let (status, _) = bob
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&bob_id)
            ),
            json!({ "typing": true, "timeout": 20000 }),
        )
        .await;
    assert_eq!(status, 200);
    sync_until(&alice, &mut a_since, |s| {
        ephemeral(s, &room, "m.typing", |e| {
            e["content"]["user_ids"] == json!([bob_id])
        })
    })
    .await;

    // A receipt crosses: Alice read Bob's message.
    let (status, _) = alice
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&bobs)
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    sync_until(&bob, &mut b_since, |s| {
        ephemeral(s, &room, "m.receipt", |e| {
            e["content"][&bobs]["m.read"][&alice_id]["ts"].is_u64()
        })
    })
    .await;

    // Presence crosses: Bob says he is away; Alice's server hears it.
    let status = format!("/_matrix/client/v3/presence/{}/status", enc(&bob_id));
    let (code, _) = bob
        .put(
            &status,
            json!({ "presence": "unavailable", "status_msg": "en una reunión" }),
        )
        .await;
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, seen) = alice.get(&status).await;
        if code == 200 && seen["presence"] == "unavailable" {
            assert_eq!(seen["status_msg"], "en una reunión");
            break;
        }
        assert!(Instant::now() < deadline, "presence not seen: {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_server_that_was_down_gets_what_it_missed_in_order_once() {
    let Pair { a, b, _dirs } = pair("").await;
    let a_name = a.services.config.server_name.to_string();
    let alice = registered(&a.base_url(), "alice").await;
    let bob_b = registered(&b.base_url(), "bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    join_via(&bob_b, &room, &a_name).await;

    // A delivers to B once, so B knows A as a peer.
    alice.send_text(&room, "before", "before").await;
    let mut before_since = None;
    sync_until(&bob_b, &mut before_since, |s| {
        bodies(s, &room).contains(&"before".to_owned())
    })
    .await;

    // B stops; Alice keeps writing.
    let b_name = b.services.config.server_name.to_string();
    let port: u16 = b_name.rsplit_once(':').unwrap().1.parse().unwrap();
    let certs = _dirs[0].path().to_owned();
    let b_dir = _dirs[2].path().to_owned();
    b.stop().await;
    for i in 0..5 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("while away {i}"))
            .await;
    }
    // A tried and failed meanwhile (at 0, 0.5, 1.5 and 3.5 s: 0.5 s, doubling), and would
    // next try at 7.5 s.
    tokio::time::sleep(Duration::from_millis(4_000)).await;

    // B comes back on the same port and data and greets A (which delivered to it before), so
    // A retries at once instead of at the end of its backoff; then Bob speaks.
    let b = peer_at(&certs, port, &b_dir, "").await;
    let bob = Client {
        base: b.base_url(),
        ..bob_b
    };
    // Watched through /messages, not /sync: a sync would mark Bob online, and that presence
    // update reaching A would tell it B is back, greeting or not.
    let back = Instant::now();
    let history = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
        enc(&room)
    );
    loop {
        let (_, messages) = bob.get(&history).await;
        let away = messages["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("while away"))
            })
            .count();
        if away == 5 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_millis(2_500),
            "not caught up at once: {messages}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut since = None;
    let seen = sync_until(&bob, &mut since, |s| {
        bodies(s, &room)
            .iter()
            .filter(|b| b.starts_with("while away"))
            .count()
            >= 5
    })
    .await;
    bob.send_text(&room, "back", "I am back").await;
    let mut a_since = None;
    sync_until(&alice, &mut a_since, |s| {
        bodies(s, &room).contains(&"I am back".to_owned())
    })
    .await;
    let away: Vec<String> = bodies(&seen, &room)
        .into_iter()
        .filter(|b| b.starts_with("while away"))
        .collect();
    assert_eq!(
        away,
        (0..5)
            .map(|i| format!("while away {i}"))
            .collect::<Vec<_>>()
    );
    // Nothing twice, also in the stored history.
    let (status, messages) = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            enc(&room)
        ))
        .await;
    assert_eq!(status, 200);
    let texts: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "I am back",
            "while away 4",
            "while away 3",
            "while away 2",
            "while away 1",
            "while away 0",
            "before"
        ],
        "{messages}"
    );
    b.stop().await;
}

#[tokio::test]
async fn invites_cross_servers_both_ways() {
    let Pair { a, b, _dirs } = pair("").await;
    let alice = registered(&a.base_url(), "alice").await;
    let bob = registered(&b.base_url(), "bob").await;
    let (alice_id, bob_id) = (whoami(&alice).await, whoami(&bob).await);

    // Alice invites Bob into a private room: B lists the invite with the room's name.
    let room = alice
        .create_room(json!({ "preset": "private_chat", "name": "Quote 42" }))
        .await;
    let (status, body) = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({ "user_id": bob_id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut b_since = None;
    let seen = sync_until(&bob, &mut b_since, |s| {
        s.iter().any(|s| s["rooms"]["invite"][&room].is_object())
    })
    .await;
    let invite = seen
        .iter()
        .find(|s| s["rooms"]["invite"][&room].is_object())
        .unwrap();
    let state = invite["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .unwrap();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Quote 42"),
        "{invite}"
    );
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob_id
            && e["content"]["membership"] == "invite"
            && e["sender"] == alice_id),
        "{invite}"
    );
    // Bob accepts (the room id alone: B joins through the inviter's server) and writes.
    let (status, body) = bob
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    bob.send_text(&room, "b1", "thanks for the quote").await;
    let mut a_since = None;
    sync_until(&alice, &mut a_since, |s| {
        bodies(s, &room).contains(&"thanks for the quote".to_owned())
    })
    .await;

    // The other way: Bob invites Alice into his room on B.
    let room = bob.create_room(json!({ "preset": "private_chat" })).await;
    let (status, body) = bob
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({ "user_id": alice_id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sync_until(&alice, &mut a_since, |s| {
        s.iter().any(|s| s["rooms"]["invite"][&room].is_object())
    })
    .await;
    let (status, body) = alice
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Inviting a user of a server that does not answer fails and changes nothing.
    let (status, body) = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({ "user_id": "@carol:127.0.0.1:1" }),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    let (status, _) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc("@carol:127.0.0.1:1")
        ))
        .await;
    assert_eq!(status, 404);
}

/// The support desk over federation: a customer whose account is on another server opens a
/// conversation by inviting the desk's bot to a direct chat there; the bot joins it through
/// that server, greets, assigns an agent, and the agent's answer reaches the customer.
#[tokio::test]
async fn a_customer_on_another_server_opens_a_conversation_with_the_desk() {
    let certs = tempfile::tempdir().unwrap();
    super::certificate(certs.path());
    let port = crate::common::process::free_port();
    let desk_name = format!("127.0.0.1:{port}");
    let desk_config = format!(
        "\n[support]\ngreeting = \"Hola, ¿en qué podemos ayudarte?\"\n\
         [[support.agents]]\nuser = \"@ana:{desk_name}\"\ncapacity = 5\n"
    );
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = peer_at(certs.path(), port, a_dir.path(), &desk_config).await;
    let b = peer_at(
        certs.path(),
        crate::common::process::free_port(),
        b_dir.path(),
        "",
    )
    .await;
    let ana = registered(&a.base_url(), "ana").await;
    let carla = registered(&b.base_url(), "carla").await;
    let bot = format!("@support:{desk_name}");

    let dm = carla
        .create_room(json!({
            "preset": "trusted_private_chat", "is_direct": true, "invite": [bot],
        }))
        .await;
    // Written at once, while the bot is only invited: the desk gets it all the same.
    carla.send_text(&dm, "c0", "Hola, mi pedido no llegó").await;
    // The bot joins and greets; the customer sees it on her own server.
    let mut c_since = None;
    let seen = sync_until(&carla, &mut c_since, |s| {
        bodies(s, &dm).contains(&"Hola, ¿en qué podemos ayudarte?".to_owned())
    })
    .await;
    let greeting = seen
        .iter()
        .flat_map(|s| {
            s["rooms"]["join"][&dm]["timeline"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|e| e["content"]["body"] == "Hola, ¿en qué podemos ayudarte?")
        .unwrap();
    assert_eq!(greeting["sender"], json!(bot));

    // Ana, the agent on the desk's server, is assigned (invited) and answers.
    carla.send_text(&dm, "c1", "¿Dónde está mi pedido?").await;
    let mut a_since = None;
    sync_until(&ana, &mut a_since, |s| {
        s.iter().any(|s| s["rooms"]["invite"][&dm].is_object())
    })
    .await;
    let (status, body) = ana
        .post(&format!("/_matrix/client/v3/join/{}", enc(&dm)), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    ana.send_text(&dm, "a1", "Sale hoy, Carla").await;
    sync_until(&carla, &mut c_since, |s| {
        bodies(s, &dm).contains(&"Sale hoy, Carla".to_owned())
    })
    .await;
    // The desk lists the conversation with the customer of the other server as its contact.
    let carla_id = whoami(&carla).await;
    let (status, conversations) = ana.get("/api/support/v1/conversations").await;
    assert_eq!(status, 200, "{conversations}");
    // Her first words reach the desk's server either backfilled at the bot's join (written
    // before it) or, when written while the join was under way, through the gap her next
    // message leaves: waited for, as either may still be on its way.
    let history_path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
        enc(&dm)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, history) = ana.get(&history_path).await;
        assert_eq!(status, 200);
        if history.to_string().contains("Hola, mi pedido no llegó") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent sees the customer's first words: {history}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        conversations.to_string().contains(&carla_id),
        "{conversations}"
    );
    a.stop().await;
    b.stop().await;
}

/// A peer that sends only its latest event after an outage (Synapse's catch-up) leaves a gap:
/// the receiving server asks for the missing events (`get_missing_events`) and appends them, in
/// order, before the new one.
#[tokio::test]
async fn a_gap_before_a_received_event_is_filled_from_its_sender() {
    let certs = tempfile::tempdir().unwrap();
    super::certificate(certs.path());
    let (a_port, b_port) = (
        crate::common::process::free_port(),
        crate::common::process::free_port(),
    );
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = peer_at(certs.path(), a_port, a_dir.path(), "").await;
    let b = peer_at(certs.path(), b_port, b_dir.path(), "").await;
    let alice = registered(&a.base_url(), "alice").await;
    let bob = registered(&b.base_url(), "bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    join_via(&bob, &room, &format!("127.0.0.1:{a_port}")).await;

    // B is down while Alice writes three messages; then A loses all but the last from its
    // queue for B, as if it only ever meant to send the latest.
    b.stop().await;
    for i in 1..=3 {
        alice
            .send_text(&room, &format!("g{i}"), &format!("gap {i}"))
            .await;
    }
    let store = a.services.store.clone();
    let prefix = {
        let mut p = format!("127.0.0.1:{b_port}").into_bytes();
        p.push(0xFF);
        p
    };
    let queued: Vec<Vec<u8>> = store
        .scan_prefix(charla::storage::Table::FederationQueue, &prefix)
        .map(|e| e.unwrap().0.to_vec())
        .collect();
    assert_eq!(queued.len(), 3, "A queued the three messages for B");
    drop(store);
    a.stop().await;
    let a = peer_at(certs.path(), a_port, a_dir.path(), "").await;
    let mut batch = charla::storage::Batch::new();
    for key in &queued[..2] {
        batch.delete(charla::storage::Table::FederationQueue, key.clone());
    }
    a.services.store.write_durable(batch).await.unwrap();

    let b = peer_at(certs.path(), b_port, b_dir.path(), "").await;
    let bob = Client {
        base: b.base_url(),
        ..bob
    };
    // Bob speaks: A hears B is back and sends its queue (the last message only).
    bob.send_text(&room, "back", "back").await;
    let mut since = None;
    sync_until(&bob, &mut since, |s| {
        bodies(s, &room).contains(&"gap 3".to_owned())
    })
    .await;
    let (status, messages) = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
            enc(&room)
        ))
        .await;
    assert_eq!(status, 200);
    let texts: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .filter(|b| b.starts_with("gap"))
        .collect();
    assert_eq!(texts, ["gap 3", "gap 2", "gap 1"], "{messages}");
    a.stop().await;
    b.stop().await;
}

/// A to-device message to a user of a server that is down outlives a restart of the sending
/// server: it is queued durably before the sender is answered (an E2EE key share lost is a
/// message nobody can read).
#[tokio::test]
async fn a_to_device_message_for_a_server_that_is_down_survives_a_restart() {
    let Pair { a, b, _dirs } = pair("").await;
    let alice = registered(&a.base_url(), "alice").await;
    let bob_b = registered(&b.base_url(), "bob").await;
    let bob_id = whoami(&bob_b).await;
    let alice_id = whoami(&alice).await;
    let (status, me) = bob_b.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(status, 200);
    let bob_device = me["device_id"].as_str().unwrap().to_owned();
    let since = bob_b.sync(None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let port_of = |s: &charla::server::RunningServer| -> u16 {
        let name = s.services.config.server_name.to_string();
        name.rsplit_once(':').unwrap().1.parse().unwrap()
    };
    let (a_port, b_port) = (port_of(&a), port_of(&b));
    let certs = _dirs[0].path().to_owned();
    let (a_dir, b_dir) = (_dirs[1].path().to_owned(), _dirs[2].path().to_owned());
    b.stop().await;
    let (status, body) = alice
        .put(
            "/_matrix/client/v3/sendToDevice/m.room_key_request/k1",
            json!({ "messages": { &bob_id: { &bob_device: { "request_id": "r1" } } } }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    // A restarts before B is back: nothing of the message is left in A's memory.
    a.stop().await;
    let a = peer_at(&certs, a_port, &a_dir, "").await;
    let b = peer_at(&certs, b_port, &b_dir, "").await;
    let bob = Client {
        base: b.base_url(),
        ..bob_b
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sync = bob.sync(Some(&since), 1_000).await;
        let events = sync["to_device"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(event) = events.iter().find(|e| e["type"] == "m.room_key_request") {
            assert_eq!(event["content"]["request_id"], json!("r1"), "{event}");
            assert_eq!(event["sender"], json!(alice_id));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the to-device message never came"
        );
    }
    a.stop().await;
    b.stop().await;
}
