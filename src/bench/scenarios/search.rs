//! `search`: full-text search over a large store (the figure: with 1,000,000 messages
//! in 10,000 conversations, queries answered in under 20 ms at p99, indexing that keeps up with
//! sends at their full rate with less than 1 s of lag at p99, a full reindex at ≥ 50,000
//! messages a second, and the index's size on disk and the server's RSS after it).
//!
//! Like `backup` it brings its own Charla, in process, in a temporary data folder
//! (`--homeserver` is ignored: the index's status needs the admin token from the data folder),
//! and speaks to it only over HTTP.
//!
//! 1. Setup: `--clients` users and a support admin. The admin opens `--rooms` conversations
//!    through `POST /api/support/v1/conversations`, conversation `k` with user `k mod clients`
//!    as its customer, who joins it: each user is in an equal share. A tenth are then closed
//!    and a tenth set pending (`PATCH`).
//! 2. Fill: every user sends into its conversations in turn, one request in flight each, until
//!    `--messages` were sent: support sentences of words drawn with Zipf frequencies from a
//!    Spanish and English vocabulary of 3,000 words (real words first, then made-up names of
//!    products, people and streets), some with an order number (`ORD-2024-012345`) or an
//!    e-mail address. Meanwhile `GET /_charla/admin/v1/search` every 50 ms: for each reading,
//!    the time until `indexed_upto` reached its `stream_head` is the indexing lag (measured to
//!    the polling's 50 ms).
//! 3. Wait until the index covers the whole stream.
//! 4. Queries, one at a time, `--samples` of each kind, the kinds interleaved, the words drawn
//!    anew each time. `/search` as each user in turn: one common word, one rarer word, two
//!    common words, one word in one of the user's rooms (`filter.rooms`), one word by recent
//!    order. As the support admin: `GET /api/support/v1/conversations?q=…&status=open` and
//!    `GET /api/support/v1/search?q=…`. A non-200 answer, or an empty one where the word is
//!    too common to be missing, is an error.
//! 5. Reindex: `POST /_charla/admin/v1/search/reindex`, then its status every 100 ms until it
//!    is done: documents (the messages, plus one per conversation) and stream events a second,
//!    by the server's own start and end times.
//! 6. The index's size on disk and documents, and this process's RSS (the server's and the
//!    tool's, the tool's being small) after the reindex.

use std::{
    collections::VecDeque,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt, TryStreamExt, stream};
use rand::{
    Rng, SeedableRng,
    distributions::{Distribution, WeightedIndex},
    rngs::StdRng,
    seq::{IteratorRandom, SliceRandom},
};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::bench::BenchArgs;
use crate::bench::client::{BoxError, http_client};
use crate::bench::report::{Report, mib, read_rss};
use crate::bench::session::Session;
use crate::bench::setup::{Ctx, SETUP_CONCURRENCY, progress, random_prefix};
use crate::bench::stats::{Summary, micros};

const SUPPORT: &str = "/api/support/v1";
const STATUS: &str = "/_charla/admin/v1/search";
/// How often the index's status is read during the fill.
const POLL: Duration = Duration::from_millis(50);
/// How long the index may stand still behind the stream before the run gives up.
const STALL: Duration = Duration::from_secs(120);

