//! `webchat`: the web chat's figures (issue #21): `--clients` widget WebSockets held open and
//! the server's memory with them, the delay from an agent's acknowledged send to the frame on
//! the customer's socket, and customer messages per second through `POST /api/chat/message`.
//!
//! It brings its own Charla, as a child process (`charla serve`, this very binary) on a
//! temporary data folder with the web chat on and a desk of one agent, so that the memory
//! measured is the server's alone and the sockets' two ends do not share one process's file
//! descriptors (`--homeserver` is ignored).
//!
//! 1. Sessions: each of `--clients` customers (tokens signed with the server's secret) opens a
//!    session (`POST /api/chat/session`, 32 at a time); the agent is online with room for all
//!    of them.
//! 2. Sockets: every customer opens the widget's WebSocket and authenticates (64 at a time).
//!    With all open and idle: the server's RSS.
//! 3. Delivery: `--samples` of the conversations are assigned to the agent, who joins and
//!    answers in each, one send at a time; per answer, from the send's `200` to the `message` frame on that
//!    customer's socket.
//! 4. Customer messages: for `--duration` seconds, 64 requests in flight, each from the next
//!    customer in turn (each may send 10 a minute, the default limit): accepted per second.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt, TryStreamExt, stream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::bench::BenchArgs;
use crate::bench::client::BoxError;
use crate::bench::report::{Report, mib, read_rss};
use crate::bench::setup::{Ctx, progress, random_prefix};
use crate::bench::stats::{Summary, micros};

const SECRET: &str = "bench-webchat-secret-of-at-least-32-bytes";
/// Session creations in flight during setup.
const SETUP_IN_FLIGHT: usize = 32;
/// Socket handshakes in flight.
const CONNECT_IN_FLIGHT: usize = 64;
/// Customer messages in flight during the throughput phase.
const SEND_IN_FLIGHT: usize = 64;

pub async fn run(args: &BenchArgs) -> Result<Report, BoxError> {
    let dir = std::env::temp_dir().join(format!(
        "charla-bench-webchat-{:08x}",
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, args).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The child `charla serve`, killed when dropped.
struct Server {
    child: std::process::Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(dir: &std::path::Path, agent: &str) -> Result<Server, BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"server_name = "bench"
[server]
listen = "127.0.0.1:{port}"
[storage]
path = "data"
[limits]
send_per_second = 1000000.0
send_burst = 1000000
[logging]
filter = "warn"
[webchat]
enabled = true
jwt_secret = "{SECRET}"
max_sockets = 100000
[support]
admins = ["{agent}"]
greeting = "Hola, ¿en qué podemos ayudarte?"
[[support.agents]]
user = "{agent}"
capacity = 1000000
"#
        ),
    )?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = http
            .get(format!("{}/_matrix/client/versions", server.base))
            .send()
            .await;
        if up.is_ok_and(|r| r.status().is_success()) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err("the bench's charla serve did not start within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn token(customer: usize) -> Result<String, BoxError> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 6 * 3600;
    let claims = json!({ "sub": format!("bench-{customer}"), "name": format!("Cliente {customer}"), "exp": exp });
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes())?,
    )?)
}

/// What the sockets' readers record: when each measured answer arrived, by its text.
#[derive(Default)]
struct Arrivals {
    at: Mutex<HashMap<String, Instant>>,
    notify: tokio::sync::Notify,
}

