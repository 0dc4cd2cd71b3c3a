//! `federation`: issue #23's figures between two Charla servers in this process, federating
//! over TLS on loopback (a self-signed certificate made here, `verify_certificates = false`;
//! `--homeserver` is ignored):
//!
//! 1. **Join a big room**: a room on A with 1,000 members and 10,000 state events; a user of B
//!    joins it through A (`make_join`, `send_join` with the whole state and auth chain checked
//!    and taken in). Figure: under 5 s.
//! 2. **Relay**: `--messages` messages (default 10,000) sent on A at 1,000 a second by 8
//!    members; each one's delay from its acknowledged send on A to its arrival in B's stream.
//!    Figures: ≥ 1,000 messages a second relayed, p99 delivery under 50 ms.
//! 3. **Catch-up**: B stops; `--messages` messages are sent on A; B starts again (same port and
//!    data) and greets A; the time until B has them all. Figure: under 10 s for 10,000.
//!
//! Users and the big room's state are made in process (no password hashing, no HTTP), since
//! what is measured is federation, not registration.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde_json::json;

use crate::{
    bench::{
        BenchArgs,
        client::BoxError,
        report::Report,
        setup::progress,
        stats::{Summary, micros},
    },
    events::EventTemplate,
    rooms::{CreateRoom, MemberProfile, Txn},
    server::RunningServer,
    users::NewAccount,
};

const MEMBERS: usize = 1_000;
const STATE_EVENTS: usize = 10_000;
const RELAY_RATE: u64 = 1_000;
const SENDERS: usize = 8;
/// Appends in flight while the big room is filled.
const FILL_IN_FLIGHT: usize = 64;

pub async fn run(args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.messages.max(1);
    let dir = std::env::temp_dir().join(format!(
        "charla-bench-federation-{:08x}",
        rand::random::<u32>()
    ));
    let mut r = Report::new(
        "federation",
        format!(
            "two local servers over TLS: a {MEMBERS}-member room of {STATE_EVENTS} state events, {n} messages relayed and caught up"
        ),
    );
    let outcome = measure(&dir, n, &mut r).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    Ok(r)
}

struct Pair {
    a: RunningServer,
    /// `None` while B is down.
    b: Option<RunningServer>,
    a_name: ruma::OwnedServerName,
    b_port: u16,
}

async fn measure(dir: &Path, n: usize, r: &mut Report) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
    let (a_port, b_port) = (free_port()?, free_port()?);
    let a = start(dir, "a", a_port).await?;
    let b = start(dir, "b", b_port).await?;
    let a_name = a.services.config.server_name.clone();
    let mut pair = Pair {
        a,
        b: Some(b),
        a_name,
        b_port,
    };
    let result = match big_join(&pair, r).await {
        Ok((room, senders)) => relay_and_catch_up(dir, &mut pair, &room, &senders, n, r).await,
        Err(e) => Err(e),
    };
    pair.a.stop().await;
    if let Some(b) = pair.b {
        b.stop().await;
    }
    result
}

fn b(p: &Pair) -> Result<&RunningServer, BoxError> {
    p.b.as_ref().ok_or_else(|| "B is down".into())
}

