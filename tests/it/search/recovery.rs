//! The index after crashes, losses and rebuilds: a `kill -9` between the store's commit and the
//! index's never leaves an acknowledged message unsearchable nor found twice; a lost index is
//! rebuilt from the store; `charla admin reindex` rebuilds while the server answers.

use std::time::Duration;

use serde_json::{Value, json};

use super::{admin, indexed, room_events};
use crate::admin::AdminCli;
use crate::common::{
    Client, TestServer,
    process::{Process, free_port, serve},
};

async fn spawn(dir: &std::path::Path, port: u16) -> (Process, String) {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"localhost\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [storage]\npath = \"data\"\n\
             [limits]\nsend_per_second = 100000.0\nsend_burst = 100000\n\
             search_per_second = 100000.0\nsearch_burst = 100000\n[logging]\nfilter = \"warn\"\n"
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    (serve(&config, &base).await, base)
}

fn client_at(base: &str, token: Option<String>) -> Client {
    Client {
        http: reqwest::Client::new(),
        base: base.to_owned(),
        token,
    }
}

async fn status(base: &str, dir: &std::path::Path) -> Value {
    let token = std::fs::read_to_string(dir.join("data/admin.token")).unwrap();
    let (code, body) = client_at(base, Some(token.trim().to_owned()))
        .get("/_charla/admin/v1/search")
        .await;
    assert_eq!(code, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_store_and_the_index_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (process, base) = spawn(dir.path(), port).await;
    let alice = crate::common::registered(&base, "alice").await;
    let room = alice.create_room(json!({})).await;

    // Bursts of acknowledged messages until the index is seen behind the store, then kill -9
    // at once: the last messages are in the store and not in the index's last commit.
    let mut words = Vec::new();
    let mut behind = false;
    for round in 0..10 {
        let mut sends = Vec::new();
        for i in 0..40 {
            let word = format!("k{round:02}x{i:02}q");
            let (alice, room, w) = (alice.clone(), room.clone(), word.clone());
            sends.push(tokio::spawn(async move {
                alice.send_text(&room, &w, &format!("pedido {w}")).await
            }));
            words.push(word);
        }
        for send in sends {
            send.await.unwrap();
        }
        let now = status(&base, dir.path()).await;
        if now["indexed_upto"].as_u64() < now["stream_head"].as_u64() {
            behind = true;
            break;
        }
    }
    process.kill();
    assert!(
        behind,
        "the index never trailed the store: nothing was tested"
    );

    let (_process, base) = spawn(dir.path(), port).await;
    let alice = client_at(&base, alice.token.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = status(&base, dir.path()).await;
        if now["indexed_upto"].as_u64() >= now["stream_head"].as_u64() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for word in &words {
        let found = room_events(&alice, json!({ "search_term": word })).await;
        assert_eq!(found["count"], 1, "{word}: {found}");
        assert_eq!(
            found["results"][0]["result"]["content"]["body"],
            format!("pedido {word}")
        );
    }
    let all = room_events(
        &alice,
        json!({ "search_term": "pedido", "filter": { "limit": 1 } }),
    )
    .await;
    assert_eq!(
        all["count"],
        words.len(),
        "each message indexed once, replays included"
    );
}

#[tokio::test]
async fn a_lost_index_is_rebuilt_from_the_store_at_start() {
    let s = super::server().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..30 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("albarán número {i}"))
            .await;
    }
    indexed(&s).await;
    let token = alice.token.clone();
    let s = s
        .restart_after(|data| std::fs::remove_dir_all(data.join("search")).unwrap())
        .await;
    let mut alice = s.client();
    alice.token = token;
    indexed(&s).await;
    let found = room_events(&alice, json!({ "search_term": "albaran" })).await;
    assert_eq!(found["count"], 30, "{found}");
}