async fn measure(dir: &std::path::Path, args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.clients.max(1);
    let mut r = Report::new(
        "webchat",
        format!("{n} customers with a session and a WebSocket each; one agent"),
    );
    let prefix = random_prefix();
    let agent_id = format!("@{prefix}-agent-0:bench");
    let server = start_server(dir, &agent_id).await?;
    let pid = server.child.id();
    let base = server.base.clone();
    let ctx = Ctx::new(&base, n, prefix, None)?;
    let agent = ctx.register("agent", 0).await?;
    let http = reqwest::Client::new();
    let presence = format!(
        "{base}/_matrix/client/v3/presence/{}/status",
        agent.user_id.replace(':', "%3A").replace('@', "%40")
    );
    http.put(presence)
        .bearer_auth(agent.access_token())
        .json(&json!({ "presence": "online" }))
        .send()
        .await?
        .error_for_status()?;

    // 1. Sessions.
    progress(format!("webchat: {n} customers open a session"));
    let tokens: Vec<String> = (0..n).map(token).collect::<Result<_, _>>()?;
    let started = Instant::now();
    stream::iter(tokens.iter())
        .map(|t| {
            let http = http.clone();
            let url = format!("{base}/api/chat/session");
            async move {
                let response = http.post(url).bearer_auth(t).send().await?;
                if response.status().as_u16() != 201 {
                    return Err(format!("session: {}", response.status()).into());
                }
                Ok::<_, BoxError>(())
            }
        })
        .buffer_unordered(SETUP_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
    r.row(
        "sessions opened",
        format!("{n} in {:.1} s", started.elapsed().as_secs_f64()),
    );

    // 2. Sockets.
    progress(format!("webchat: {n} sockets connect"));
    let arrivals = Arc::new(Arrivals::default());
    let ws_url = format!("{}/api/chat/ws", base.replacen("http", "ws", 1));
    let (rss_idle_before, _) = read_rss(pid).await.ok_or("cannot read the server's RSS")?;
    let started = Instant::now();
    let readers: Vec<tokio::task::JoinHandle<()>> = stream::iter(tokens.iter())
        .map(|t| {
            let (url, arrivals) = (ws_url.clone(), arrivals.clone());
            async move { open_socket(&url, t, arrivals).await }
        })
        .buffer_unordered(CONNECT_IN_FLIGHT)
        .try_collect()
        .await?;
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, _) = read_rss(pid).await.ok_or("cannot read the server's RSS")?;
    r.row(
        "sockets open",
        format!("{} in {:.1} s", readers.len(), connect_time.as_secs_f64()),
    );
    r.row(
        "server RSS",
        format!(
            "{} with every socket open ({} before they connected)",
            mib(rss),
            mib(rss_idle_before)
        ),
    );
    r.set("sockets", readers.len());
    r.set("rss_kib_sockets_open", rss);

    // 3. Delivery.
    let samples = args.samples.clamp(1, n);
    progress(format!("webchat: the agent answers {samples} customers"));
    let rooms = agent_rooms(&http, &base, &agent, samples).await?;
    for room in &rooms {
        // Assigned to her (the queue may have been drained before she was online), which
        // invites her.
        let assign = format!(
            "{base}/api/support/v1/conversations/{}/assign",
            room.replace('!', "%21").replace(':', "%3A")
        );
        http.post(assign)
            .bearer_auth(agent.access_token())
            .json(&json!({ "user_id": agent.user_id }))
            .send()
            .await?
            .error_for_status()?;
        agent.join(room).await?;
    }
    let mut delays = Vec::with_capacity(rooms.len());
    for (i, room) in rooms.iter().enumerate() {
        let text = format!("respuesta {i}");
        let notified = arrivals.notify.notified();
        agent.send_text(room, &format!("lat-{i}"), &text).await?;
        let acked = Instant::now();
        let deadline = acked + Duration::from_secs(10);
        let mut notified = std::pin::pin!(notified);
        loop {
            if let Some(at) = arrivals.at.lock().remove(&text) {
                delays.push(micros(at.saturating_duration_since(acked)));
                break;
            }
            if tokio::time::timeout_at(deadline.into(), notified.as_mut())
                .await
                .is_err()
            {
                r.problem(format!("{text} did not reach its socket within 10 s"));
                break;
            }
            notified.set(arrivals.notify.notified());
        }
    }
    let delivery = Summary::from_samples(&mut delays);
    r.row("agent send → socket", delivery.human());
    r.set("delivery", delivery.to_json());

    // 4. Customer messages.
    let duration = Duration::from_secs(args.duration.max(1));
    progress(format!(
        "webchat: customers send for {}s",
        duration.as_secs()
    ));
    let (accepted, limited, failed, elapsed) =
        customer_messages(&http, &base, &tokens, duration).await;
    let rate = accepted as f64 / elapsed.as_secs_f64();
    r.row(
        "customer messages",
        format!("{rate:.0}/s accepted ({accepted}; {limited} rate-limited, {failed} failed)"),
    );
    r.set("customer_messages_per_sec", rate);
    if failed > 0 {
        r.problem(format!("{failed} customer messages failed"));
    }
    if let Some((rss, hwm)) = read_rss(pid).await {
        r.row(
            "server RSS at the end",
            format!("{} (peak {})", mib(rss), mib(hwm)),
        );
        r.set("rss_kib_end", rss);
        r.set("rss_kib_peak", hwm);
    }
    for reader in readers {
        reader.abort();
    }
    drop(server);
    Ok(r)
}

