//! `email`: the email channel's figures (issue #24), both ways, nothing lost or doubled.
//!
//! It brings its own system, in this process and a temporary data folder (`--homeserver` is
//! ignored): a Charla running the email bridge (`authenticate = false`: no DNS; per-sender
//! limits out of the way; `max_message_bytes` 36 MiB, since a 25 MB attachment is ~34 MB once
//! base64-encoded and the SMTP `SIZE` limit counts the encoded mail), an agent invited to every
//! conversation, and a recording SMTP relay on loopback (`email::smtp::serve`) the answers go
//! out through. Customers write with lettre, as a real MTA would.
//!
//! 1. **Inbound**: `--messages` mails in threads of [`PER_THREAD`] (one customer address per
//!    thread; a thread's first mail opens its conversation, the others reply to it with
//!    `In-Reply-To`/`References` and a quoted history to trim), each thread's mails one after
//!    the other, `--clients` threads at a time over pooled SMTP connections. Figures: the
//!    SMTP accept rate (`250`s a second), the rate into conversations (until the last mail is
//!    an `m.room.message` in its room, seen in the server's event stream) and each mail's delay
//!    from its `250` to its event. Then the agent joins every conversation and reads it with
//!    `/messages`: every mail exactly once, in its thread's room, in order.
//! 2. **Outbound**: `--messages` answers from the agent spread over the conversations (each
//!    conversation's one after the other, `--clients` conversations at a time), until the relay
//!    has them all and every delivery is `sent`: answers a second, each one's delay from its
//!    send to the relay; no Message-ID or answer twice, each conversation's in order, each to
//!    its customer.
//! 3. **Attachments**: a 25 MB (25,000,000 bytes) attachment mailed in, until its `m.file` is
//!    in the room (downloaded and compared by length and SHA-256); and 25 MB uploaded by the
//!    agent and sent as an `m.file`, until the relay has it (the attachment decoded from the
//!    relayed mail and compared).
//!
//! The figures (≥ 500 mails a second in, ≥ 200 a second out) are named in the rows,
//! not asserted: the bench reports. Everything shares the process (server, bridge, customers'
//! SMTP clients, relay), so the CPU row is all of it.
//!
//! Reading the SMTP rates: lettre (the customers' client here, and the bridge's own towards
//! the relay) writes a mail's content and its final `.` in two writes on a socket without
//! `TCP_NODELAY`, so every mail waits for the server's delayed ACK (~40 ms on Linux loopback):
//! one connection carries at most ~20 mails a second whatever the server does, and the rates
//! grow with `--clients` (and the bridge's `send_concurrency`) while the CPU stays half idle.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine;
use futures_util::{StreamExt, stream};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::{Attachment, MultiPart, SinglePart, header::ContentType},
    transport::smtp::PoolConfig,
};
use parking_lot::Mutex;
use rand::RngCore;
use ruma::events::TimelineEventType;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::bench::{
    BenchArgs,
    client::BoxError,
    report::Report,
    setup::progress,
    stats::{Summary, micros},
};
use crate::server::RunningServer;

/// The desk's address.
const DESK: &str = "support@desk.example";
/// Mails per thread: the first opens the conversation, the rest reply.
const PER_THREAD: usize = 10;
/// The attachments' size each way (the "25 MB").
const ATTACHMENT_BYTES: usize = 25 * 1000 * 1000;
/// The bridge's (and so the listener's SIZE) limit for the bench: 36 MiB, room for 25 MB in
/// base64 (~34.2 MB with line ends) and the mail around it.
const MAX_MESSAGE_BYTES: usize = 36 * 1024 * 1024;
/// Relayed mails larger than this are kept whole (the attachment's); smaller ones only counted.
const BIG_MAIL: usize = 1 << 20;
/// Joins and history reads in flight.
const SETUP_IN_FLIGHT: usize = 16;
/// How long a phase may go without progress before the bench stops waiting for it.
const STALL: Duration = Duration::from_secs(30);

pub async fn run(args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.messages.max(1);
    let clients = args.clients.max(1);
    let threads = n.div_ceil(PER_THREAD);
    let dir =
        std::env::temp_dir().join(format!("charla-bench-email-{:08x}", rand::random::<u32>()));
    let mut r = Report::new(
        "email",
        format!(
            "{n} mails in ({threads} threads of up to {PER_THREAD}) over {clients} SMTP \
             connections, {n} answers out, 25 MB each way; bridge in process, relay on loopback, \
             max_message_bytes 36 MiB"
        ),
    );
    std::fs::create_dir_all(&dir)?;
    let outcome = measure(&dir, n, clients, &mut r).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        r.problem(format!("stopped early: {e}"));
    }
    Ok(r)
}

