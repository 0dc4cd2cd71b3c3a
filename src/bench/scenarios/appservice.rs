//! `appservice`: how fast events reach an application service, live and after an outage.
//!
//! The tool plays the appservice itself: it reads the registration file the homeserver loaded
//! (`--registration`), listens on the registration's `url`, checks the `hs_token` of every
//! transaction and records when each event arrives. Its handler does no work beyond parsing, so
//! the figures are the homeserver's.
//!
//! 1. Lag: `--clients` users each create a room and invite the appservice's own user, which
//!    joins with the `as_token`; then every client sends in a closed loop for `--duration`
//!    seconds (the `send` scenario's load). Lag is measured from each send's 200 to the
//!    transaction that carries the event.
//! 2. Backlog: the appservice answers 503 while the clients send `--backlog` events; then it
//!    comes back and pings the homeserver (`POST /_matrix/client/v1/appservice/{id}/ping`, as
//!    bridges do on start-up). Drain rate is the backlog over the time from the ping to the
//!    last event received. Both phases check that every event arrives exactly once and, per
//!    room, in order.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use appservice::Registration;
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{post, put},
};
use serde_json::{Value, json};

use crate::bench::{
    BenchArgs,
    client::{BoxError, retry_429},
    report::Report,
    session::{Preset, Session},
    setup::{Ctx, SETUP_CONCURRENCY, bounded, progress},
    stats::{Summary, micros},
};

/// What the fake appservice saw.
#[derive(Default)]
struct Seen {
    /// Event id → (arrival time, arrival index).
    events: HashMap<String, (Instant, u64)>,
    duplicates: u64,
}

struct Listener {
    hs_token: String,
    /// While set, every transaction gets a 503, as from an appservice that is down.
    down: AtomicBool,
    seen: Mutex<Seen>,
    arrivals: AtomicU64,
    transactions: AtomicU64,
    refused: AtomicU64,
}

pub async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let path = args
        .registration
        .as_ref()
        .ok_or("the appservice scenario needs --registration <the file the server loads>")?;
    let reg = Registration::from_file(path)?;
    let addr = listen_addr(&reg)?;
    let listener = Arc::new(Listener {
        hs_token: reg.hs_token.clone(),
        down: AtomicBool::new(false),
        seen: Mutex::default(),
        arrivals: AtomicU64::new(0),
        transactions: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let server = serve_appservice(addr, listener.clone())?;

    let n = args.clients.max(1);
    progress(format!("appservice: registering {n} users"));
    let users = ctx.register_many("as", n).await?;
    let server_name = users[0]
        .user_id
        .split_once(':')
        .map(|(_, s)| s.to_owned())
        .ok_or("unexpected user id")?;
    let bot_id = format!("@{}:{server_name}", reg.sender_localpart);
    let bot = users[0].same_server(&bot_id, &reg.as_token);
    progress(format!(
        "appservice: creating {n} rooms with {bot_id} in each"
    ));
    let rooms = bounded(n, SETUP_CONCURRENCY, |i| {
        let (u, bot, bot_id) = (&users[i], &bot, &bot_id);
        async move {
            let room = retry_429(|| u.create_room(Preset::Private, None)).await?;
            retry_429(|| u.invite(&room, bot_id)).await?;
            retry_429(|| bot.join(&room)).await?;
            Ok(room)
        }
    })
    .await?;
    // Let the setup's own events drain before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut r = Report::new(
        "appservice",
        format!("{n} clients, one room each, {}s live", args.duration.max(1)),
    );
    lag_phase(&listener, &users, &rooms, args, &mut r).await?;
    backlog_phase(&listener, &users, &rooms, &bot, &reg, args, &mut r).await?;
    let _ = server.send(());
    Ok(r)
}