/// 1: the big room on A, and B's user joining it.
async fn big_join(p: &Pair, r: &mut Report) -> Result<(OwnedRoomId, Vec<OwnedUserId>), BoxError> {
    let s = &p.a.services;
    progress(format!(
        "federation: a room of {MEMBERS} members and {STATE_EVENTS} state events on A"
    ));
    let creator = local_user(&p.a, "creator").await?;
    let room_id = s
        .rooms
        .create_room(
            &creator,
            CreateRoom {
                preset: Some(ruma::api::client::room::create_room::v3::RoomPreset::PublicChat),
                ..Default::default()
            },
        )
        .await?;
    let mut members = Vec::with_capacity(MEMBERS);
    for i in 1..MEMBERS {
        members.push(local_user(&p.a, &format!("member{i}")).await?);
    }
    let room = s.rooms.room(&room_id)?;
    let joins = stream::iter(members.iter().cloned().map(|user| {
        let (rooms, room_id) = (&s.rooms, room_id.clone());
        async move {
            rooms
                .join(&room_id, &user, MemberProfile::default(), None)
                .await
        }
    }))
    .buffer_unordered(FILL_IN_FLIGHT)
    .collect::<Vec<_>>()
    .await;
    joins.into_iter().collect::<Result<Vec<_>, _>>()?;
    let state_now = s.rooms.current_state_keys(room.short)?.len();
    let extra = STATE_EVENTS.saturating_sub(state_now);
    let fills = stream::iter((0..extra).map(|i| {
        let (rooms, room, creator) = (&s.rooms, room.clone(), creator.clone());
        async move {
            let template = EventTemplate::state_json(
                "io.charla.bench.state",
                format!("k{i}"),
                &json!({ "n": i }),
            );
            rooms.append(&room, &creator, template, None::<Txn>).await
        }
    }))
    .buffer_unordered(FILL_IN_FLIGHT)
    .collect::<Vec<_>>()
    .await;
    fills.into_iter().collect::<Result<Vec<_>, _>>()?;
    let state = s.rooms.current_state_keys(room.short)?.len();
    r.row(
        "big room on A",
        format!("{MEMBERS} members, {state} state events"),
    );

    progress("federation: B's user joins it through A");
    let b = b(p)?;
    let joiner = local_user(b, "joiner").await?;
    let started = Instant::now();
    b.services
        .rooms
        .join_via(
            &room_id,
            &joiner,
            MemberProfile::default(),
            None,
            std::slice::from_ref(&p.a_name),
        )
        .await?;
    let took = started.elapsed();
    let on_b = b.services.rooms.room(&room_id)?;
    let state_b = b.services.rooms.current_state_keys(on_b.short)?.len();
    r.row(
        "join through A (state and auth chain checked, taken in)",
        format!(
            "{:.2} s, {state_b} state events (figure: < 5 s)",
            took.as_secs_f64()
        ),
    );
    r.set("join_ms", took.as_millis() as u64);
    if state_b != state + 1 {
        r.problem(format!(
            "B has {state_b} state events of the room, A {}",
            state + 1
        ));
    }
    if took > Duration::from_secs(5) {
        r.problem(format!("the join took {took:?} (figure: < 5 s)"));
    }
    Ok((room_id, members.into_iter().take(SENDERS).collect()))
}

/// 2 and 3: relay at 1,000 a second, then catch up after B's restart.
async fn relay_and_catch_up(
    dir: &Path,
    p: &mut Pair,
    room_id: &RoomId,
    senders: &[OwnedUserId],
    n: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    progress(format!(
        "federation: relaying {n} messages at {RELAY_RATE}/s"
    ));
    let arrivals = Arrivals::watch(b(p)?, room_id);
    let acked = send(&p.a, room_id, senders, "r", n, Some(RELAY_RATE)).await?;
    let arrived = arrivals.wait_for("r", n, Duration::from_secs(60)).await;
    arrivals.stop();
    let mut delays: Vec<u64> = acked
        .iter()
        .filter_map(|(i, sent)| Some(micros(arrived.get(i)?.saturating_duration_since(*sent))))
        .collect();
    let summary = Summary::from_samples(&mut delays);
    if let (Some(first), Some(last)) = (acked.values().min(), arrived.values().max()) {
        let rate = arrived.len() as f64 / last.duration_since(*first).as_secs_f64().max(1e-3);
        r.row(
            "relay rate",
            format!("{rate:.0} messages/s in B's stream (figure: >= 1,000)"),
        );
        r.set("relay_per_second", rate as u64);
        if rate < 1_000.0 {
            r.problem(format!("relayed {rate:.0}/s (figure: >= 1,000)"));
        }
    }
    r.row(
        "relay delivery (acknowledged on A -> in B's stream)",
        summary.human(),
    );
    r.set("relay_p99_us", summary.p99_us);
    if arrived.len() < n {
        r.problem(format!("{} of {n} relayed messages arrived", arrived.len()));
    }
    if summary.p99_us > 50_000 {
        r.problem(format!(
            "relay p99 {} ms (figure: < 50 ms)",
            summary.p99_us / 1000
        ));
    }

    progress(format!(
        "federation: B stops; {n} messages on A; B comes back"
    ));
    if let Some(b) = p.b.take() {
        b.stop().await;
    }
    send(&p.a, room_id, senders, "c", n, None).await?;
    // A has failed to reach B meanwhile and waits out a backoff; B greets it when it starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    p.b = Some(start(dir, "b", p.b_port).await?);
    let arrivals = Arrivals::watch(b(p)?, room_id);
    let arrived = arrivals.wait_for("c", n, Duration::from_secs(120)).await;
    arrivals.stop();
    let took = arrived
        .values()
        .max()
        .map_or(Duration::ZERO, |last| last.duration_since(started));
    r.row(
        "catch-up after B's restart",
        format!(
            "{} of {n} in {:.2} s from B's start (figure: 10,000 in < 10 s)",
            arrived.len(),
            took.as_secs_f64()
        ),
    );
    r.set("catch_up_ms", took.as_millis() as u64);
    if arrived.len() < n {
        r.problem(format!(
            "{} of {n} queued messages caught up",
            arrived.len()
        ));
    }
    if n >= 10_000 && took > Duration::from_secs(10) {
        r.problem(format!("catch-up took {took:?} (figure: < 10 s)"));
    }
    Ok(())
}

