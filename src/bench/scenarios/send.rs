//! `send`: sustained message throughput and send latency.
//!
//! N distinct users each send into their own room (or, with `--shared-room`,
//! all into one room) for `--duration` seconds, each keeping exactly one
//! `PUT /rooms/{roomId}/send` in flight. One request per client makes this a
//! closed-loop test: throughput is what the server can acknowledge, and
//! latency is not inflated by a client-side queue. Separate rooms measure the
//! server's parallelism; a shared room measures per-room serialisation.

use crate::bench::BenchArgs;
use crate::bench::client::{BoxError, retry_429};
use crate::bench::report::Report;
use crate::bench::session::{Preset, Session};
use crate::bench::setup::{Ctx, SETUP_CONCURRENCY, bounded, progress};
use crate::bench::stats::{Summary, micros};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What one sending client observed.
#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

pub async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.clients.max(1);
    progress(format!("send: registering {n} users"));
    let users = ctx.register_many("send", n).await?;

    let rooms: Vec<String> = if args.shared_room {
        // A private room with invites, like a real support conversation.
        let owner = &users[0];
        let room = retry_429(|| owner.create_room(Preset::Private, Some("bench shared"))).await?;
        progress(format!("send: inviting {} users to the shared room", n - 1));
        bounded(n - 1, SETUP_CONCURRENCY, |i| {
            let (u, room) = (&users[i + 1], &room);
            async move {
                retry_429(|| owner.invite(room, &u.user_id)).await?;
                retry_429(|| u.join(room)).await
            }
        })
        .await?;
        vec![room; n]
    } else {
        progress(format!("send: creating {n} rooms"));
        bounded(n, SETUP_CONCURRENCY, |i| {
            let u = &users[i];
            retry_429(move || u.create_room(Preset::Private, None))
        })
        .await?
    };

    let duration = Duration::from_secs(args.duration.max(1));
    progress(format!("send: sending for {}s", duration.as_secs()));
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = users
        .into_iter()
        .zip(rooms)
        .enumerate()
        .map(|(i, (user, room))| {
            let txn_prefix = format!("{}.{i}", ctx.prefix);
            tokio::spawn(send_loop(user, room, txn_prefix, deadline))
        })
        .collect();

    let mut all = ClientResult::default();
    for t in tasks {
        let r = t.await?;
        all.latencies_us.extend(r.latencies_us);
        for (k, v) in r.errors {
            *all.errors.entry(k).or_default() += v;
        }
        all.first_error = all.first_error.or(r.first_error);
    }
    // Wall time includes the requests still in flight at the deadline, which
    // are counted, so throughput = acknowledged / elapsed stays honest.
    let elapsed = start.elapsed();
    let acked = all.latencies_us.len();
    let error_total: u64 = all.errors.values().sum();
    let rate = acked as f64 / elapsed.as_secs_f64();
    let lat = Summary::from_samples(&mut all.latencies_us);

    let mode = if args.shared_room {
        "one shared room"
    } else {
        "one room each"
    };
    let mut r = Report::new(
        "send",
        format!("{n} clients, {mode}, {}s", duration.as_secs()),
    );
    r.row(
        "acknowledged",
        format!("{acked} in {:.2}s", elapsed.as_secs_f64()),
    );
    r.row("throughput", format!("{rate:.1} sends/s"));
    r.row("latency", lat.human());
    r.row("errors", format_errors(error_total, &all.errors));
    if let Some(e) = &all.first_error {
        r.row("first error", e.clone());
    }
    r.set("clients", n);
    r.set("shared_room", args.shared_room);
    r.set("duration_s", elapsed.as_secs_f64());
    r.set("acknowledged", acked);
    r.set("sends_per_sec", rate);
    r.set("latency", lat.to_json());
    r.set("errors", json!(all.errors));
    r.set("errors_total", error_total);
    if acked == 0 {
        r.problem("no send was acknowledged");
    }
    Ok(r)
}

/// One client: send, wait for the answer, repeat until the deadline.
async fn send_loop(
    user: Session,
    room: String,
    txn_prefix: String,
    deadline: Instant,
) -> ClientResult {
    let mut out = ClientResult {
        latencies_us: Vec::with_capacity(4096),
        ..Default::default()
    };
    let mut seq: u64 = 0;
    while Instant::now() < deadline {
        seq += 1;
        let txn = format!("{txn_prefix}.{seq}");
        let body = format!("bench message {seq}");
        let t0 = Instant::now();
        match user.send_text(&room, &txn, &body).await {
            Ok(_) => out.latencies_us.push(micros(t0.elapsed())),
            Err(e) => {
                *out.errors.entry(e.kind()).or_default() += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
                // Back off a little so a failing server is not hammered in a
                // tight loop (which would also inflate the error count).
                let pause = match e.retry_after_ms {
                    Some(ms) => ms.min(1000),
                    None => 10,
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
    out
}

/// `0` or `3 (429: 2, timeout: 1)`.
pub fn format_errors(total: u64, by_kind: &BTreeMap<String, u64>) -> String {
    if total == 0 {
        return "0".to_string();
    }
    let parts: Vec<String> = by_kind.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{total} ({})", parts.join(", "))
}
