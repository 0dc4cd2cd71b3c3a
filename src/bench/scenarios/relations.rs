//! `relations`: reading a room full of edits, reactions and threads.
//!
//! One room gets N messages (`--messages`); a second user reacts to every one, the sender edits
//! every second one, and every tenth one gets a thread of three replies. Then, timed:
//!
//! - backwards `/messages` through the whole room, `--page` events per page: every edited
//!   message and thread root carries bundled aggregations, so comparing the per-page figure with
//!   the `messages` scenario's shows what bundling costs;
//! - `GET /relations/{id}/m.annotation` for every message (the reactions clients fetch);
//! - `GET /relations/{root}/m.thread` for every thread root (opening a thread);
//! - `GET /threads`, 20 roots per page, through all threads.
//!
//! Checks: the number of events carrying `unsigned["m.relations"]`, of reactions and thread
//! replies listed, and of threads listed, against what was sent.

use std::time::Instant;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;

use crate::bench::BenchArgs;
use crate::bench::client::{BoxError, retry_429};
use crate::bench::report::Report;
use crate::bench::session::{Preset, Session};
use crate::bench::setup::{Ctx, bounded, progress};
use crate::bench::stats::{Summary, micros};

const FILL_CONCURRENCY: usize = 8;
const THREAD_EVERY: usize = 10;
const THREAD_REPLIES: usize = 3;
const THREADS_PAGE: &str = "20";

#[derive(Deserialize)]
struct MessagesPage {
    chunk: Vec<Event>,
    end: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    unsigned: Unsigned,
}

#[derive(Deserialize, Default)]
struct Unsigned {
    #[serde(rename = "m.relations")]
    relations: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChildPage {
    chunk: Vec<IgnoredAny>,
    next_batch: Option<String>,
}

/// What was sent, to check what is read back.
struct Filled {
    messages: Vec<String>,
    roots: Vec<String>,
    bundled: usize,
}

pub async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.messages.max(1);
    let limit = args.page.max(1);
    let alice = ctx.register("rel", 0).await?;
    let bob = ctx.register("rel", 1).await?;
    let room = retry_429(|| alice.create_room(Preset::Public, Some("relations bench"))).await?;
    retry_429(|| bob.join(&room)).await?;
    let filled = fill(ctx, &alice, &bob, &room, n).await?;

    progress("relations: paginating /messages");
    let (mut message_pages, bundled_seen) = paginate(&alice, &room, limit, n).await?;
    progress("relations: /relations and /threads");
    let mut annotation_lat = Vec::with_capacity(n);
    let mut reactions_seen = 0;
    for id in &filled.messages {
        let t0 = Instant::now();
        let page: ChildPage = alice
            .get(
                true,
                &["rooms", &room, "relations", id, "m.annotation"],
                &[("limit", "50")],
            )
            .await?;
        annotation_lat.push(micros(t0.elapsed()));
        reactions_seen += page.chunk.len();
    }
    let mut thread_lat = Vec::with_capacity(filled.roots.len());
    let mut replies_seen = 0;
    for root in &filled.roots {
        let t0 = Instant::now();
        let page: ChildPage = alice
            .get(
                true,
                &["rooms", &room, "relations", root, "m.thread"],
                &[("limit", "50")],
            )
            .await?;
        thread_lat.push(micros(t0.elapsed()));
        replies_seen += page.chunk.len();
    }
    let (mut threads_lat, threads_seen) = list_threads(&alice, &room, filled.roots.len()).await?;

    let pages = message_pages.len();
    let mut r = Report::new(
        "relations",
        format!(
            "{n} messages, each reacted to, every 2nd edited, every {THREAD_EVERY}th a thread of {THREAD_REPLIES}"
        ),
    );
    let messages = Summary::from_samples(&mut message_pages);
    let annotations = Summary::from_samples(&mut annotation_lat);
    let threads = Summary::from_samples(&mut thread_lat);
    let thread_list = Summary::from_samples(&mut threads_lat);
    r.row(
        format!("/messages per page (limit {limit})"),
        messages.human(),
    );
    r.row("/relations m.annotation", annotations.human());
    r.row("/relations m.thread", threads.human());
    r.row(
        format!("/threads per page ({THREADS_PAGE})"),
        thread_list.human(),
    );
    r.row(
        "seen",
        format!(
            "{bundled_seen} bundled of {} expected in {pages} pages, {reactions_seen} reactions, {replies_seen} replies, {threads_seen} threads",
            filled.bundled
        ),
    );
    r.set("messages", n);
    r.set("messages_page_latency", messages.to_json());
    r.set("annotations_latency", annotations.to_json());
    r.set("thread_latency", threads.to_json());
    r.set("threads_page_latency", thread_list.to_json());
    if bundled_seen != filled.bundled {
        r.problem(format!(
            "{bundled_seen} events carried m.relations, expected {}",
            filled.bundled
        ));
    }
    if reactions_seen != n || replies_seen != filled.roots.len() * THREAD_REPLIES {
        r.problem(format!(
            "listed {reactions_seen} reactions and {replies_seen} replies, expected {n} and {}",
            filled.roots.len() * THREAD_REPLIES
        ));
    }
    if threads_seen != filled.roots.len() {
        r.problem(format!(
            "/threads listed {threads_seen}, expected {}",
            filled.roots.len()
        ));
    }
    Ok(r)
}