/// Sends `n` messages `{prefix}{i}` on `server` from `senders` in turn, paced at `rate` a
/// second (or as fast as they go); when each was acknowledged.
async fn send(
    server: &RunningServer,
    room_id: &RoomId,
    senders: &[OwnedUserId],
    prefix: &str,
    n: usize,
    rate: Option<u64>,
) -> Result<HashMap<usize, Instant>, BoxError> {
    let room = server.services.rooms.room(room_id)?;
    let start = tokio::time::Instant::now();
    let acked = stream::iter((0..n).map(|i| {
        let (rooms, room) = (&server.services.rooms, room.clone());
        let sender = senders[i % senders.len()].clone();
        async move {
            if let Some(rate) = rate {
                tokio::time::sleep_until(
                    start + Duration::from_micros(i as u64 * 1_000_000 / rate),
                )
                .await;
            }
            let content = json!({ "msgtype": "m.text", "body": format!("{prefix}{i}") });
            let template = EventTemplate::message(
                "m.room.message",
                serde_json::value::to_raw_value(&content).expect("JSON"),
            );
            rooms.append(&room, &sender, template, None::<Txn>).await?;
            Ok::<_, crate::error::Error>((i, Instant::now()))
        }
    }))
    .buffer_unordered(FILL_IN_FLIGHT)
    .collect::<Vec<_>>()
    .await;
    Ok(acked.into_iter().collect::<Result<HashMap<_, _>, _>>()?)
}

/// When each message of a room arrives in a server's stream, read as a consumer would.
struct Arrivals {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Arrivals {
    fn watch(server: &RunningServer, room_id: &RoomId) -> Arrivals {
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (services, room_id) = (server.services.clone(), room_id.to_owned());
        let (seen_w, stop_w) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut heads = services.stream.watch();
            let mut after = 0;
            while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
                let head = services.stream.head();
                let Ok(events) = services.rooms.events_in_range(after, head, 4096) else {
                    return;
                };
                let now = Instant::now();
                for (pos, event) in &events {
                    after = *pos;
                    if event.pdu.room_id != room_id {
                        continue;
                    }
                    if let Ok(c) = event.pdu.content_as::<serde_json::Value>()
                        && let Some(body) = c["body"].as_str()
                    {
                        seen_w.lock().entry(body.to_owned()).or_insert(now);
                    }
                }
                if events.is_empty() {
                    after = after.max(head);
                    let _ = tokio::time::timeout(Duration::from_millis(50), heads.changed()).await;
                }
            }
        });
        Arrivals { seen, stop }
    }

    /// Waits until `{prefix}0..n` all arrived, or `limit`; arrival times by index.
    async fn wait_for(&self, prefix: &str, n: usize, limit: Duration) -> HashMap<usize, Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let found: HashMap<usize, Instant> = self
                .seen
                .lock()
                .iter()
                .filter_map(|(body, at)| Some((body.strip_prefix(prefix)?.parse().ok()?, *at)))
                .collect();
            if found.len() >= n || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn local_user(server: &RunningServer, name: &str) -> Result<OwnedUserId, BoxError> {
    Ok(server
        .services
        .users
        .create(NewAccount {
            localpart: name,
            password: None,
            admin: false,
            displayname: None,
        })
        .await?)
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A federating Charla named `127.0.0.1:<port>` with its data in `dir/<name>`, without send
/// limits.
async fn start(dir: &Path, name: &str, port: u16) -> Result<RunningServer, BoxError> {
    let data: PathBuf = dir.join(name);
    let config = crate::config::Config::from_toml(&format!(
        "server_name = \"127.0.0.1:{port}\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\npath = {data:?}\n\
         [limits]\nsend_per_second = 1000000.0\nsend_burst = 1000000\n\
         [logging]\nfilter = \"warn\"\n\
         [federation]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
         tls_certificate = {:?}\ntls_private_key = {:?}\n\
         verify_certificates = false\nip_range_blocklist = []\n\
         per_origin_per_second = 100000.0\nper_origin_burst = 100000\n",
        dir.join("cert.pem"),
        dir.join("key.pem"),
    ))?;
    Ok(crate::server::start(config).await?)
}