/// Opens one widget socket, waits for `ready`, and leaves a task reading it.
async fn open_socket(
    url: &str,
    token: &str,
    arrivals: Arc<Arrivals>,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let auth = json!({ "type": "auth", "token": token });
    socket.send(Message::text(auth.to_string())).await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str())?;
                if frame["type"] == "ready" {
                    break;
                }
            }
            Some(Ok(_)) => {}
            other => return Err(format!("socket closed before ready: {other:?}").into()),
        }
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let at = Instant::now();
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            if frame["type"] == "message" && frame["data"]["sender"] == "support" {
                let body = frame["data"]["message"].as_str().unwrap_or_default();
                if body.starts_with("respuesta ") {
                    arrivals.at.lock().insert(body.to_owned(), at);
                    arrivals.notify.notify_waiters();
                }
            }
        }
    }))
}

/// `count` conversation rooms assigned to the agent, from the support API.
async fn agent_rooms(
    http: &reqwest::Client,
    base: &str,
    agent: &crate::bench::session::Session,
    count: usize,
) -> Result<Vec<String>, BoxError> {
    let url = format!(
        "{base}/api/support/v1/conversations?channel=web&limit={}",
        count.min(500)
    );
    let page: Value = http
        .get(url)
        .bearer_auth(agent.access_token())
        .send()
        .await?
        .json()
        .await?;
    let rooms: Vec<String> = page["conversations"]
        .as_array()
        .ok_or("no conversations listed")?
        .iter()
        .filter_map(|c| c["room_id"].as_str().map(str::to_owned))
        .take(count)
        .collect();
    if rooms.is_empty() {
        return Err("the agent has no conversations".into());
    }
    Ok(rooms)
}

/// Sends for `duration`, [`SEND_IN_FLIGHT`] at a time, each request from the next customer:
/// accepted, rate-limited and failed requests, and the time taken.
async fn customer_messages(
    http: &reqwest::Client,
    base: &str,
    tokens: &[String],
    duration: Duration,
) -> (u64, u64, u64, Duration) {
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let counts = Mutex::new((0u64, 0u64, 0u64));
    let url = format!("{base}/api/chat/message");
    let worker = || async {
        while started.elapsed() < duration {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let token = &tokens[i % tokens.len()];
            let sent = http
                .post(&url)
                .bearer_auth(token)
                .json(&json!({ "message": format!("mensaje {i}") }))
                .send()
                .await;
            let mut c = counts.lock();
            match sent.map(|r| r.status().as_u16()) {
                Ok(201) => c.0 += 1,
                Ok(429) => c.1 += 1,
                _ => c.2 += 1,
            }
        }
    };
    futures_util::future::join_all((0..SEND_IN_FLIGHT).map(|_| worker())).await;
    let (accepted, limited, failed) = *counts.lock();
    (accepted, limited, failed, started.elapsed())
}
