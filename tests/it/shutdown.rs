//! Graceful shutdown of the real binary: SIGTERM while a `/sync` long poll waits answers the
//! poll with a normal sync body, the process exits 0 within 10 seconds, and what was written
//! before is there after a restart on the same folder.

use std::time::Duration;

use serde_json::json;

use crate::common::{
    enc,
    metrics::wait_for_gauge,
    process::{self, free_port},
    registered,
};

#[tokio::test]
async fn sigterm_answers_long_polls_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"localhost\"\n\
             [server]\nlisten = \"127.0.0.1:{port}\"\n\
             [storage]\npath = \"data\"\ncache_capacity_mb = 16\n\
             [metrics]\nenabled = true\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [logging]\nfilter = \"warn\"\n"
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = process::serve(&config, &base).await;

    let alice = registered(&base, "alice").await;
    let room = alice.create_room(json!({ "name": "shutdown" })).await;
    alice.send_text(&room, "t1", "written before SIGTERM").await;
    let since = alice.sync(None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // A long poll that nothing will wake but the shutdown.
    let poller = alice.clone();
    let poll = tokio::spawn(async move {
        poller
            .get(&format!(
                "/_matrix/client/v3/sync?timeout=30000&since={since}"
            ))
            .await
    });
    let metrics = ([127, 0, 0, 1], metrics_port).into();
    wait_for_gauge(metrics, "charla_syncs_waiting", &[], 1.0).await;

    let pid = i32::try_from(server.0.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; it is still ours until we reap it.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    let (status, body) = poll.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["next_batch"].is_string(), "not a sync body: {body}");

    let mut exit = None;
    for _ in 0..100 {
        if let Some(status) = server.0.try_wait().unwrap() {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = exit.expect("charla still running 10 s after SIGTERM");
    assert!(exit.success(), "charla exited with {exit}");

    // Same folder, same token: the message is there.
    let _server = process::serve(&config, &base).await;
    let (status, page) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10",
            enc(&room)
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["written before SIGTERM"], "{page}");
}
