//! How fast the appservice side takes transactions: a homeserver-like sender on loopback pushes
//! transactions one at a time (as homeservers do: one in flight per appservice) to the router,
//! whose handler parses every event. Each answer waits for the txnId to be flushed to disk, so
//! this is the toolkit's share of a homeserver's backlog drain and of its per-event lag.
//!
//! ```text
//! cargo run --release -p charla-appservice --example txn_bench -- [backlog events] [live events]
//! ```
//! Defaults: a backlog of 100000 events in transactions of 100, then 2000 one-event
//! transactions (live traffic).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use appservice::{AppService, Handler, HandlerError, Namespaces, Registration};
use ruma::events::AnyTimelineEvent;
use ruma::serde::Raw;
use serde_json::json;

#[derive(Default)]
struct Count(AtomicU64);

impl Handler for Count {
    async fn on_event(
        &self,
        _event: AnyTimelineEvent,
        _raw: &Raw<AnyTimelineEvent>,
    ) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn event(n: u64) -> serde_json::Value {
    json!({
        "type": "m.room.message", "event_id": format!("$event{n}:example.org"),
        "sender": "@customer:example.org", "room_id": "!support:example.org",
        "origin_server_ts": 1_700_000_000_000u64 + n,
        "content": { "msgtype": "m.text", "body": format!("Hola, quisiera saber el estado de mi pedido número {n}, gracias") },
        "unsigned": { "age": 12 }
    })
}

/// Sends `txns` transactions of `per_txn` events; returns the wall time and each answer's latency.
async fn run(
    client: &reqwest::Client,
    base: &str,
    first_txn: u64,
    txns: u64,
    per_txn: u64,
) -> (Duration, Vec<Duration>) {
    let bodies: Vec<String> = (0..txns)
        .map(|t| {
            let events: Vec<_> = (0..per_txn)
                .map(|i| event((first_txn + t) * 1000 + i))
                .collect();
            json!({ "events": events }).to_string()
        })
        .collect();
    let mut latencies = Vec::with_capacity(txns as usize);
    let start = Instant::now();
    for (t, body) in bodies.into_iter().enumerate() {
        let sent = Instant::now();
        let url = format!(
            "{base}/_matrix/app/v1/transactions/{}",
            first_txn + t as u64
        );
        let response = client
            .put(url)
            .bearer_auth("HS")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        latencies.push(sent.elapsed());
    }
    (start.elapsed(), latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(name: &str, events: u64, wall: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{name}: {events} events in {} transactions, {:.2} s, {:.0} events/s; per transaction p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        wall.as_secs_f64(),
        events as f64 / wall.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let backlog = args.first().copied().unwrap_or(100_000);
    let live = args.get(1).copied().unwrap_or(2_000);

    let state = std::env::temp_dir().join(format!("txn-bench-{}", std::process::id()));
    let mut registration = Registration::generate("bench", None, "benchbot", Namespaces::default());
    registration.hs_token = "HS".into();
    let count = Arc::new(Count::default());
    let app = AppService::builder(
        registration,
        "http://127.0.0.1:1",
        ruma::server_name!("example.org"),
    )
    .state_dir(&state)
    .build(count.clone())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_until(listener, async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let (wall, latencies) = run(&client, &base, 0, backlog.div_ceil(100), 100).await;
    report(
        "backlog drain",
        backlog.div_ceil(100) * 100,
        wall,
        latencies,
    );
    let (wall, latencies) = run(&client, &base, 1_000_000, live, 1).await;
    report("live (1 event per transaction)", live, wall, latencies);
    assert_eq!(
        count.0.load(Ordering::Relaxed),
        backlog.div_ceil(100) * 100 + live
    );

    let _ = stop.send(());
    server.await??;
    std::fs::remove_dir_all(&state)?;
    Ok(())
}