async fn measure(dir: &Path, n: usize, clients: usize, r: &mut Report) -> Result<(), BoxError> {
    progress("email: starting Charla with the email bridge and a relay");
    let relay = Relay::start().await?;
    let rig = Rig::start(dir, relay.port, clients).await?;
    let watcher = Watcher::start(&rig.server);
    let result = phases(&rig, &relay, &watcher, n, clients, r).await;
    watcher.stop();
    rig.server.stop().await;
    relay.stop();
    result
}

async fn phases(
    rig: &Rig,
    relay: &Relay,
    watcher: &Watcher,
    n: usize,
    clients: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    let rooms = inbound(rig, watcher, n, clients, r).await?;
    outbound(rig, relay, &rooms, n, clients, r).await?;
    let room = attachment_in(rig, watcher, r).await?;
    attachment_out(rig, relay, &room, r).await
}

// --- the system under test ---

/// The server with the bridge, its agent, and what the bench reaches them with.
struct Rig {
    server: RunningServer,
    bridge: Arc<email::Bridge>,
    smtp: SocketAddr,
    base: String,
    http: reqwest::Client,
    /// The agent's access token.
    token: String,
}

impl Rig {
    async fn start(dir: &Path, relay_port: u16, clients: usize) -> Result<Rig, BoxError> {
        let text = format!(
            "server_name = \"localhost\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\npath = {data:?}\n\
             [limits]\nsend_per_second = 1000000.0\nsend_burst = 1000000\n\
             [logging]\nfilter = \"warn\"\n\
             [support]\ngreeting = \"\"\n\
             [bridges.email]\nenabled = true\naddress = \"{DESK}\"\n\
             smtp_listen = \"127.0.0.1:0\"\nsmtp_relay = \"smtp+plain://127.0.0.1:{relay_port}\"\n\
             invite = [\"@agent:localhost\"]\nauthenticate = false\n\
             mails_per_sender_per_hour = 1000000\nmails_per_sender_burst = 1000000\n\
             max_connections = {max_connections}\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n",
            data = dir.join("data"),
            // lettre's pool may hold more sockets than sends in flight for a moment.
            max_connections = (clients * 4).max(256),
        );
        let config = crate::config::Config::from_toml(&text)?;
        let server = crate::server::start(config).await?;
        let handle = server
            .email
            .as_ref()
            .ok_or("the email bridge is not running")?;
        let (bridge, smtp) = (handle.bridge().clone(), handle.smtp_addr());
        let base = server.base_url();
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .build()?;
        let answer: Value = http
            .post(format!("{base}/_matrix/client/v3/register"))
            .json(&json!({"username": "agent", "password": "bench-password",
                          "auth": {"type": "m.login.dummy"}}))
            .send()
            .await?
            .json()
            .await?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| format!("agent registration failed: {answer}"))?
            .to_owned();
        Ok(Rig {
            server,
            bridge,
            smtp,
            base,
            http,
            token,
        })
    }

    async fn join(&self, room: &str) -> Result<(), BoxError> {
        self.http
            .post(format!(
                "{}/_matrix/client/v3/join/{}",
                self.base,
                enc(room)
            ))
            .bearer_auth(&self.token)
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// `PUT /send` of an `m.room.message` as the agent; its event id.
    async fn send(&self, room: &str, txn: &str, content: &Value) -> Result<String, BoxError> {
        let answer: Value = self
            .http
            .put(format!(
                "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                self.base,
                enc(room)
            ))
            .bearer_auth(&self.token)
            .json(content)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(answer["event_id"].as_str().ok_or("no event_id")?.to_owned())
    }

    /// The customers' message bodies in `room`, oldest first, as the agent reads them.
    async fn customer_bodies(&self, room: &str) -> Result<Vec<String>, BoxError> {
        let mut bodies = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
                self.base,
                enc(room)
            );
            if let Some(f) = &from {
                url.push_str(&format!("&from={}", enc(f)));
            }
            let page: Value = self
                .http
                .get(url)
                .bearer_auth(&self.token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            for event in &chunk {
                let puppet = event["sender"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("@email_"));
                if puppet
                    && event["type"] == "m.room.message"
                    && let Some(body) = event["content"]["body"].as_str()
                {
                    bodies.push(body.to_owned());
                }
            }
            match page["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        bodies.reverse();
        Ok(bodies)
    }

    fn transport(&self, pool: usize) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.smtp.ip().to_string())
            .port(self.smtp.port())
            .timeout(Some(Duration::from_secs(120)))
            .pool_config(PoolConfig::new().max_size(pool.min(u32::MAX as usize) as u32))
            .build()
    }
}

/// A mail as a customer's MTA hands it over: `from` to the desk.
async fn send_mail(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    from: &str,
    raw: &[u8],
) -> Result<(), String> {
    let envelope = lettre::address::Envelope::new(
        Some(from.parse().map_err(|e| format!("{from}: {e}"))?),
        vec![DESK.parse().map_err(|e| format!("{DESK}: {e}"))?],
    )
    .map_err(|e| e.to_string())?;
    match transport.send_raw(&envelope, raw).await {
        Ok(answer) if answer.is_positive() => Ok(()),
        Ok(answer) => Err(format!("answered {}", answer.code())),
        Err(e) => Err(e.to_string()),
    }
}