#[tokio::test]
async fn reindex_rebuilds_with_the_cli_and_search_keeps_answering() {
    let s = super::server().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({ "name": "Reclamaciones" })).await;
    let mut edited = String::new();
    for i in 0..40 {
        let id = alice
            .send_text(&room, &format!("t{i}"), &format!("reclamación {i}"))
            .await;
        if i == 3 {
            edited = id;
        }
    }
    alice
        .send_message(
            &room,
            "e",
            json!({
                "msgtype": "m.text",
                "body": "* corregido",
                "m.new_content": { "msgtype": "m.text", "body": "mensaje corregido" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": edited },
            }),
        )
        .await;
    indexed(&s).await;
    let before = room_events(&alice, json!({ "search_term": "reclamacion" })).await;
    assert_eq!(
        before["count"], 40,
        "39 messages and the room's name: {before}"
    );

    let cli = AdminCli::of(&s);
    let done = cli.json(&["reindex"]).await;
    assert_eq!(done["reindex"]["state"], "done", "{done}");
    assert_eq!(done["generation"], 2);
    // 40 messages (one under its edit), the name, and nothing else searchable.
    assert_eq!(done["reindex"]["documents"], 41, "{done}");
    assert!(done["indexed_upto"].as_u64() >= done["reindex"]["total"].as_u64());
    assert!(
        !s.data_path().join("search/1").exists(),
        "the old generation is removed"
    );

    let after = room_events(&alice, json!({ "search_term": "reclamacion" })).await;
    assert_eq!(after["count"], 40);
    let fixed = room_events(&alice, json!({ "search_term": "corregido" })).await;
    assert_eq!(fixed["results"][0]["result"]["event_id"], edited.as_str());
    // New messages go into the new generation.
    alice.send_text(&room, "late", "reclamación tardía").await;
    indexed(&s).await;
    assert_eq!(
        room_events(&alice, json!({ "search_term": "tardia" })).await["count"],
        1
    );
    let (code, body) = admin(&s).get("/_charla/admin/v1/search").await;
    assert_eq!(code, 200);
    assert_eq!(body["generation"], 2, "{body}");
}

/// Copies a folder tree (the test's stand-in for a backup of the store).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn an_index_ahead_of_a_restored_store_is_rebuilt() {
    let s = super::server().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..10 {
        alice
            .send_text(&room, &format!("a{i}"), &format!("antes {i}"))
            .await;
    }
    indexed(&s).await;
    let snapshot = tempfile::tempdir().unwrap();
    let s = s
        .restart_after(|data| copy_tree(data, &snapshot.path().join("data")))
        .await;
    let mut alice = s.client();
    alice.token = alice_token(&s, "alice").await;
    for i in 0..10 {
        alice
            .send_text(&room, &format!("d{i}"), &format!("después {i}"))
            .await;
    }
    indexed(&s).await;
    // The store goes back to the snapshot; the newer index stays.
    let s = s
        .restart_after(|data| {
            let kept = snapshot.path().join("kept-index");
            std::fs::rename(data.join("search"), &kept).unwrap();
            std::fs::remove_dir_all(data).unwrap();
            copy_tree(&snapshot.path().join("data"), data);
            let _ = std::fs::remove_dir_all(data.join("search"));
            std::fs::rename(&kept, data.join("search")).unwrap();
        })
        .await;
    alice.base = s.server.base_url();
    // The login after the snapshot is not in the restored store.
    alice.token = alice_token(&s, "alice").await;
    indexed(&s).await;
    assert_eq!(
        room_events(&alice, json!({ "search_term": "despues" })).await["count"],
        0
    );
    assert_eq!(
        room_events(&alice, json!({ "search_term": "antes" })).await["count"],
        10
    );
}

/// Logs `user` in again (a restart keeps accounts; the test's client lost its server).
async fn alice_token(s: &TestServer, user: &str) -> Option<String> {
    let (status, body) = s
        .client()
        .post(
            "/_matrix/client/v3/login",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": "secret-pw" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn with_search_off_nothing_answers_and_turning_it_on_indexes_what_came_meanwhile() {
    let off = format!("{}[search]\nenabled = false\n", super::UNLIMITED);
    let s = TestServer::start_with(&off).await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    alice.send_text(&room, "t1", "factura pendiente").await;
    let (status, body) = super::search(&alice, json!({ "search_term": "factura" })).await;
    crate::common::assert_error(status, &body, 400, "M_UNKNOWN");
    let (status, body) = admin(&s)
        .post("/_charla/admin/v1/search/reindex", json!({}))
        .await;
    crate::common::assert_error(status, &body, 400, "M_UNKNOWN");
    let token = alice.token.clone();
    let s = s.restart_with(super::UNLIMITED).await;
    let mut alice = s.client();
    alice.token = token;
    indexed(&s).await;
    let found = room_events(&alice, json!({ "search_term": "factura" })).await;
    assert_eq!(found["count"], 1, "{found}");
}
