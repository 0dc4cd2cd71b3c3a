//! "A 200 means durable": acknowledged events survive a restart, and a `kill -9` of the real
//! binary in the middle of a burst of concurrent sends.

use std::time::Duration;

use crate::common::{
    Client, TestServer, enc,
    process::{self, Process, free_port},
};
use serde_json::json;

/// Every `m.room.message` body in the room, oldest first, paginating `/messages` to the start.
pub(crate) async fn all_bodies(client: &Client, room: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            enc(room)
        );
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, page) = client.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for e in page["chunk"].as_array().unwrap() {
            if e["type"] == "m.room.message" {
                bodies.push(e["content"]["body"].as_str().unwrap().to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    bodies.reverse();
    bodies
}

#[tokio::test]
async fn acknowledged_events_survive_restart() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let room = alice.create_room(json!({ "name": "durable" })).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            alice
                .send_text(&room, &format!("t{i}"), &format!("m{i}"))
                .await,
        );
    }
    let token = alice.token.clone();

    let server = server.restart().await;
    let mut alice = server.client();
    alice.token = token;
    let bodies = all_bodies(&alice, &room).await;
    assert_eq!(bodies, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());
    // Event ids are stable and retrievable after the restart.
    let (status, event) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room),
            enc(&ids[7])
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(event["content"]["body"], "m7");
    // A retried transaction after restart still maps to the first event.
    assert_eq!(alice.send_text(&room, "t3", "m3 again").await, ids[3]);
    // And the room keeps working: new events chain onto the old ones.
    alice.send_text(&room, "after", "after restart").await;
    assert_eq!(
        all_bodies(&alice, &room).await.last().unwrap(),
        "after restart"
    );
}

async fn spawn(dir: &std::path::Path, port: u16) -> (Process, String) {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"localhost\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"data\"\n\
             [limits]\nsend_per_second = 100000.0\nsend_burst = 100000\n[logging]\nfilter = \"warn\"\n"
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    (process::serve(&config, &base).await, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_on_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (process, base) = spawn(dir.path(), free_port()).await;
    let mut alice = Client {
        http: reqwest::Client::new(),
        base,
        token: None,
    };
    let (status, body) = alice
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "alice", "password": "pw-pw-pw", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    alice.token = Some(body["access_token"].as_str().unwrap().to_owned());
    let room = alice.create_room(json!({})).await;

    // Eight concurrent senders; record exactly what was acknowledged, then kill -9 mid-burst.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut senders = Vec::new();
    for w in 0..8 {
        let (alice, room, tx) = (alice.clone(), room.clone(), tx.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let body = format!("w{w}-{i}");
                let path = format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{body}",
                    enc(&room)
                );
                let req = alice
                    .http
                    .put(format!("{}{}", alice.base, path))
                    .bearer_auth(alice.token.as_ref().unwrap());
                match req
                    .json(&json!({ "msgtype": "m.text", "body": body }))
                    .send()
                    .await
                {
                    Ok(res) if res.status() == 200 => {
                        let _ = tx.send(body);
                    }
                    _ => return,
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(process); // SIGKILL, no shutdown path runs.
    for s in senders {
        let _ = s.await;
    }
    let mut acknowledged = Vec::new();
    while let Some(b) = rx.recv().await {
        acknowledged.push(b);
    }
    assert!(
        acknowledged.len() > 10,
        "the burst got going: {}",
        acknowledged.len()
    );

    let (_process, base) = spawn(dir.path(), free_port()).await;
    alice.base = base;
    let stored = all_bodies(&alice, &room).await;
    for body in &acknowledged {
        assert!(
            stored.contains(body),
            "acknowledged {body} is missing after kill -9"
        );
    }
    // Per sender, the stored order is the send order.
    for w in 0..8 {
        let prefix = format!("w{w}-");
        let seq: Vec<u64> = stored
            .iter()
            .filter_map(|b| b.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(
            seq.windows(2).all(|p| p[0] < p[1]),
            "sender {w} out of order: {seq:?}"
        );
    }
}