// --- the relay ---

/// One mail the relay took: summarised, not kept (but for the big one).
struct Relayed {
    at: Instant,
    to: String,
    message_id: Option<String>,
    /// The bench's answer in it: (conversation, number).
    tag: Option<(usize, usize)>,
}

/// The relay's record.
#[derive(Default)]
struct Sink {
    mails: Mutex<Vec<Relayed>>,
    /// The last mail over [`BIG_MAIL`], whole, and when it came.
    big: Mutex<Option<(Instant, Vec<u8>)>>,
}

impl email::smtp::MailSink for Sink {
    fn accepts_recipient(&self, _: &str) -> bool {
        true
    }

    fn check_sender(&self, _: &str, _: std::net::IpAddr) -> Result<(), email::smtp::Refusal> {
        Ok(())
    }

    async fn deliver(
        &self,
        envelope: email::smtp::Envelope,
        message: Vec<u8>,
    ) -> Result<(), email::smtp::Refusal> {
        let at = Instant::now();
        let to = envelope.recipients.first().cloned().unwrap_or_default();
        if message.len() > BIG_MAIL {
            let message_id = header(&message, "Message-ID");
            self.mails.lock().push(Relayed {
                at,
                to,
                message_id,
                tag: None,
            });
            *self.big.lock() = Some((at, message));
        } else {
            let relayed = Relayed {
                at,
                to,
                message_id: header(&message, "Message-ID"),
                tag: answer_tag(&message),
            };
            self.mails.lock().push(relayed);
        }
        Ok(())
    }
}

/// A recording SMTP server on loopback, as the bridge's relay.
struct Relay {
    port: u16,
    sink: Arc<Sink>,
    stop: watch::Sender<bool>,
}

impl Relay {
    async fn start() -> Result<Relay, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let settings = Arc::new(email::smtp::Settings {
            hostname: "relay.bench".into(),
            max_message_bytes: 64 << 20,
            max_connections: 1024,
            max_recipients: 10,
            tls: None,
            command_timeout: Duration::from_secs(120),
        });
        let sink = Arc::new(Sink::default());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(email::smtp::serve(
            listener,
            settings,
            sink.clone(),
            stopped,
        ));
        Ok(Relay { port, sink, stop })
    }

    fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// The value of a header of a raw mail (first occurrence, first line).