async fn fill(
    ctx: &Ctx,
    alice: &Session,
    bob: &Session,
    room: &str,
    n: usize,
) -> Result<Filled, BoxError> {
    progress(format!("relations: sending {n} messages"));
    let messages = bounded(n, FILL_CONCURRENCY, |i| async move {
        let txn = format!("{}.rel.msg.{i}", ctx.prefix);
        let body = format!("message {i}");
        retry_429(|| alice.send_text(room, &txn, &body)).await
    })
    .await?;
    progress("relations: reactions, edits and threads");
    let msgs = &messages;
    bounded(n, FILL_CONCURRENCY, |i| async move {
        let content = json!({ "m.relates_to": {
            "rel_type": "m.annotation", "event_id": msgs[i], "key": "👍" } });
        let txn = format!("{}.rel.react.{i}", ctx.prefix);
        retry_429(|| bob.send_event(room, "m.reaction", &txn, &content)).await
    })
    .await?;
    let edited: Vec<usize> = (0..n).step_by(2).collect();
    let edited_ref = &edited;
    bounded(edited.len(), FILL_CONCURRENCY, |k| async move {
        let i = edited_ref[k];
        let content = json!({
            "msgtype": "m.text", "body": format!("* message {i} (edited)"),
            "m.new_content": { "msgtype": "m.text", "body": format!("message {i} (edited)") },
            "m.relates_to": { "rel_type": "m.replace", "event_id": msgs[i] } });
        let txn = format!("{}.rel.edit.{i}", ctx.prefix);
        retry_429(|| alice.send_event(room, "m.room.message", &txn, &content)).await
    })
    .await?;
    let roots: Vec<String> = messages.iter().step_by(THREAD_EVERY).cloned().collect();
    let roots_ref = &roots;
    bounded(
        roots.len() * THREAD_REPLIES,
        FILL_CONCURRENCY,
        |k| async move {
            let root = &roots_ref[k / THREAD_REPLIES];
            let content = json!({
            "msgtype": "m.text", "body": format!("reply {k}"),
            "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
            let txn = format!("{}.rel.reply.{k}", ctx.prefix);
            retry_429(|| bob.send_event(room, "m.room.message", &txn, &content)).await
        },
    )
    .await?;
    // Thread roots are among the edited messages (every 10th is every 2nd too).
    let bundled = edited.len();
    Ok(Filled {
        messages,
        roots,
        bundled,
    })
}

/// Pages backwards through the room; returns per-page latencies and how many events carried
/// bundled aggregations.
async fn paginate(
    user: &Session,
    room: &str,
    limit: u32,
    n: usize,
) -> Result<(Vec<u64>, usize), BoxError> {
    let limit = limit.to_string();
    let max_pages = n * 4 / limit.parse::<usize>().unwrap_or(1) + 50;
    let (mut lat, mut bundled) = (Vec::new(), 0);
    let mut from: Option<String> = None;
    for _ in 0..max_pages {
        let mut query = vec![("dir", "b"), ("limit", limit.as_str())];
        if let Some(f) = &from {
            query.push(("from", f));
        }
        let t0 = Instant::now();
        let page: MessagesPage = user
            .get(false, &["rooms", room, "messages"], &query)
            .await?;
        lat.push(micros(t0.elapsed()));
        bundled += page
            .chunk
            .iter()
            .filter(|e| e.unsigned.relations.is_some())
            .count();
        match page.end {
            Some(end) if !page.chunk.is_empty() => from = Some(end),
            _ => break,
        }
    }
    Ok((lat, bundled))
}

async fn list_threads(
    user: &Session,
    room: &str,
    expected: usize,
) -> Result<(Vec<u64>, usize), BoxError> {
    let (mut lat, mut seen) = (Vec::new(), 0);
    let mut from: Option<String> = None;
    for _ in 0..expected + 2 {
        let mut query = vec![("limit", THREADS_PAGE)];
        if let Some(f) = &from {
            query.push(("from", f));
        }
        let t0 = Instant::now();
        let page: ChildPage = user.get(true, &["rooms", room, "threads"], &query).await?;
        lat.push(micros(t0.elapsed()));
        seen += page.chunk.len();
        match page.next_batch {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    Ok((lat, seen))
}