/// Runs the scenario; its users' names start with `ctx.prefix` (the run's header shows it).
pub async fn run(ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let dir =
        std::env::temp_dir().join(format!("charla-bench-search-{:08x}", rand::random::<u32>()));
    let result = measure(&dir, &ctx.prefix, args).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(dir: &Path, prefix: &str, args: &BenchArgs) -> Result<Report, BoxError> {
    let (n, messages) = (args.clients.max(1), args.messages as u64);
    let rooms = args.rooms.max(n);
    let title = format!("{messages} messages in {rooms} support conversations of {n} users");
    let mut r = Report::new("search", title);
    let data = dir.join("data");
    let config = crate::config::Config::from_toml(&format!(
        "server_name = \"bench\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\npath = {data:?}\n\
         [limits]\nsend_per_second = 1000000.0\nsend_burst = 1000000\n\
         search_per_second = 1000000.0\nsearch_burst = 1000000\n\
         [logging]\nfilter = \"warn\"\n\
         [metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
         [support]\ngreeting = \"\"\nadmins = [\"@{prefix}-admin-0:bench\"]\n"
    ))?;
    let server = crate::server::start(config).await?;
    let base = server.base_url();
    let metrics = server.metrics_addr;
    let result = async {
        let ctx = Ctx::new(&base, n, prefix.to_owned(), None)?;
        let http = http_client()?;
        let api = |token: &str| Api {
            http: http.clone(),
            base: base.as_str().into(),
            token: token.trim().into(),
        };
        let operator = api(&std::fs::read_to_string(data.join("admin.token"))?);
        progress(format!("search: registering {n} users and a support admin"));
        let desk = api(ctx.register("admin", 0).await?.access_token());
        let users = ctx.register_many("user", n).await?;
        progress(format!("search: opening {rooms} conversations"));
        let started = Instant::now();
        let owned = open_conversations(&desk, &users, rooms).await?;
        let secs = started.elapsed().as_secs_f64();
        r.row("setup", format!("{rooms} conversations in {secs:.1} s"));
        let texts = Arc::new(Texts::new());
        fill(&users, &owned, &texts, &operator, messages, &mut r).await?;
        if let Some(metrics) = metrics {
            settle(&http, metrics, &mut r).await?;
        }
        let users = users.iter().map(|u| api(u.access_token())).collect();
        let queries = Queries {
            users,
            rooms: owned,
            desk,
            texts,
        };
        queries.run(args.samples.max(1), &mut r).await;
        reindex(&operator, &mut r).await
    }
    .await;
    server.stop().await;
    result.map(|()| r)
}

/// A caller of the server under test, with their bearer token.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: Arc<str>,
    token: Arc<str>,
}

impl Api {
    /// `method path?query` with `body`: the status and the JSON answer (`Null` if not JSON).
    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), BoxError> {
        let mut url = Url::parse(&format!("{}{path}", self.base))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.http.request(method, url).bearer_auth(&*self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.timeout(Duration::from_secs(120)).send().await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or_default()))
    }

    /// Like [`Api::request`] without a query, with a non-2xx answer as an error.
    async fn call(&self, m: Method, path: &str, body: Option<Value>) -> Result<Value, BoxError> {
        match self.request(m, path, &[], body.as_ref()).await? {
            (status, v) if status.is_success() => Ok(v),
            (status, v) => Err(format!("{path}: {status} {v}").into()),
        }
    }
}