fn header(mail: &[u8], name: &str) -> Option<String> {
    let end = mail
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(mail.len());
    let head = String::from_utf8_lossy(&mail[..end]);
    head.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// The text of the `i`th answer into conversation `r`.
fn answer_text(r: usize, i: usize) -> String {
    format!("Respuesta {r}/{i} del agente.")
}

/// `(r, i)` of the answer a relayed mail carries.
fn answer_tag(mail: &[u8]) -> Option<(usize, usize)> {
    let text = String::from_utf8_lossy(mail);
    let rest = &text[text.find("Respuesta ")? + "Respuesta ".len()..];
    let (r, rest) = rest.split_once('/')?;
    let i: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((r.parse().ok()?, i.parse().ok()?))
}

// --- what the server's stream shows ---

/// A customer's message as first seen in the server's event stream.
#[derive(Clone)]
struct Seen {
    at: Instant,
    room: String,
    /// Times a message with this body was seen (1 unless doubled).
    count: usize,
    url: Option<String>,
}

/// Reads the server's event stream as a consumer would: when each of the customers' (the
/// bridge's puppets') messages became an event, by body.
struct Watcher {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn start(server: &RunningServer) -> Watcher {
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let services = server.services.clone();
        let (seen_w, stop_w) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut heads = services.stream.watch();
            let mut after = 0;
            while !stop_w.load(Ordering::Relaxed) {
                let head = services.stream.head();
                let Ok(events) = services.rooms.events_in_range(after, head, 4096) else {
                    return;
                };
                let now = Instant::now();
                for (pos, event) in &events {
                    after = *pos;
                    let pdu = &event.pdu;
                    if pdu.kind != TimelineEventType::RoomMessage
                        || !pdu.sender.localpart().starts_with("email_")
                    {
                        continue;
                    }
                    let Ok(content) = pdu.content_as::<Value>() else {
                        continue;
                    };
                    let Some(body) = content["body"].as_str() else {
                        continue;
                    };
                    seen_w
                        .lock()
                        .entry(body.to_owned())
                        .and_modify(|s| s.count += 1)
                        .or_insert_with(|| Seen {
                            at: now,
                            room: pdu.room_id.to_string(),
                            count: 1,
                            url: content["url"].as_str().map(str::to_owned),
                        });
                }
                if events.is_empty() {
                    after = after.max(head);
                    let _ = tokio::time::timeout(Duration::from_millis(50), heads.changed()).await;
                }
            }
        });
        Watcher { seen, stop }
    }

    fn get(&self, body: &str) -> Option<Seen> {
        self.seen.lock().get(body).cloned()
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// --- 1. inbound ---

fn customer(t: usize) -> String {
    format!("cliente{t}@example.org")
}

fn mail_text(t: usize, j: usize) -> String {
    format!("Hola, mensaje {j} del hilo {t}.")
}

fn message_id(t: usize, j: usize) -> String {
    format!("t{t}.m{j}@example.org")
}

/// Mail `j` of thread `t`: the first opens it, the others reply (quoting, Gmail style).
fn thread_mail(t: usize, j: usize) -> Vec<u8> {
    let (subject, threading, quote) = if j == 0 {
        (format!("Pedido {t}"), String::new(), String::new())
    } else {
        let references: Vec<String> = (0..j).map(|k| format!("<{}>", message_id(t, k))).collect();
        (
            format!("Re: Pedido {t}"),
            format!(
                "In-Reply-To: <{}>\r\nReferences: {}\r\n",
                message_id(t, j - 1),
                references.join(" ")
            ),
            format!(
                "\r\n\r\nOn Sun, 6 Dec 2026 at 10:00, Cliente {t} <{}> wrote:\r\n> {}\r\n",
                customer(t),
                mail_text(t, j - 1)
            ),
        )
    };
    format!(
        "From: Cliente {t} <{from}>\r\nTo: {DESK}\r\nSubject: {subject}\r\n\
         Message-ID: <{id}>\r\n{threading}Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         {text}{quote}\r\n",
        from = customer(t),
        id = message_id(t, j),
        text = mail_text(t, j),
    )
    .into_bytes()
}

/// Sends the threads, measures, checks; the conversation room of each thread that has one.
async fn inbound(
    rig: &Rig,
    watcher: &Watcher,
    n: usize,
    clients: usize,
    r: &mut Report,
) -> Result<Vec<(usize, String)>, BoxError> {
    let threads = n.div_ceil(PER_THREAD);
    let mails_of = |t: usize| PER_THREAD.min(n - t * PER_THREAD);
    progress(format!(
        "email: inbound, {n} mails in {threads} threads over {clients} SMTP connections"
    ));
    let transport = rig.transport(clients);
    let cpu_before = process_cpu();
    let started = Instant::now();
    // Per mail (t * PER_THREAD + j): when its 250 came, or why it did not.
    let answers: Vec<(usize, Result<Instant, String>)> = stream::iter(0..threads)
        .map(|t| {
            let transport = &transport;
            async move {
                let mut answers = Vec::with_capacity(PER_THREAD);
                for j in 0..mails_of(t) {
                    let raw = thread_mail(t, j);
                    let sent = send_mail(transport, &customer(t), &raw).await;
                    answers.push((t * PER_THREAD + j, sent.map(|()| Instant::now())));
                }
                answers
            }
        })
        .buffer_unordered(clients)
        .flat_map(stream::iter)
        .collect()
        .await;
    let smtp_time = started.elapsed();
    let mut accepted: Vec<Option<Instant>> = vec![None; n];
    let mut refusals: HashMap<String, usize> = HashMap::new();
    for (i, answer) in answers {
        match answer {
            Ok(at) => accepted[i] = Some(at),
            Err(e) => *refusals.entry(e).or_default() += 1,
        }
    }
    let accepted_count = accepted.iter().flatten().count();
    let smtp_rate = accepted_count as f64 / smtp_time.as_secs_f64();
    r.row(
        "inbound SMTP accepted (250, durable)",
        format!(
            "{smtp_rate:.0} mails/s ({accepted_count} of {n} in {:.2} s)",
            smtp_time.as_secs_f64()
        ),
    );
    r.set("inbound_smtp_per_sec", smtp_rate);
    if !refusals.is_empty() {
        r.problem(format!("inbound: SMTP refusals {refusals:?}"));
    }

    // Until every accepted mail is an event (or nothing moves for a while).
    let expected: Vec<(usize, String)> = (0..n)
        .filter(|&i| accepted[i].is_some())
        .map(|i| (i, mail_text(i / PER_THREAD, i % PER_THREAD)))
        .collect();
    let mut last_progress = (0, Instant::now());
    let mut last_line = Instant::now();
    loop {
        let arrived = {
            let seen = watcher.seen.lock();
            expected
                .iter()
                .filter(|(_, b)| seen.contains_key(b))
                .count()
        };
        if arrived >= expected.len() {
            break;
        }
        if arrived > last_progress.0 {
            last_progress = (arrived, Instant::now());
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            progress(format!(
                "email: {arrived} of {} mails in their rooms after {:.0} s (inbox {})",
                expected.len(),
                started.elapsed().as_secs_f64(),
                rig.bridge.store().inbox_len()
            ));
        }
        if last_progress.1.elapsed() > STALL {
            r.problem(format!(
                "inbound: no progress for {} s with {arrived} of {} mails in rooms",
                STALL.as_secs(),
                expected.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = process_cpu().saturating_sub(cpu_before);
    let seen: HashMap<usize, Seen> = {
        let seen = watcher.seen.lock();
        expected
            .iter()
            .filter_map(|(i, b)| Some((*i, seen.get(b)?.clone())))
            .collect()
    };
    let last = seen.values().map(|s| s.at).max().unwrap_or(started);
    let e2e = last.duration_since(started);
    let rate = seen.len() as f64 / e2e.as_secs_f64().max(1e-3);
    r.row(
        "inbound into conversations (issue: >= 500 mails/s)",
        format!(
            "{rate:.0} mails/s ({} in {:.2} s, {threads} conversations opened)",
            seen.len(),
            e2e.as_secs_f64()
        ),
    );
    r.set("inbound_per_sec", rate);
    let (mut firsts, mut replies) = (Vec::new(), Vec::new());
    for (i, s) in &seen {
        if let Some(at) = accepted[*i] {
            let delay = micros(s.at.saturating_duration_since(at));
            if i % PER_THREAD == 0 {
                firsts.push(delay);
            } else {
                replies.push(delay);
            }
        }
    }
    let mut all: Vec<u64> = firsts.iter().chain(&replies).copied().collect();
    let all = Summary::from_samples(&mut all);
    let firsts = Summary::from_samples(&mut firsts);
    let replies = Summary::from_samples(&mut replies);
    r.row("inbound 250 -> event, every mail", all.human());
    r.row(
        "inbound 250 -> event, a thread's first (opens the room)",
        firsts.human(),
    );
    r.row("inbound 250 -> event, replies", replies.human());
    r.set("inbound_latency", all.to_json());
    r.set("inbound_latency_first", firsts.to_json());
    r.set("inbound_latency_replies", replies.to_json());
    r.row(
        "inbound CPU (whole process: server, bridge, customers)",
        format!(
            "{:.2} ms per mail ({:.2} cores busy)",
            cpu.as_secs_f64() * 1000.0 / seen.len().max(1) as f64,
            cpu.as_secs_f64() / e2e.as_secs_f64().max(1e-3)
        ),
    );
    r.set(
        "inbound_cpu_ms_per_mail",
        cpu.as_secs_f64() * 1000.0 / seen.len().max(1) as f64,
    );

    // The agent joins every conversation and reads it.
    let mut rooms: HashMap<usize, String> = HashMap::new();
    for (i, s) in &seen {
        rooms
            .entry(i / PER_THREAD)
            .or_insert_with(|| s.room.clone());
    }
    let mut rooms: Vec<(usize, String)> = rooms.into_iter().collect();
    rooms.sort();
    let distinct: HashSet<&String> = rooms.iter().map(|(_, room)| room).collect();
    if distinct.len() != rooms.len() {
        r.problem(format!(
            "inbound: {} threads share {} rooms",
            rooms.len(),
            distinct.len()
        ));
    }
    progress(format!(
        "email: the agent joins {} conversations and reads them",
        rooms.len()
    ));
    let histories: Vec<Result<(usize, Vec<String>), BoxError>> = stream::iter(&rooms)
        .map(|(t, room)| async move {
            rig.join(room).await?;
            Ok((*t, rig.customer_bodies(room).await?))
        })
        .buffer_unordered(SETUP_IN_FLIGHT)
        .collect()
        .await;
    let mut occurrences: HashMap<String, usize> = HashMap::new();
    let mut out_of_order = 0;
    let mut misplaced = 0;
    for history in histories {
        let (t, bodies) = history?;
        let own: Vec<String> = (0..mails_of(t))
            .filter(|j| accepted[t * PER_THREAD + j].is_some())
            .map(|j| mail_text(t, j))
            .collect();
        let own_set: HashSet<&String> = own.iter().collect();
        misplaced += bodies.iter().filter(|b| !own_set.contains(b)).count();
        for body in &bodies {
            *occurrences.entry(body.clone()).or_default() += 1;
        }
        let ours: Vec<&String> = bodies.iter().filter(|b| own_set.contains(b)).collect();
        out_of_order += usize::from(ours.iter().copied().ne(own.iter()));
    }
    let lost = expected
        .iter()
        .filter(|(_, b)| !occurrences.contains_key(b))
        .count();
    let doubled: usize = occurrences.values().map(|c| c.saturating_sub(1)).sum();
    r.row(
        "inbound check (agent's /messages)",
        format!(
            "{lost} lost, {doubled} doubled, {misplaced} in another thread's room, \
             {out_of_order} threads out of order or incomplete"
        ),
    );
    r.set("inbound_lost", lost);
    r.set("inbound_doubled", doubled);
    if lost + doubled + misplaced + out_of_order > 0 {
        r.problem(format!(
            "inbound: {lost} lost, {doubled} doubled, {misplaced} misplaced, \
             {out_of_order} threads out of order"
        ));
    }
    Ok(rooms)
}

// --- 2. outbound ---

/// An answer's event and when its send was acknowledged, or why it failed.
type Acked = Result<(String, Instant), String>;

async fn outbound(
    rig: &Rig,
    relay: &Relay,
    rooms: &[(usize, String)],
    n: usize,
    clients: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    if rooms.is_empty() {
        return Err("no conversation to answer in".into());
    }
    let per_room: Vec<usize> = (0..rooms.len())
        .map(|k| (k..n).step_by(rooms.len()).count())
        .collect();
    progress(format!(
        "email: outbound, {n} answers in {} conversations",
        rooms.len()
    ));
    let already = relay.sink.mails.lock().len();
    let started = Instant::now();
    // Per answer (room index, number): its event and when the send was acknowledged.
    let sends: Vec<((usize, usize), Acked)> = stream::iter(rooms.iter().enumerate())
        .map(|(k, (_, room))| {
            let count = per_room[k];
            async move {
                let mut sent = Vec::with_capacity(count);
                for i in 0..count {
                    let content = json!({"msgtype": "m.text", "body": answer_text(k, i)});
                    let answer = rig.send(room, &format!("a{k}.{i}"), &content).await;
                    sent.push((
                        (k, i),
                        answer
                            .map(|e| (e, Instant::now()))
                            .map_err(|e| e.to_string()),
                    ));
                }
                sent
            }
        })
        .buffer_unordered(clients)
        .flat_map(stream::iter)
        .collect()
        .await;
    let sent_in = started.elapsed();
    let mut acked: HashMap<(usize, usize), (String, Instant)> = HashMap::new();
    let mut failures: HashMap<String, usize> = HashMap::new();
    for (tag, result) in sends {
        match result {
            Ok(ok) => {
                acked.insert(tag, ok);
            }
            Err(e) => *failures.entry(e).or_default() += 1,
        }
    }
    r.row(
        "outbound agent sends acknowledged",
        format!(
            "{:.0}/s ({} in {:.2} s)",
            acked.len() as f64 / sent_in.as_secs_f64(),
            acked.len(),
            sent_in.as_secs_f64()
        ),
    );
    if !failures.is_empty() {
        r.problem(format!("outbound: sends failed {failures:?}"));
    }

    // Until the relay has them all and the outbox is empty.
    let mut last_progress = (0, Instant::now());
    let mut last_line = Instant::now();
    loop {
        let received = relay.sink.mails.lock().len() - already;
        if received >= acked.len() && rig.bridge.store().outbox_len() == 0 {
            break;
        }
        if received > last_progress.0 {
            last_progress = (received, Instant::now());
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            progress(format!(
                "email: the relay has {received} of {} answers after {:.0} s (outbox {})",
                acked.len(),
                started.elapsed().as_secs_f64(),
                rig.bridge.store().outbox_len()
            ));
        }
        if last_progress.1.elapsed() > STALL {
            r.problem(format!(
                "outbound: no progress for {} s with {received} of {} answers relayed",
                STALL.as_secs(),
                acked.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mails = relay.sink.mails.lock();
    let mails = &mails[already..];
    let mut message_ids: HashMap<&str, usize> = HashMap::new();
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); rooms.len()];
    let mut arrived: HashMap<(usize, usize), Instant> = HashMap::new();
    let (mut untagged, mut misaddressed, mut doubled_tags) = (0, 0, 0);
    for mail in mails {
        if let Some(id) = &mail.message_id {
            *message_ids.entry(id).or_default() += 1;
        }
        let Some((k, i)) = mail.tag.filter(|(k, _)| *k < rooms.len()) else {
            untagged += 1;
            continue;
        };
        misaddressed += usize::from(mail.to != customer(rooms[k].0));
        order[k].push(i);
        if arrived.insert((k, i), mail.at).is_some() {
            doubled_tags += 1;
        }
    }
    let doubled_ids: usize = message_ids.values().map(|c| c - 1).sum();
    let lost = acked
        .keys()
        .filter(|tag| !arrived.contains_key(tag))
        .count();
    let out_of_order = order
        .iter()
        .filter(|seq| seq.windows(2).any(|w| w[0] >= w[1]))
        .count();
    let last = mails.iter().map(|m| m.at).max().unwrap_or(started);
    let took = last.duration_since(started);
    let rate = arrived.len() as f64 / took.as_secs_f64().max(1e-3);
    r.row(
        "outbound answers to the relay (issue: >= 200/s)",
        format!(
            "{rate:.0} answers/s ({} in {:.2} s)",
            arrived.len(),
            took.as_secs_f64()
        ),
    );
    r.set("outbound_per_sec", rate);
    let mut delays: Vec<u64> = acked
        .iter()
        .filter_map(|(tag, (_, at))| Some(micros(arrived.get(tag)?.saturating_duration_since(*at))))
        .collect();
    let delays = Summary::from_samples(&mut delays);
    r.row("outbound send -> relay", delays.human());
    r.set("outbound_latency", delays.to_json());
    let not_sent = acked
        .values()
        .filter(|(event, _)| {
            rig.bridge
                .delivery(event)
                .is_none_or(|d| d.status != "sent")
        })
        .count();
    r.row(
        "outbound check (relay, deliveries)",
        format!(
            "{lost} lost, {} doubled (Message-ID {doubled_ids}, answer {doubled_tags}), \
             {out_of_order} conversations out of order, {misaddressed} to another address, \
             {untagged} other mails, {not_sent} deliveries not `sent`",
            doubled_ids.max(doubled_tags)
        ),
    );
    r.set("outbound_lost", lost);
    r.set("outbound_doubled", doubled_ids.max(doubled_tags));
    if lost + doubled_ids + doubled_tags + out_of_order + misaddressed + untagged + not_sent > 0 {
        r.problem(format!(
            "outbound: {lost} lost, {doubled_ids} Message-IDs and {doubled_tags} answers twice, \
             {out_of_order} conversations out of order, {misaddressed} misaddressed, \
             {untagged} unexpected mails, {not_sent} deliveries not sent"
        ));
    }
    Ok(())
}

// --- 3. attachments ---

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

fn digest(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A 25 MB attachment mailed in; the room it arrived in.
async fn attachment_in(rig: &Rig, watcher: &Watcher, r: &mut Report) -> Result<String, BoxError> {
    const FILE: &str = "grande.bin";
    const FROM: &str = "adjuntos@example.org";
    let data = random_bytes(ATTACHMENT_BYTES);
    let mail = lettre::Message::builder()
        .from(format!("Adjuntos <{FROM}>").parse()?)
        .to(DESK.parse()?)
        .subject("Un archivo grande")
        .message_id(Some("<adjunto.grande@example.org>".into()))
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain("Adjunto el archivo.".to_owned()))
                .singlepart(Attachment::new(FILE.into()).body(
                    data.clone(),
                    ContentType::parse("application/octet-stream")?,
                )),
        )?
        .formatted();
    progress(format!(
        "email: a {} attachment in (a {} mail)",
        mb(data.len()),
        mb(mail.len())
    ));
    let transport = rig.transport(1);
    let started = Instant::now();
    send_mail(&transport, FROM, &mail)
        .await
        .map_err(|e| format!("the 25 MB mail was refused: {e}"))?;
    let accepted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let seen = loop {
        if let Some(seen) = watcher.get(FILE) {
            break seen;
        }
        if Instant::now() > deadline {
            return Err("the 25 MB attachment did not arrive within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = seen.at.duration_since(started);
    r.row(
        "25 MB in: SMTP 250, m.file in the room",
        format!(
            "{:.2} s, {:.2} s (a {} mail)",
            accepted.as_secs_f64(),
            took.as_secs_f64(),
            mb(mail.len())
        ),
    );
    r.set("attachment_in_secs", took.as_secs_f64());
    let mxc = seen.url.ok_or("the m.file has no url")?;
    let (server, media) = mxc
        .trim_start_matches("mxc://")
        .split_once('/')
        .ok_or("bad mxc URI")?;
    let downloaded = rig
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{server}/{media}",
            rig.base
        ))
        .bearer_auth(&rig.token)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let same = downloaded.len() == data.len() && digest(&downloaded) == digest(&data);
    r.row(
        "25 MB in: downloaded, compared",
        format!(
            "{}, SHA-256 {}",
            mb(downloaded.len()),
            if same { "equal" } else { "DIFFERENT" }
        ),
    );
    if !same {
        r.problem(format!(
            "the inbound attachment differs: {} bytes sent, {} downloaded",
            data.len(),
            downloaded.len()
        ));
    }
    if seen.count != 1 {
        r.problem(format!(
            "the inbound attachment arrived {} times",
            seen.count
        ));
    }
    Ok(seen.room)
}

/// A 25 MB file uploaded by the agent and sent in `room`, until the relay has it.
async fn attachment_out(
    rig: &Rig,
    relay: &Relay,
    room: &str,
    r: &mut Report,
) -> Result<(), BoxError> {
    const FILE: &str = "respuesta.bin";
    let data = random_bytes(ATTACHMENT_BYTES);
    progress(format!("email: a {} attachment out", mb(data.len())));
    rig.join(room).await?;
    *relay.sink.big.lock() = None;
    let started = Instant::now();
    let upload: Value = rig
        .http
        .post(format!(
            "{}/_matrix/media/v3/upload?filename={FILE}",
            rig.base
        ))
        .bearer_auth(&rig.token)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let uploaded = started.elapsed();
    let content = json!({
        "msgtype": "m.file", "body": FILE, "filename": FILE, "url": upload["content_uri"],
        "info": {"mimetype": "application/octet-stream", "size": data.len()},
    });
    let sent_at = Instant::now();
    let event = rig.send(room, "big-out", &content).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let (at, mail) = loop {
        if let Some(big) = relay.sink.big.lock().take() {
            break big;
        }
        if Instant::now() > deadline {
            let delivery = rig.bridge.delivery(&event);
            return Err(format!(
                "the relay got no 25 MB mail within 300 s (delivery {delivery:?})"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = at.duration_since(sent_at);
    r.row(
        "25 MB out: upload, m.file sent -> relay",
        format!(
            "{:.2} s, {:.2} s (a {} mail)",
            uploaded.as_secs_f64(),
            took.as_secs_f64(),
            mb(mail.len())
        ),
    );
    r.set("attachment_out_secs", took.as_secs_f64());
    r.set("attachment_out_upload_secs", uploaded.as_secs_f64());
    let decoded = attachment_of(&mail, FILE);
    let same = decoded
        .as_ref()
        .is_ok_and(|d| d.len() == data.len() && digest(d) == digest(&data));
    r.row(
        "25 MB out: decoded from the relayed mail, compared",
        match &decoded {
            Ok(d) => format!(
                "{}, SHA-256 {}",
                mb(d.len()),
                if same { "equal" } else { "DIFFERENT" }
            ),
            Err(e) => e.clone(),
        },
    );
    if !same {
        r.problem(format!(
            "the outbound attachment differs or is missing: {}",
            decoded.map_or_else(|e| e, |d| format!("{} bytes", d.len()))
        ));
    }
    // The delivery is recorded just after the relay's answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = rig.bridge.delivery(&event).map(|d| d.status);
        if status.as_deref() == Some("sent") {
            break;
        }
        if Instant::now() > deadline {
            r.problem(format!(
                "the 25 MB answer's delivery is {status:?}, not sent"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The bytes of the base64 part named `filename` in a raw mail.
fn attachment_of(mail: &[u8], filename: &str) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(mail).map_err(|_| "the relayed mail is not ASCII")?;
    let name = text
        .find(&format!("filename=\"{filename}\""))
        .ok_or_else(|| format!("no part named {filename} in the relayed mail"))?;
    let part_start = text[..name].rfind("\r\n--").unwrap_or(0);
    let body_start = name
        + text[name..]
            .find("\r\n\r\n")
            .ok_or("the attachment's part has no body")?
        + 4;
    let headers = text[part_start..body_start].to_ascii_lowercase();
    if !headers.contains("content-transfer-encoding: base64") {
        return Err(format!("the attachment's part is not base64: {headers}"));
    }
    let body_end = body_start
        + text[body_start..]
            .find("\r\n--")
            .unwrap_or(text.len() - body_start);
    let compact: Vec<u8> = text[body_start..body_end]
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("the attachment's base64: {e}"))
}

/// User and system CPU time of this whole process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_names_its_thread_and_quotes() {
        let mail = String::from_utf8(thread_mail(7, 2)).unwrap();
        assert!(mail.contains("Message-ID: <t7.m2@example.org>\r\n"));
        assert!(mail.contains("In-Reply-To: <t7.m1@example.org>\r\n"));
        assert!(mail.contains("References: <t7.m0@example.org> <t7.m1@example.org>\r\n"));
        assert!(mail.contains("\r\n\r\nHola, mensaje 2 del hilo 7.\r\n\r\nOn "));
        assert!(
            !String::from_utf8(thread_mail(7, 0))
                .unwrap()
                .contains("In-Reply-To")
        );
    }

    #[test]
    fn relayed_answers_and_attachments_are_read_back() {
        let mail = format!(
            "Message-ID: <x@desk>\r\nSubject: Re\r\n\r\n--B\r\n\
             Content-Type: text/plain\r\n\r\n{}\r\n--B\r\n\
             Content-Disposition: attachment; filename=\"f.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAw==\r\n--B--\r\n",
            answer_text(12, 345)
        );
        assert_eq!(header(mail.as_bytes(), "message-id").unwrap(), "<x@desk>");
        assert_eq!(answer_tag(mail.as_bytes()), Some((12, 345)));
        assert_eq!(
            attachment_of(mail.as_bytes(), "f.bin").unwrap(),
            [0, 1, 2, 3]
        );
        assert!(attachment_of(mail.as_bytes(), "g.bin").is_err());
    }
}
