//! `sync-latency`: how fast a message reaches many idle long-polling clients.
//!
//! M users keep a `/sync?since=…&timeout=30000` long-poll open, as real idle
//! clients do; R of them (`--receivers`, all with 0) are in the sender's room. A sender then sends K messages
//! one at a time, waiting until every client has seen message i (or 5 s pass)
//! before sending i+1, so each measurement sees an idle server with M parked
//! requests: the cost being measured is waking M long-polls and serialising M
//! sync responses, which is what dominates a chat server's fan-out.
//!
//! Two delays are recorded per (message, client) pair:
//! * from ack: sender got its 200 → client's /sync response arrived. This is
//!   pure fan-out latency; it can be ~0 when the server wakes syncs before
//!   answering the send.
//! * from issue: send request started → /sync response arrived; what a human
//!   watching both screens would see.

use crate::bench::BenchArgs;
use crate::bench::client::{BoxError, retry_429};
use crate::bench::report::Report;
use crate::bench::session::{Preset, Session, SyncParams};
use crate::bench::setup::{Ctx, SETUP_CONCURRENCY, bounded, progress};
use crate::bench::stats::{Summary, micros};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Inline filter: one timeline event per room keeps each response small, so
/// the measurement is dominated by wake-up, not by payload size.
const FILTER: &str = r#"{"room":{"timeline":{"limit":1}}}"#;
/// Server-side long-poll timeout in ms.
const LONG_POLL_MS: u64 = 30_000;
/// How long to wait for all clients to see a message before giving up on it.
const DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// A /sync response containing a message event reached a client.
struct Arrival {
    client: usize,
    event_id: String,
    at: Instant,
}

pub async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let m = args.sync_clients.max(1);
    let receivers = match args.receivers {
        0 => m,
        r => r.min(m),
    };
    let k = args.samples.max(1);
    let sender = ctx.register("sl-sender", 0).await?;
    let room = retry_429(|| sender.create_room(Preset::Public, Some("sync latency"))).await?;

    progress(format!(
        "sync-latency: registering {m} idle users and joining them"
    ));
    let idle = bounded(m, SETUP_CONCURRENCY, |i| {
        let room = &room;
        async move {
            let s = ctx.register("sl-idle", i).await?;
            if i < receivers {
                retry_429(|| s.join(room)).await?;
            }
            Ok(s)
        }
    })
    .await?;

    progress("sync-latency: initial syncs");
    let sinces = bounded(m, SETUP_CONCURRENCY, |i| {
        let s = &idle[i];
        async move {
            let params = SyncParams {
                filter: Some(FILTER),
                ..Default::default()
            };
            let (resp, _) = retry_429(|| s.sync(params)).await?;
            Ok(resp.next_batch)
        }
    })
    .await?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let poll_errors = Arc::new(AtomicU64::new(0));
    let pollers: Vec<_> = idle
        .into_iter()
        .zip(sinces)
        .enumerate()
        .map(|(i, (s, since))| {
            let (tx, room, errs) = (tx.clone(), room.clone(), poll_errors.clone());
            tokio::spawn(poll_loop(i, s, room, since, tx, errs))
        })
        .collect();
    drop(tx);

    let mut meas = Measurement::new(receivers);
    // Message 0 is a warm-up: it proves every long-poll is parked and
    // connected before anything is measured.
    progress(format!(
        "sync-latency: {m} clients long-polling; sending {k} messages"
    ));
    for i in 0..=k {
        let txn = format!("{}.sl.{i}", ctx.prefix);
        let issued = Instant::now();
        let sent = sender
            .send_text(&room, &txn, &format!("latency probe {i}"))
            .await;
        let acked = Instant::now();
        let event_id = match sent {
            Ok(id) => id,
            Err(e) => {
                if i > 0 {
                    meas.send_errors += 1;
                }
                meas.first_error.get_or_insert_with(|| e.to_string());
                continue;
            }
        };
        if i > 0 {
            meas.send_latency_us.push(micros(acked - issued));
        }
        meas.collect(&mut rx, &event_id, issued, acked, i > 0).await;
    }
    for p in &pollers {
        p.abort();
    }

    let mut r = Report::new(
        "sync-latency",
        format!("{m} long-polling clients, {receivers} in the room, {k} messages"),
    );
    let from_ack = Summary::from_samples(&mut meas.from_ack_us);
    let from_issue = Summary::from_samples(&mut meas.from_issue_us);
    let send_lat = Summary::from_samples(&mut meas.send_latency_us);
    let expected = (k as u64 - meas.send_errors.min(k as u64)) * receivers as u64;
    r.row("delay from ack", from_ack.human());
    r.row("delay from issue", from_issue.human());
    r.row("sender send latency", send_lat.human());
    r.row(
        "deliveries",
        format!("{} of {expected}, missed {}", from_ack.count, meas.missed),
    );
    r.row(
        "errors",
        format!(
            "send {}, sync {}",
            meas.send_errors,
            poll_errors.load(Ordering::Relaxed)
        ),
    );
    if let Some(e) = &meas.first_error {
        r.row("first error", e.clone());
    }
    r.set("sync_clients", m);
    r.set("receivers", receivers);
    r.set("samples", k);
    r.set("delay_from_ack", from_ack.to_json());
    r.set("delay_from_issue", from_issue.to_json());
    r.set("send_latency", send_lat.to_json());
    r.set("deliveries", from_ack.count);
    r.set("expected_deliveries", expected);
    r.set("missed", meas.missed);
    r.set("send_errors", meas.send_errors);
    r.set("sync_errors", poll_errors.load(Ordering::Relaxed));
    if meas.send_errors as usize >= k {
        r.problem("every measured send failed");
    }
    Ok(r)
}