/// Opens the conversations (step 1); returns each user's rooms.
async fn open_conversations(
    desk: &Api,
    users: &[Session],
    rooms: usize,
) -> Result<Vec<Vec<String>>, BoxError> {
    let n = users.len();
    let path = &format!("{SUPPORT}/conversations");
    let opened: Vec<String> = stream::iter(0..rooms)
        .map(|k| async move {
            let user = &users[k % n];
            let (channel, priority) =
                (["whatsapp", "web", "matrix"][k % 3], ["low", "high"][k % 2]);
            let body = json!({
                "participants": [user.user_id], "channel": channel, "priority": priority,
                "labels": [format!("label{}", k % 20)], "order_id": format!("ORD-2024-{k:06}"),
                "contact": { "name": format!("Customer {k}") },
            });
            let created = desk.call(Method::POST, path, Some(body)).await?;
            let room = created["room_id"].as_str().ok_or("no room_id")?.to_owned();
            user.join(&room).await?;
            if let Some(status) = ["closed", "pending"].get(k % 10) {
                let one = format!("{path}/{}", room.replace('!', "%21").replace(':', "%3A"));
                let body = json!({ "status": status });
                desk.call(Method::PATCH, &one, Some(body)).await?;
            }
            Ok::<_, BoxError>(room)
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    let mut owned = vec![Vec::new(); n];
    for (k, room) in opened.into_iter().enumerate() {
        owned[k % n].push(room);
    }
    Ok(owned)
}

/// `GET /_charla/admin/v1/search`, and two of its numbers.
async fn index_status(operator: &Api) -> Result<(Value, u64, u64), BoxError> {
    let v = operator.call(Method::GET, STATUS, None).await?;
    let upto = v["indexed_upto"].as_u64().ok_or("no indexed_upto")?;
    let head = v["stream_head"].as_u64().ok_or("no stream_head")?;
    Ok((v, upto, head))
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// Sends `messages` (step 2) while the index's lag is measured, then waits until the index
/// covers the stream (step 3).
async fn fill(
    users: &[Session],
    rooms: &[Vec<String>],
    texts: &Arc<Texts>,
    operator: &Api,
    messages: u64,
    r: &mut Report,
) -> Result<(), BoxError> {
    progress(format!("search: sending {messages} messages"));
    let filling = Arc::new(AtomicBool::new(true));
    let watch = tokio::spawn(watch_lag(operator.clone(), filling.clone()));
    let started = Instant::now();
    let (taken, run) = (Arc::new(AtomicU64::new(0)), random_prefix());
    let tasks: Vec<_> = (users.iter().zip(rooms).enumerate())
        .map(|(i, (user, rooms))| {
            let (user, rooms, texts) = (user.clone(), rooms.clone(), texts.clone());
            let (taken, run) = (taken.clone(), run.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(i as u64);
                let (mut acked, mut errors) = (0u64, 0u64);
                for turn in 0.. {
                    let seq = taken.fetch_add(1, Ordering::SeqCst);
                    if seq >= messages {
                        break;
                    }
                    let (room, text) = (&rooms[turn % rooms.len()], texts.message(&mut rng));
                    match user.send_text(room, &format!("{run}.{seq}"), &text).await {
                        Ok(_) => acked += 1,
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (acked, errors)
            })
        })
        .collect();
    let (mut acked, mut errors) = (0u64, 0u64);
    for task in tasks {
        let (a, e) = task.await?;
        (acked, errors) = (acked + a, errors + e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    filling.store(false, Ordering::SeqCst);
    let ended = Instant::now();
    progress("search: waiting for the index to cover the stream");
    let mut lag = watch.await??;
    let catch_up = ended.elapsed().as_secs_f64();
    // Read again: `indexed_upto` is the commit's, the searcher reloads just after it.
    let (status, _, _) = index_status(operator).await?;
    let rate = acked as f64 / elapsed.max(0.001);
    let lag = Summary::from_samples(&mut lag);
    let lag_ok = lag.count > 0 && lag.p99_us < 1_000_000;
    let mb = status["size_bytes"].as_f64().unwrap_or(0.0) / 1e6;
    let sent = format!("{acked} messages in {elapsed:.1} s: {rate:.0} messages/s");
    r.row("fill (send rate)", format!("{sent}, {errors} errors"));
    r.row("indexing lag at full send rate", lag.human());
    let p99 = format!("{} (p99 {} ms)", pass(lag_ok), lag.p99_us / 1000);
    r.row("target: indexing lag p99 < 1 s", p99);
    let after = format!("{catch_up:.2} s after the fill's last send");
    r.row("index caught up", after);
    let docs = format!("{} documents, {mb:.1} MB", status["documents"]);
    r.row("index after the fill", docs);
    r.set(
        "fill",
        json!({ "messages": acked, "errors": errors, "messages_per_sec": rate,
        "indexing_lag": lag.to_json(), "target_lag_ok": lag_ok, "catch_up_s": catch_up,
        "index": status }),
    );
    if errors > 0 || acked < messages {
        r.problem(format!("fill: {errors} errors, {acked} of {messages} sent"));
    }
    Ok(())
}

/// Waits until every stream consumer (the support bot, push delivery, the indexer) has caught
/// up with the fill, so that the queries measure search on a quiet server, not search beside
/// a backlog: `charla_consumer_lag` of each at 0 on `/metrics`.
async fn settle(
    http: &reqwest::Client,
    metrics: std::net::SocketAddr,
    r: &mut Report,
) -> Result<(), BoxError> {
    progress("search: waiting for every stream consumer to catch up");
    let started = Instant::now();
    loop {
        let text = http
            .get(format!("http://{metrics}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let behind: f64 = text
            .lines()
            .filter(|l| l.starts_with("charla_consumer_lag{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if behind == 0.0 {
            break;
        }
        if started.elapsed() > STALL {
            r.problem(format!(
                "consumers still {behind} positions behind after the fill"
            ));
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let waited = started.elapsed().as_secs_f64();
    r.row(
        "consumers caught up",
        format!("{waited:.1} s after the index"),
    );
    Ok(())
}

/// Reads the index's status every [`POLL`]: while `filling`, the lag of each reading's head
/// (µs); after the fill, until the index covers the stream.
async fn watch_lag(operator: Api, filling: Arc<AtomicBool>) -> Result<Vec<u64>, BoxError> {
    let mut pending: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut lags = Vec::new();
    let (mut last_upto, mut moved) = (0, Instant::now());
    loop {
        let (asked, during) = (Instant::now(), filling.load(Ordering::SeqCst));
        let (_, upto, head) = index_status(&operator).await?;
        let now = Instant::now();
        while let Some(&(at, _)) = pending.front().filter(|(_, h)| upto >= *h) {
            lags.push(micros(now - at));
            pending.pop_front();
        }
        if during && upto >= head {
            lags.push(micros(now - asked));
        } else if during {
            pending.push_back((asked, head));
        } else if pending.is_empty() && upto >= head {
            return Ok(lags);
        }
        if upto != last_upto {
            (last_upto, moved) = (upto, now);
        } else if upto < head && now - moved > STALL {
            return Err(format!("the index stood still at {upto} of {head} for {STALL:?}").into());
        }
        tokio::time::sleep_until((asked + POLL).into()).await;
    }
}

/// The query kinds of step 4: name, JSON key, whether an empty answer is an error.
const KINDS: [(&str, &str, bool); 7] = [
    ("/search one common word", "common_word", true),
    ("/search one rarer word", "rare_word", false),
    ("/search two common words", "two_words", false),
    ("/search one word, filter.rooms", "room_filter", false),
    ("/search one word, recent order", "recent_order", true),
    ("support list ?q&status=open", "support_list", true),
    ("support search ?q", "support_search", true),
];

/// What step 4 needs: the users' callers, their rooms, the support admin, the vocabulary.
struct Queries {
    users: Vec<Api>,
    rooms: Vec<Vec<String>>,
    desk: Api,
    texts: Arc<Texts>,
}

/// One kind's answers: latencies and hits, errors and the first one's text.
#[derive(Default, Clone)]
struct Tally {
    latency: Vec<u64>,
    hits: Vec<u64>,
    errors: u64,
    first: Option<String>,
}

impl Queries {
    async fn run(&self, samples: usize, r: &mut Report) {
        let kinds = KINDS.len();
        progress(format!(
            "search: {samples} queries of each of {kinds} kinds"
        ));
        let mut rng = StdRng::seed_from_u64(42);
        let mut tallies = vec![Tally::default(); KINDS.len()];
        for i in 0..samples {
            for (kind, tally) in tallies.iter_mut().enumerate() {
                let error = match self.ask(kind, i, &mut rng).await {
                    Ok((took, hits)) => {
                        tally.latency.push(took);
                        tally.hits.push(hits);
                        (hits == 0 && KINDS[kind].2).then(|| "an empty answer".to_owned())
                    }
                    Err(e) => Some(e.to_string()),
                };
                if let Some(error) = error {
                    tally.errors += 1;
                    tally.first.get_or_insert(error);
                }
            }
        }
        let mut worst = (0, "no answers");
        for (t, &(name, key, _)) in tallies.iter_mut().zip(&KINDS) {
            let s = Summary::from_samples(&mut t.latency);
            let empty = t.hits.iter().filter(|&&h| h == 0).count();
            let hits = Summary::from_samples(&mut t.hits).p50_us;
            let (errors, human) = (t.errors, s.human());
            let line = format!("{human}; hits p50 {hits}, {empty} empty, {errors} errors");
            r.row(name, line);
            let stats = json!({ "latency": s.to_json(), "hits_p50": hits, "empty": empty,
                "errors": errors });
            r.set(key, stats);
            if let Some(first) = &t.first {
                r.problem(format!("{name}: {errors} errors (first: {first})"));
            }
            if s.p99_us >= worst.0 {
                worst = (s.p99_us, name);
            }
        }
        let ok = worst.0 < 20_000 && tallies.iter().all(|t| !t.latency.is_empty());
        let (verdict, name, ms) = (pass(ok), worst.1, worst.0 as f64 / 1e3);
        let detail = format!("{verdict} (worst: {name}, p99 {ms:.1} ms)");
        r.row("target: query p99 < 20 ms", detail);
        r.set("target_query_ok", ok);
    }

    /// One query of `KINDS[kind]`, as user `i mod users`: its time (µs) and how many hits it
    /// found (`count` for `/search`, the page's length for the support API).
    async fn ask(&self, kind: usize, i: usize, rng: &mut StdRng) -> Result<(u64, u64), BoxError> {
        let (t, user) = (&self.texts, &self.users[i % self.users.len()]);
        let (word, mine) = (t.common(rng), &self.rooms[i % self.rooms.len()]);
        let q = [("q", word), ("status", "open"), ("limit", "20")];
        let (order, term, room) = match kind {
            0 => ("rank", word.to_owned(), None),
            1 => ("rank", t.rare(rng).to_owned(), None),
            2 => ("rank", format!("{word} {}", t.common(rng)), None),
            3 => ("rank", word.to_owned(), mine.choose(rng)),
            4 => ("recent", word.to_owned(), None),
            5 => return self.support("conversations", &q[..2]).await,
            _ => return self.support("search", &[q[0], q[2]]).await,
        };
        let mut filter = json!({ "limit": 10 });
        if let Some(room) = room {
            filter["rooms"] = json!([room]);
        }
        let body = json!({ "search_categories": { "room_events": {
            "search_term": term, "order_by": order, "filter": filter,
        } } });
        let (path, started) = ("/_matrix/client/v3/search", Instant::now());
        let (status, v) = user.request(Method::POST, path, &[], Some(&body)).await?;
        let took = micros(started.elapsed());
        let events = &v["search_categories"]["room_events"];
        let count = events["count"].as_u64();
        match (status, events["results"].as_array()) {
            (StatusCode::OK, Some(results)) => Ok((took, count.unwrap_or(results.len() as u64))),
            _ => Err(format!("{path} {term:?}: {status} {v}").into()),
        }
    }

    /// `GET /api/support/v1/<what>?<query>` as the support admin: its time (µs) and the length
    /// of the answer's list (`conversations` or `results`).
    async fn support(&self, what: &str, query: &[(&str, &str)]) -> Result<(u64, u64), BoxError> {
        let (path, started) = (format!("{SUPPORT}/{what}"), Instant::now());
        let (status, v) = self.desk.request(Method::GET, &path, query, None).await?;
        let took = micros(started.elapsed());
        let list = if what == "search" { "results" } else { what };
        match (status, v[list].as_array()) {
            (StatusCode::OK, Some(items)) => Ok((took, items.len() as u64)),
            _ => Err(format!("{path} {query:?}: {status} {v}").into()),
        }
    }
}

/// Rebuilds the index (step 5) and reports its size and the process's memory (step 6).
async fn reindex(operator: &Api, r: &mut Report) -> Result<(), BoxError> {
    progress("search: reindexing");
    let started = Instant::now();
    let path = format!("{STATUS}/reindex");
    match operator.request(Method::POST, &path, &[], None).await? {
        (StatusCode::ACCEPTED, _) => {}
        (status, v) => {
            r.problem(format!("reindex: {status} {v}"));
            return Ok(());
        }
    }
    let rebuild = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, _, _) = index_status(operator).await?;
        match status["reindex"]["state"].as_str() {
            Some("done") => break status["reindex"].clone(),
            Some("failed") => {
                r.problem(format!("reindex failed: {}", status["reindex"]["error"]));
                return Ok(());
            }
            _ => {}
        }
    };
    let field = |k: &str| rebuild[k].as_u64().unwrap_or(0);
    let secs = match (field("started_ms"), field("finished_ms")) {
        (a, b) if b > a && a > 0 => (b - a) as f64 / 1000.0,
        _ => started.elapsed().as_secs_f64(),
    };
    let (documents, events) = (field("documents"), field("total"));
    let (docs_rate, events_rate) = (documents as f64 / secs, events as f64 / secs);
    let ok = docs_rate >= 50_000.0;
    let of = format!("{documents} documents of {events} events in {secs:.1} s");
    let rates = format!("{docs_rate:.0} documents/s, {events_rate:.0} events/s");
    r.row("reindex", format!("{of}: {rates}"));
    let rate = format!("{} ({docs_rate:.0} documents/s)", pass(ok));
    r.row("target: reindex ≥ 50,000 messages/s", rate);
    r.set(
        "reindex",
        json!({ "seconds": secs, "documents_per_sec": docs_rate,
        "events_per_sec": events_rate, "target_ok": ok }),
    );
    let (status, _, _) = index_status(operator).await?;
    let mb = status["size_bytes"].as_f64().unwrap_or(0.0) / 1e6;
    let docs = format!("{} documents, {mb:.1} MB on disk", status["documents"]);
    r.row("index after the reindex", docs);
    r.set("index_after_reindex", status);
    if let Some((rss, hwm)) = read_rss(std::process::id()).await {
        let (rss_s, peak) = (mib(rss), mib(hwm));
        let line = format!("{rss_s} (peak {peak}; server and tool: one process)");
        r.row("RSS after the reindex", line);
        r.set("rss_kib", json!({ "after_reindex": rss, "peak": hwm }));
    }
    Ok(())
}

/// The frequent words, Spanish and English mixed, roughly most frequent first (function words
/// and the support desk's own among them).
const TOP: &str = "de que hola la el pedido y en the gracias a los order se no por un i to \
    ayuda con para you problema una mi my and is envío su es it cuenta pago lo help of for me del \
    las al this tengo please favor have pero with can número what puedo hi thanks como on está \
    not be hello sí yes when todavía still día get buenos tardes cuando need necesito quiero want \
    sin was are hace ya from just muy";
/// The support desk's vocabulary, then general words, in both languages.
const MORE: &str = "factura invoice entrega delivery producto product tarjeta card cliente \
    customer precio price tienda store devolución refund reembolso return paquete package \
    dirección address correo email teléfono phone contraseña password acceso login error fallo \
    issue cobro charge compra purchase carrito cart descuento discount cupón coupon código code \
    garantía warranty cambio exchange talla size color stock disponible available semana week \
    hora hour mañana tomorrow ayer yesterday hoy today urgente urgent cancelar cancel \
    cancelación cancellation estado status seguimiento tracking transportista courier retraso \
    delay llegado arrived recibido received roto broken dañado damaged defectuoso defective \
    incorrecto wrong falta missing cargo fee transferencia transfer banco bank saldo balance \
    suscripción subscription plan renovación renewal usuario user perfil profile aplicación app \
    página page móvil mobile mensaje message respuesta answer agente agent soporte support \
    servicio service atención queja complaint reclamación claim solicitud request información \
    information datos data confirmar confirm confirmación confirmation enviar send recibir \
    receive cambiar change actualizar update pagar pay devolver esperar wait llamar call \
    escribir write abrir open cerrar close funciona works pantalla screen batería battery \
    cargador charger cable modelo model marca brand caja box unidad unit cantidad quantity \
    importe amount iva tax gratis free rápido fast lento slow horario hours oficina office \
    almacén warehouse agotado reserva booking cita appointment técnico technician reparación \
    repair instalación installation manual instrucciones instructions bien good mal bad nuevo \
    new otro other mismo same todo all nada nothing algo something mucho much poco little más \
    more menos less antes before después after ahora now siempre always nunca never vez time \
    casa home trabajo work ciudad city calle street país country mes month año year lunes monday \
    viernes friday sábado saturday domingo sunday enero january julio july agosto august persona person nombre name apellido familia family amigo friend regalo gift cumpleaños \
    birthday navidad christmas oferta offer promoción promotion grande big pequeño small rojo \
    red azul blue negro black blanco white verde green gris grey camiseta shirt zapatos shoes \
    pantalón trousers chaqueta jacket vestido dress bolso bag reloj watch gafas glasses libro \
    book juego game ordenador computer portátil laptop impresora printer auriculares headphones \
    altavoz speaker televisor television cámara camera lavadora washer nevera fridge cafetera \
    mesa table silla chair sofá lámpara lamp colchón mattress bicicleta bike";
/// The common words of the queries, all among the first of [`TOP`].
const COMMON: &str =
    "hola pedido gracias order ayuda problema envío cuenta pago help número thanks";
/// The vocabulary's size: made-up names (products, people, streets) after the real words.
const VOCABULARY: usize = 3000;
/// Where the rarer words of the queries and the e-mail addresses' names start, by rank.
const RARE_FROM: usize = 300;
const OPENERS: &str = "Hola,|Buenos días,|Buenas tardes,|Hi,|Hello,|Hola buenas,";
const CLOSERS: &str = "Gracias.|Thanks!|Un saludo.|Muchas gracias.";
const FIRST_NAMES: &str = "ana luis maria john sarah carlos lucia david";
const DOMAINS: &str = "gmail.com hotmail.es yahoo.com outlook.com empresa.es";

/// One of the `sep`-separated items of `list`.
fn pick<'a>(list: &'a str, sep: char, rng: &mut StdRng) -> &'a str {
    list.split(sep).choose(rng).unwrap_or_default()
}

/// The vocabulary, most frequent first, and its Zipf distribution (exponent 1).
struct Texts {
    words: Vec<String>,
    zipf: WeightedIndex<f64>,
}

impl Texts {
    fn new() -> Texts {
        let mut words: Vec<String> = Vec::with_capacity(VOCABULARY);
        let mut rng = StdRng::seed_from_u64(7);
        let mut made_up = std::iter::repeat_with(|| {
            let syllables = rng.gen_range(2..=3);
            (0..syllables)
                .map(|_| {
                    let onset = pick("b c d f g l m n p r s t v z ch br tr", ' ', &mut rng);
                    let vowel = pick("a e i o u", ' ', &mut rng);
                    let coda = pick(",,,n,r,s,l", ',', &mut rng);
                    format!("{onset}{vowel}{coda}")
                })
                .collect::<String>()
        });
        let mut real = TOP.split_whitespace().chain(MORE.split_whitespace());
        while words.len() < VOCABULARY {
            let word = real
                .next()
                .map_or_else(|| made_up.next().unwrap_or_default(), str::to_owned);
            if !words.contains(&word) {
                words.push(word);
            }
        }
        let zipf = WeightedIndex::new((1..=VOCABULARY).map(|rank| 1.0 / rank as f64));
        let zipf = zipf.expect("positive weights");
        Texts { words, zipf }
    }

    fn common(&self, rng: &mut StdRng) -> &'static str {
        pick(COMMON, ' ', rng)
    }

    fn rare(&self, rng: &mut StdRng) -> &str {
        &self.words[rng.gen_range(RARE_FROM..self.words.len())]
    }

    /// A customer's message: maybe a greeting, 4 to 16 words, maybe an order number or an
    /// e-mail address, maybe thanks.
    fn message(&self, rng: &mut StdRng) -> String {
        let mut words: Vec<String> = Vec::with_capacity(20);
        if rng.gen_bool(0.3) {
            words.push(pick(OPENERS, '|', rng).to_owned());
        }
        for _ in 0..rng.gen_range(4..=16) {
            words.push(self.words[self.zipf.sample(rng)].clone());
        }
        if rng.gen_bool(0.12) {
            words.push(format!("ORD-2024-{:06}", rng.gen_range(0..1_000_000)));
        }
        if rng.gen_bool(0.05) {
            let (first, last) = (pick(FIRST_NAMES, ' ', rng), self.rare(rng));
            words.push(format!("{first}.{last}@{}", pick(DOMAINS, ' ', rng)));
        }
        let mut text = words.join(" ") + if rng.gen_bool(0.2) { "?" } else { "." };
        if rng.gen_bool(0.2) {
            text = format!("{text} {}", pick(CLOSERS, '|', rng));
        }
        text
    }
}
