//! `messages`: backwards history pagination.
//!
//! Scrolling up in a room is `GET /rooms/{roomId}/messages?dir=b` repeated with
//! the previous page's `end` token. One room gets N messages, then the whole
//! history is paginated from the live end until the server returns no `end`
//! token (or an empty chunk), timing every page.

use crate::bench::BenchArgs;
use crate::bench::client::{BoxError, retry_429};
use crate::bench::report::Report;
use crate::bench::session::{Preset, Session, SyncParams};
use crate::bench::setup::{Ctx, bounded, progress};
use crate::bench::stats::{Summary, micros};
use std::time::Instant;

/// Messages sent at once while filling the room. Sends to one room serialise
/// on most servers anyway; a little concurrency hides round-trip time.
const FILL_CONCURRENCY: usize = 8;

pub async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.messages.max(1);
    let limit = args.page.max(1);
    let user = ctx.register("msg", 0).await?;
    let room = retry_429(|| user.create_room(Preset::Private, Some("messages bench"))).await?;
    progress(format!("messages: sending {n} messages"));
    let (user_ref, room_ref) = (&user, &room);
    bounded(n, FILL_CONCURRENCY, |i| async move {
        let txn = format!("{}.msg.{i}", ctx.prefix);
        let body = format!("history message {i}");
        retry_429(|| user_ref.send_text(room_ref, &txn, &body)).await
    })
    .await?;

    progress(format!("messages: paginating backwards, limit {limit}"));
    let p = paginate(&user, &room, limit, n).await?;
    let mut lat = p.page_latencies_us;
    let pages = lat.len();
    let summary = Summary::from_samples(&mut lat);

    let mut r = Report::new("messages", format!("{n} messages, limit {limit}"));
    r.row(
        "pages",
        format!("{pages} in {:.1} ms total", p.total_us as f64 / 1000.0),
    );
    r.row("per page", summary.human());
    r.row(
        "events seen",
        format!("{} ({} m.room.message, expected {n})", p.events, p.messages),
    );
    if let Some(how) = p.start_from_sync {
        r.row("start token", how);
    }
    r.set("messages", n);
    r.set("limit", limit);
    r.set("pages", pages);
    r.set("total_ms", p.total_us as f64 / 1000.0);
    r.set("page_latency", summary.to_json());
    r.set("events_seen", p.events);
    r.set("messages_seen", p.messages);
    if p.messages < n {
        r.problem(format!(
            "paginated {} m.room.message events, expected at least {n}",
            p.messages
        ));
    }
    Ok(r)
}

struct Pagination {
    page_latencies_us: Vec<u64>,
    total_us: u64,
    events: usize,
    messages: usize,
    /// Set when the server rejected a missing `from` and we fell back to the
    /// `/sync` `prev_batch` token (pre-v1.3 behaviour).
    start_from_sync: Option<String>,
}

async fn paginate(
    user: &Session,
    room: &str,
    limit: u32,
    n: usize,
) -> Result<Pagination, BoxError> {
    let mut p = Pagination {
        page_latencies_us: Vec::new(),
        total_us: 0,
        events: 0,
        messages: 0,
        start_from_sync: None,
    };
    // Safety bound so a server that never stops returning `end` can't loop
    // forever: twice the pages needed for N messages plus state events.
    let max_pages = (n / limit as usize + 1) * 2 + 50;
    let start = Instant::now();
    let mut from: Option<String> = None;
    for page_no in 0..max_pages {
        let t0 = Instant::now();
        let page = match user.messages_backwards(room, from.as_deref(), limit).await {
            Ok(page) => page,
            Err(e) if page_no == 0 && from.is_none() && e.status == Some(400) => {
                from = Some(sync_prev_batch(user, room, limit, &mut p).await?);
                p.start_from_sync = Some(format!("from /sync prev_batch (no `from`: {e})"));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        p.page_latencies_us.push(micros(t0.elapsed()));
        p.events += page.chunk.len();
        p.messages += page
            .chunk
            .iter()
            .filter(|e| e.kind == "m.room.message")
            .count();
        match page.end {
            Some(end) if !page.chunk.is_empty() => from = Some(end),
            _ => break,
        }
    }
    p.total_us = micros(start.elapsed());
    Ok(p)
}

/// Fallback start token: the room's timeline `prev_batch` from a filtered
/// `/sync`. Events in that timeline are counted as seen, since pagination
/// from `prev_batch` starts just before them.
async fn sync_prev_batch(
    user: &Session,
    room: &str,
    limit: u32,
    p: &mut Pagination,
) -> Result<String, BoxError> {
    let filter = serde_json::json!({
        "room": {"rooms": [room], "timeline": {"limit": limit}}
    })
    .to_string();
    let params = SyncParams {
        filter: Some(&filter),
        ..Default::default()
    };
    let (resp, _) = user.sync(params).await?;
    let timeline = resp
        .rooms
        .join
        .get(room)
        .map(|j| &j.timeline)
        .ok_or("room missing from /sync")?;
    p.events += timeline.events.len();
    p.messages += timeline
        .events
        .iter()
        .filter(|e| e.kind == "m.room.message")
        .count();
    Ok(timeline
        .prev_batch
        .clone()
        .ok_or("no prev_batch in /sync timeline")?)
}