/// Phase 1: closed-loop sends, lag from each 200 to the event's arrival.
async fn lag_phase(
    listener: &Arc<Listener>,
    users: &[Session],
    rooms: &[String],
    args: &BenchArgs,
    r: &mut Report,
) -> Result<(), BoxError> {
    let duration = Duration::from_secs(args.duration.max(1));
    progress(format!("appservice: sending for {}s", duration.as_secs()));
    let start = Instant::now();
    let sent = send_all(users, rooms, "live", Until::Deadline(start + duration)).await?;
    let elapsed = start.elapsed();
    let missing = wait_for(listener, &sent, Duration::from_secs(30)).await;
    let seen = listener.seen.lock().expect("poisoned");
    let mut lags: Vec<u64> = sent
        .iter()
        .flatten()
        .filter_map(|s| {
            let (at, _) = seen.events.get(&s.event_id)?;
            Some(micros(at.saturating_duration_since(s.acked)))
        })
        .collect();
    let out_of_order = out_of_order(&seen, &sent);
    let total: usize = sent.iter().map(Vec::len).sum();
    let rate = total as f64 / elapsed.as_secs_f64();
    let lag = Summary::from_samples(&mut lags);
    r.row(
        "live: sent",
        format!("{total} in {:.2}s ({rate:.0}/s)", elapsed.as_secs_f64()),
    );
    r.row("live: lag from 200", lag.human());
    r.row(
        "live: delivery",
        format!(
            "missing {missing}, duplicates {}, out of order {out_of_order}",
            seen.duplicates
        ),
    );
    r.set("live_sent", total);
    r.set("live_sends_per_sec", rate);
    r.set("live_lag", lag.to_json());
    check(r, "live", missing, seen.duplicates, out_of_order);
    Ok(())
}

/// Phase 2: queue a backlog while the appservice is down, then time its drain.
async fn backlog_phase(
    listener: &Arc<Listener>,
    users: &[Session],
    rooms: &[String],
    bot: &Session,
    reg: &Registration,
    args: &BenchArgs,
    r: &mut Report,
) -> Result<(), BoxError> {
    listener.down.store(true, Ordering::SeqCst);
    progress(format!(
        "appservice: down; queueing {} events",
        args.backlog
    ));
    let queue_start = Instant::now();
    let sent = send_all(users, rooms, "backlog", Until::Total(args.backlog)).await?;
    let queued_in = queue_start.elapsed();
    listener.down.store(false, Ordering::SeqCst);
    progress("appservice: up again; pinging and draining");
    let up = Instant::now();
    let ping_url = bot.url_v1(&["appservice", &reg.id, "ping"]);
    if let Err(e) = bot
        .post_json(ping_url, &json!({}), Duration::from_secs(30))
        .await
    {
        r.problem(format!("ping failed: {e}"));
    }
    let missing = wait_for(listener, &sent, Duration::from_secs(120)).await;
    let seen = listener.seen.lock().expect("poisoned");
    let last = sent
        .iter()
        .flatten()
        .filter_map(|s| seen.events.get(&s.event_id).map(|(at, _)| *at))
        .max()
        .unwrap_or(up);
    let drained = last.saturating_duration_since(up);
    let total: usize = sent.iter().map(Vec::len).sum();
    let rate = (total as u64 - missing as u64) as f64 / drained.as_secs_f64().max(1e-6);
    let out_of_order = out_of_order(&seen, &sent);
    r.row(
        "backlog: queued",
        format!(
            "{total} events in {:.1}s while the appservice answered 503 ({} refused transactions)",
            queued_in.as_secs_f64(),
            listener.refused.load(Ordering::SeqCst)
        ),
    );
    r.row(
        "backlog: drained",
        format!(
            "in {:.2}s after the ping: {rate:.0} events/s",
            drained.as_secs_f64()
        ),
    );
    r.row(
        "backlog: delivery",
        format!(
            "missing {missing}, duplicates {}, out of order {out_of_order}",
            seen.duplicates
        ),
    );
    r.row(
        "transactions",
        format!("{} accepted", listener.transactions.load(Ordering::SeqCst)),
    );
    r.set("backlog_events", total);
    r.set("backlog_drain_s", drained.as_secs_f64());
    r.set("backlog_events_per_sec", rate);
    check(r, "backlog", missing, seen.duplicates, out_of_order);
    Ok(())
}

/// One acknowledged send.
struct Sent {
    event_id: String,
    acked: Instant,
}

enum Until {
    Deadline(Instant),
    /// Stop once this many sends were started, across all clients.
    Total(usize),
}

