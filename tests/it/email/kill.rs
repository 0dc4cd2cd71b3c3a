//! `kill -9` of the real binary right after the SMTP `250`s: nothing acknowledged is lost or
//! doubled, and the thread stays one conversation.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{DESK, plain_mail, send_raw};
use crate::common::process::{self, Process, free_port};
use crate::common::{Client, V3, enc};

/// Killed cycles; one more runs to the end.
const KILLS: usize = 6;
/// Mails per cycle.
const PER_CYCLE: usize = 5;
/// How long after the cycle's last `250` the process is killed.
const KILL_AFTER_MS: [u64; KILLS] = [0, 0, 5, 20, 50, 100];

async fn spawn(dir: &std::path::Path, port: u16, smtp: u16) -> Process {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"localhost\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [storage]\npath = \"data\"\n[logging]\nfilter = \"error\"\n\
             [bridges.email]\nenabled = true\naddress = \"{DESK}\"\n\
             smtp_listen = \"127.0.0.1:{smtp}\"\nsmtp_relay = \"smtp+plain://127.0.0.1:9\"\n\
             invite = [\"@agent:localhost\"]\nauthenticate = false\nmax_retry_secs = 1\n\
             mails_per_sender_burst = 1000\n"
        ),
    )
    .unwrap();
    process::serve(&config, &format!("http://127.0.0.1:{port}")).await
}

/// The mail `n` of Eva's thread: the first opens it, the others reply to the first.
fn mail(n: usize) -> Vec<u8> {
    let headers = if n == 0 {
        String::new()
    } else {
        "In-Reply-To: <k0@example.org>\r\nReferences: <k0@example.org>\r\n".to_owned()
    };
    plain_mail(
        "Eva <eva@example.org>",
        "Caída",
        &format!("k{n}@example.org"),
        &headers,
        &format!("mail {n}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_the_250_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (port, smtp) = (free_port(), free_port());
    let smtp_addr = format!("127.0.0.1:{smtp}").parse().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut process = spawn(dir.path(), port, smtp).await;
    let mut agent = Client {
        http: reqwest::Client::new(),
        base: base.clone(),
        token: None,
    };
    let (status, body) = agent
        .post(
            &format!("{V3}/register"),
            json!({"username": "agent", "password": "pw-pw-pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    agent.token = Some(body["access_token"].as_str().unwrap().to_owned());

    let mut acked = Vec::new();
    let mut next = 0;
    // Each killed cycle, then one that runs to the end.
    for pause in KILL_AFTER_MS.iter().map(Some).chain([None]) {
        for _ in 0..PER_CYCLE {
            // A mail whose 250 never came (the process died) is sent again, as an MTA does.
            if send_raw(smtp_addr, "eva@example.org", DESK, &mail(next))
                .await
                .is_ok()
            {
                acked.push(format!("mail {next}"));
                next += 1;
            }
        }
        let Some(pause) = pause else { break };
        tokio::time::sleep(Duration::from_millis(*pause)).await;
        process.kill();
        process = spawn(dir.path(), port, smtp).await;
    }
    assert_eq!(acked.len(), (KILLS + 1) * PER_CYCLE);

    // One conversation, every acknowledged mail in it once, in order.
    let deadline = Instant::now() + Duration::from_secs(60);
    let room = loop {
        let sync = agent.sync(None, 0).await;
        let invites: Vec<String> = sync["rooms"]["invite"]
            .as_object()
            .map(|i| i.keys().cloned().collect())
            .unwrap_or_default();
        if !invites.is_empty() {
            assert_eq!(invites.len(), 1, "one thread, one room: {invites:?}");
            break invites[0].clone();
        }
        assert!(Instant::now() < deadline, "no conversation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, body) = agent.join(&room).await;
    assert_eq!(status, 200, "{body}");
    let bodies = loop {
        let (_, page) = agent
            .get(&format!(
                "{V3}/rooms/{}/messages?dir=f&limit=1000",
                enc(&room)
            ))
            .await;
        let bodies: Vec<String> = page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["type"] == "m.room.message"
                    && e["sender"].as_str().unwrap_or("").starts_with("@email_")
            })
            .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
            .collect();
        if bodies.len() >= acked.len() || Instant::now() > deadline {
            break bodies;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(bodies, acked);
    let sync = agent.sync(None, 0).await;
    let joined = sync["rooms"]["join"].as_object().map_or(0, |j| j.len());
    assert_eq!(joined, 1);
    process.kill();
}
