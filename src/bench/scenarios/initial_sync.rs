//! `initial-sync`: cost of a full `/sync` for a user in many rooms.
//!
//! This is what a client pays on first login or after clearing its cache, and
//! it is usually a server's most expensive single request: every room's state
//! and latest timeline must be assembled. One user joins R rooms (each with a
//! name and one message); after one untimed warm-up (so lazily built caches
//! count as steady state, not as a cold start) the full, unfiltered `/sync`
//! is timed five times.

use crate::bench::BenchArgs;
use crate::bench::client::{BoxError, retry_429};
use crate::bench::report::Report;
use crate::bench::session::{Preset, SyncParams};
use crate::bench::setup::{Ctx, bounded, progress};
use crate::bench::stats::{Summary, micros, ms};
use std::time::Instant;

/// Timed repetitions after the warm-up.
const RUNS: usize = 5;
/// Room creation is heavy (several state events each), so fewer at once than
/// other setup steps.
const CREATE_CONCURRENCY: usize = 16;

pub async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let rooms = args.rooms.max(1);
    let user = ctx.register("is", 0).await?;
    progress(format!(
        "initial-sync: creating {rooms} rooms with one message each"
    ));
    let user_ref = &user;
    bounded(rooms, CREATE_CONCURRENCY, |i| async move {
        let name = format!("bench room {i}");
        let room = retry_429(|| user_ref.create_room(Preset::Private, Some(&name))).await?;
        let txn = format!("{}.is.{i}", ctx.prefix);
        retry_429(|| user_ref.send_text(&room, &txn, "hello")).await?;
        Ok(())
    })
    .await?;

    progress(format!("initial-sync: 1 warm-up + {RUNS} timed full syncs"));
    let mut r = Report::new(
        "initial-sync",
        format!("1 user in {rooms} rooms, {RUNS} runs"),
    );
    user.sync(SyncParams::default()).await?;
    let mut latencies = Vec::with_capacity(RUNS);
    let mut sizes = Vec::with_capacity(RUNS);
    let mut joined = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let (resp, bytes) = user.sync(SyncParams::default()).await?;
        latencies.push(micros(t0.elapsed()));
        sizes.push(bytes);
        joined.push(resp.rooms.join.len());
    }
    let lat = Summary::from_samples(&mut latencies);
    let size = sizes.iter().copied().max().unwrap_or(0);
    let rooms_seen = joined.iter().copied().min().unwrap_or(0);

    r.row(
        "full /sync",
        format!(
            "min {}  p50 {}  max {} ms",
            ms(lat.min_us),
            ms(lat.p50_us),
            ms(lat.max_us)
        ),
    );
    r.row(
        "response size",
        format!("{size} bytes ({:.1} KiB)", size as f64 / 1024.0),
    );
    r.row("rooms.join", format!("{rooms_seen} (expected {rooms})"));
    r.set("rooms", rooms);
    r.set("latency", lat.to_json());
    r.set("response_bytes", size);
    r.set("rooms_joined_seen", rooms_seen);
    if joined.iter().any(|&j| j != rooms) {
        r.problem(format!(
            "rooms.join had {joined:?} rooms over the runs, expected {rooms}"
        ));
    }
    Ok(r)
}