/// One idle client: long-poll forever (until aborted), reporting every
/// message event of `room` the moment its /sync response arrives.
async fn poll_loop(
    client: usize,
    s: Session,
    room: String,
    mut since: String,
    tx: mpsc::UnboundedSender<Arrival>,
    errors: Arc<AtomicU64>,
) {
    loop {
        let params = SyncParams {
            since: Some(&since),
            timeout_ms: Some(LONG_POLL_MS),
            filter: Some(FILTER),
        };
        match s.sync(params).await {
            Ok((resp, _)) => {
                let at = Instant::now();
                if let Some(joined) = resp.rooms.join.get(&room) {
                    for ev in &joined.timeline.events {
                        if let (Some(id), "m.room.message") = (&ev.event_id, ev.kind.as_str()) {
                            let arrival = Arrival {
                                client,
                                event_id: id.clone(),
                                at,
                            };
                            if tx.send(arrival).is_err() {
                                return;
                            }
                        }
                    }
                }
                since = resp.next_batch;
            }
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                let pause = e.retry_after_ms.unwrap_or(200).min(2000);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
}

/// Accumulates delivery delays across messages.
struct Measurement {
    clients: usize,
    from_ack_us: Vec<u64>,
    from_issue_us: Vec<u64>,
    send_latency_us: Vec<u64>,
    missed: u64,
    send_errors: u64,
    first_error: Option<String>,
    /// Arrivals for events whose send has not returned yet (a server may
    /// wake syncs before answering the sender).
    early: HashMap<String, Vec<(usize, Instant)>>,
    /// Events already measured or given up on; their late arrivals are dropped.
    done: HashSet<String>,
}

impl Measurement {
    fn new(clients: usize) -> Measurement {
        Measurement {
            clients,
            from_ack_us: Vec::new(),
            from_issue_us: Vec::new(),
            send_latency_us: Vec::new(),
            missed: 0,
            send_errors: 0,
            first_error: None,
            early: HashMap::new(),
            done: HashSet::new(),
        }
    }

    /// Waits until every client saw `event_id` or [`DELIVERY_WAIT`] passed,
    /// recording delays if `record` (false for the warm-up message).
    async fn collect(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Arrival>,
        event_id: &str,
        issued: Instant,
        acked: Instant,
        record: bool,
    ) {
        let mut seen = vec![false; self.clients];
        let mut count = 0;
        let mut arrivals = self.early.remove(event_id).unwrap_or_default();
        let deadline = tokio::time::Instant::from_std(acked + DELIVERY_WAIT);
        loop {
            for (client, at) in arrivals.drain(..) {
                if !std::mem::replace(&mut seen[client], true) {
                    count += 1;
                    if record {
                        self.from_ack_us
                            .push(micros(at.saturating_duration_since(acked)));
                        self.from_issue_us
                            .push(micros(at.saturating_duration_since(issued)));
                    }
                }
            }
            if count == self.clients {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(a)) if a.event_id == event_id => arrivals.push((a.client, a.at)),
                Ok(Some(a)) if !self.done.contains(&a.event_id) => {
                    self.early
                        .entry(a.event_id)
                        .or_default()
                        .push((a.client, a.at));
                }
                Ok(Some(_)) => {} // late delivery of an earlier message
                Ok(None) | Err(_) => break,
            }
        }
        if record {
            self.missed += (self.clients - count) as u64;
        }
        self.done.insert(event_id.to_string());
    }
}