/// Every client sends into its room in a closed loop; per client, its sends in order.
async fn send_all(
    users: &[Session],
    rooms: &[String],
    tag: &'static str,
    until: Until,
) -> Result<Vec<Vec<Sent>>, BoxError> {
    let started = Arc::new(AtomicU64::new(0));
    let until = Arc::new(until);
    let tasks: Vec<_> = users
        .iter()
        .cloned()
        .zip(rooms.iter().cloned())
        .enumerate()
        .map(|(i, (user, room))| {
            let (started, until) = (started.clone(), until.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let seq = match *until {
                        Until::Deadline(d) if Instant::now() >= d => break,
                        Until::Deadline(_) => out.len(),
                        Until::Total(total) => {
                            if started.fetch_add(1, Ordering::SeqCst) >= total as u64 {
                                break;
                            }
                            out.len()
                        }
                    };
                    let txn = format!("{tag}.{i}.{seq}");
                    let event_id =
                        retry_429(|| user.send_text(&room, &txn, "appservice bench")).await?;
                    out.push(Sent {
                        event_id,
                        acked: Instant::now(),
                    });
                }
                Ok::<_, crate::bench::client::ApiError>(out)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        all.push(t.await??);
    }
    Ok(all)
}

/// Waits until every sent event arrived or `limit` passed; how many are missing.
async fn wait_for(listener: &Listener, sent: &[Vec<Sent>], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let missing = {
            let seen = listener.seen.lock().expect("poisoned");
            sent.iter()
                .flatten()
                .filter(|s| !seen.events.contains_key(&s.event_id))
                .count()
        };
        if missing == 0 || Instant::now() >= deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events of one room that arrived in another order than they were sent.
fn out_of_order(seen: &Seen, sent: &[Vec<Sent>]) -> usize {
    sent.iter()
        .map(|room| {
            let order: Vec<u64> = room
                .iter()
                .filter_map(|s| seen.events.get(&s.event_id).map(|(_, i)| *i))
                .collect();
            order.windows(2).filter(|w| w[0] > w[1]).count()
        })
        .sum()
}

fn check(r: &mut Report, phase: &str, missing: usize, duplicates: u64, out_of_order: usize) {
    if missing > 0 {
        r.problem(format!(
            "{phase}: {missing} events never reached the appservice"
        ));
    }
    if duplicates > 0 {
        r.problem(format!("{phase}: {duplicates} events arrived twice"));
    }
    if out_of_order > 0 {
        r.problem(format!(
            "{phase}: {out_of_order} events arrived out of order"
        ));
    }
}

/// Serves the appservice side on its own thread and runtime: a real appservice is another
/// process, and sharing the tool's busy runtime would add the tool's own queueing to the lag.
/// The appservice stops when the returned sender is used or dropped.
fn serve_appservice(
    addr: SocketAddr,
    listener: Arc<Listener>,
) -> Result<tokio::sync::oneshot::Sender<()>, BoxError> {
    let tcp = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on {addr} (the registration's url): {e}"))?;
    tcp.set_nonblocking(true)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("bench-appservice".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the appservice");
            rt.block_on(async move {
                let tcp = tokio::net::TcpListener::from_std(tcp).expect("a tokio listener");
                let app = Router::new()
                    .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
                    .route("/_matrix/app/v1/ping", post(|| async { Json(json!({})) }))
                    .with_state(listener);
                let _ = axum::serve(tcp, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        })?;
    Ok(stop)
}

/// What the tool reads of a transaction: the event ids, borrowed, the rest skipped. Parsing
/// whole events into `Value`s cost the tool more CPU than the pusher it measures, on the same
/// two cores.
#[derive(serde::Deserialize)]
struct TxnIds<'a> {
    #[serde(borrow, default)]
    events: Vec<EventIdOnly<'a>>,
}

#[derive(serde::Deserialize)]
struct EventIdOnly<'a> {
    #[serde(borrow)]
    event_id: Option<std::borrow::Cow<'a, str>>,
}

/// `PUT /_matrix/app/v1/transactions/{txnId}` as an appservice answers it.
async fn transaction(
    State(l): State<Arc<Listener>>,
    Path(_txn): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let authorized = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(l.hs_token.as_str());
    if !authorized {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"errcode": "M_FORBIDDEN", "error": "bad hs_token"})),
        );
    }
    if l.down.load(Ordering::SeqCst) {
        l.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
    }
    let now = Instant::now();
    let Ok(txn) = serde_json::from_slice::<TxnIds>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"errcode": "M_NOT_JSON", "error": "bad body"})),
        );
    };
    l.transactions.fetch_add(1, Ordering::SeqCst);
    let mut seen = l.seen.lock().expect("poisoned");
    for id in txn.events.iter().filter_map(|e| e.event_id.as_deref()) {
        let index = l.arrivals.fetch_add(1, Ordering::SeqCst);
        if seen.events.insert(id.to_owned(), (now, index)).is_some() {
            seen.duplicates += 1;
        }
    }
    (StatusCode::OK, Json(json!({})))
}

/// The loopback address of the registration's `url`.
fn listen_addr(reg: &Registration) -> Result<SocketAddr, BoxError> {
    let url = reg
        .url
        .as_deref()
        .ok_or("the registration has no url: the homeserver would push nothing")?;
    let url = reqwest::Url::parse(url)?;
    let host = url.host_str().ok_or("the registration's url has no host")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    Ok(format!("{host}:{port}").parse()?)
}
