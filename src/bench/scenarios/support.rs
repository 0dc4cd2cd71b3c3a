//! `support`: the support desk's conversation listings and automatic assignment.
//!
//! Like `whatsapp` it brings its own system: a Charla in process, with a desk configured,
//! in a temporary data folder (`--homeserver` is ignored: no other homeserver has the desk).
//! It speaks to it only over HTTP, as agents and customers do: the Client-Server API and
//! `/api/support/v1/`.
//!
//! 1. Listings: a desk admin opens `--conversations` conversations through
//!    `POST /api/support/v1/conversations` (varied channel, priority, labels, organisation,
//!    product and order; [`FILL_IN_FLIGHT`] at a time) while 20 agents are online, so the
//!    desk assigns them round-robin, then a fifth more with every agent offline, which stay in
//!    the queue. A tenth are closed and a fifth set pending (`PATCH`), and in a third the
//!    customer writes, so they wait for an answer. Then each filter of
//!    `GET /api/support/v1/conversations` is timed over HTTP (a page of [`PAGE`]),
//!    `--samples` times; "agent view" is an agent's own listing (theirs and the queue).
//! 2. Assignment: a second server with one online agent; a customer opens `--samples`
//!    conversations (`createRoom` inviting `@support`, then a first message). Timed: from the
//!    `createRoom` answer, and from the first message's answer (0 when the assignment came
//!    first), until the customer's `/sync` shows the conversation with its assignee.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, TryStreamExt, stream};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::bench::BenchArgs;
use crate::bench::client::BoxError;
use crate::bench::report::Report;
use crate::bench::setup::{Ctx, progress};
use crate::bench::stats::{Summary, micros};
use crate::server::RunningServer;

/// Agents of the listing desk.
const AGENTS: usize = 20;
/// Customers the listing desk's conversations are spread over.
const CUSTOMERS: usize = 32;
/// Requests in flight while the conversations are filled in.
const FILL_IN_FLIGHT: usize = 32;
/// Conversations per listing page.
const PAGE: usize = 50;
const API: &str = "/api/support/v1";
/// The state event of a conversation, as the desk documents it.
const CONVERSATION: &str = "io.charla.conversation";

pub async fn run(_ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let n = usize::try_from(args.conversations.max(1))?;
    let dir = std::env::temp_dir().join(format!(
        "charla-bench-support-{:08x}",
        rand::random::<u32>()
    ));
    let mut r = Report::new(
        "support",
        format!("{n} conversations, pages of {PAGE}; assignment with 1 online agent"),
    );
    let samples = args.samples.max(1);
    let mut outcome = listings(&dir.join("listings"), n, samples, &mut r).await;
    if outcome.is_ok() {
        outcome = assignment(&dir.join("assignment"), samples, &mut r).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    Ok(r)
}

/// A user of the server under test, over HTTP.
#[derive(Clone)]
struct User {
    http: reqwest::Client,
    base: Arc<str>,
    id: String,
    token: Arc<str>,
}

impl User {
    /// Registers `name` (open registration, `m.login.dummy`).
    async fn register(http: &reqwest::Client, base: &str, name: &str) -> Result<User, BoxError> {
        let body = json!({
            "username": name, "password": "bench-password", "auth": { "type": "m.login.dummy" },
        });
        let res = http
            .post(format!("{base}/_matrix/client/v3/register"))
            .json(&body)
            .send()
            .await?;
        let v: Value = answer(res, "register").await?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Ok(User {
            http: http.clone(),
            base: base.into(),
            id: field("user_id"),
            token: field("access_token").into(),
        })
    }

    /// Calls `path` (below the server's base URL) and returns its JSON answer; a non-2xx
    /// answer is an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BoxError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&*self.token)
            .timeout(Duration::from_secs(120));
        if let Some(body) = body {
            req = req.json(&body);
        }
        answer(req.send().await?, path).await
    }

    async fn set_presence(&self, presence: &str) -> Result<(), BoxError> {
        let path = format!("/_matrix/client/v3/presence/{}/status", enc(&self.id));
        let body = json!({ "presence": presence });
        self.call(Method::PUT, &path, Some(body)).await.map(drop)
    }

    async fn send_text(&self, room: &str, txn: &str, text: &str) -> Result<(), BoxError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room)
        );
        let body = json!({ "msgtype": "m.text", "body": text });
        self.call(Method::PUT, &path, Some(body)).await.map(drop)
    }
}

async fn answer(res: reqwest::Response, what: &str) -> Result<Value, BoxError> {
    let status = res.status();
    let v: Value = res.json().await?;
    if !status.is_success() {
        return Err(format!("{what}: {status} {v}").into());
    }
    Ok(v)
}

/// A path segment or query value, percent-encoded (all but RFC 3986's unreserved bytes).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Milliseconds since the Unix epoch (the server runs on this machine's clock too).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts a Charla in `dir` with this `[support]` section and everything else out of the way
/// (no send limits, presence that does not time out during the run).
async fn start_server(dir: &Path, support: &str) -> Result<RunningServer, BoxError> {
    let config = crate::config::Config::from_toml(&format!(
        "server_name = \"bench\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\npath = {dir:?}\n\
         [limits]\nsend_per_second = 1000000.0\nsend_burst = 1000000\n\
         [presence]\noffline_timeout_secs = 3600\nidle_timeout_secs = 3600\n\
         [logging]\nfilter = \"warn\"\n\
         [support]\n{support}"
    ))?;
    Ok(crate::server::start(config).await?)
}

fn agent_name(k: usize) -> String {
    format!("agent{k}")
}

async fn listings(dir: &Path, n: usize, samples: usize, r: &mut Report) -> Result<(), BoxError> {
    progress("support: starting a desk with 20 agents");
    let agents: String = (0..AGENTS)
        .map(|k| {
            format!(
                "[[support.agents]]\nuser = \"@{}:bench\"\ncapacity = 1000000\n",
                agent_name(k)
            )
        })
        .collect();
    let support = format!("greeting = \"\"\nadmins = [\"@admin:bench\"]\n{agents}");
    let server = start_server(dir, &support).await?;
    let result = fill_and_list(&server, n, samples, r).await;
    server.stop().await;
    result
}

/// The desk's users: its admin, its agents and the customers.
struct People {
    admin: User,
    agents: Vec<User>,
    customers: Vec<User>,
}

async fn fill_and_list(
    server: &RunningServer,
    n: usize,
    samples: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    let base = server.base_url();
    let register = |name: String| {
        let (http, base) = (&http, &base);
        async move { User::register(http, base, &name).await }
    };
    let people = People {
        admin: register("admin".into()).await?,
        agents: stream::iter((0..AGENTS).map(agent_name))
            .then(register)
            .try_collect()
            .await?,
        customers: stream::iter((0..CUSTOMERS).map(|k| format!("customer{k}")))
            .then(register)
            .try_collect()
            .await?,
    };
    progress(format!(
        "support: opening {n} conversations over the support API"
    ));
    let started = Instant::now();
    let updated_since = fill(&people, n).await?;
    r.row(
        "fill",
        format!(
            "{n} conversations in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    time_listings(&people, updated_since, samples, r).await
}

/// Opens the conversations: four fifths while the agents are online (assigned round-robin),
/// the rest with every agent offline (the queue); then closes, sets pending and has customers
/// write in some. Returns the server time when half of them had been opened, for the
/// `updated_since` listing.
async fn fill(people: &People, n: usize) -> Result<u64, BoxError> {
    let assigned = n - n / 5;
    let set_presence = |presence: &'static str| {
        stream::iter(&people.agents)
            .map(move |agent| agent.set_presence(presence))
            .buffer_unordered(FILL_IN_FLIGHT)
            .try_collect::<Vec<()>>()
    };
    set_presence("online").await?;
    let rooms = Mutex::new(vec![String::new(); n]);
    let open = |i: usize| {
        let rooms = &rooms;
        async move {
            let body = new_conversation(i, &people.customers[i % CUSTOMERS]);
            let path = format!("{API}/conversations");
            let created = people.admin.call(Method::POST, &path, Some(body)).await?;
            rooms.lock()[i] = created["room_id"].as_str().unwrap_or_default().to_owned();
            Ok::<_, BoxError>(())
        }
    };
    let half = n / 2;
    run_bounded(0..half.min(assigned), open).await?;
    let updated_since = now_ms();
    run_bounded(half.min(assigned)..assigned, open).await?;
    set_presence("offline").await?;
    run_bounded(assigned..n, open).await?;
    let rooms = rooms.into_inner();
    let vary = |i: usize| {
        let room = &rooms[i];
        async move { vary_conversation(people, i, room).await }
    };
    run_bounded(0..n, vary).await?;
    Ok(updated_since)
}

/// Runs `f` over `range`, [`FILL_IN_FLIGHT`] at a time, stopping at the first error.
async fn run_bounded<F, Fut>(range: std::ops::Range<usize>, f: F) -> Result<(), BoxError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    stream::iter(range)
        .map(f)
        .buffer_unordered(FILL_IN_FLIGHT)
        .try_collect()
        .await
}

/// The `i`th conversation as the admin opens it for `customer`.
fn new_conversation(i: usize, customer: &User) -> Value {
    let channel = ["whatsapp", "web", "matrix"][i % 3];
    let priority = ["low", "medium", "high", "urgent"][i % 4];
    json!({
        "participants": [customer.id],
        "channel": channel,
        "priority": priority,
        "labels": [format!("label{}", i % 50)],
        "contact": { "name": format!("Customer {i}"), "organisation": format!("org{}", i % 500) },
        "product_id": format!("p{}", i % 5_000),
        "order_id": format!("o{i}"),
    })
}

/// Closes a tenth of the conversations and sets a fifth pending; in a third the customer
/// joins and writes, so the conversation waits for an answer.
async fn vary_conversation(people: &People, i: usize, room: &str) -> Result<(), BoxError> {
    let status = match i % 10 {
        0 => Some("closed"),
        1 | 2 => Some("pending"),
        _ => None,
    };
    if let Some(status) = status {
        let path = format!("{API}/conversations/{}", enc(room));
        let body = json!({ "status": status });
        people.admin.call(Method::PATCH, &path, Some(body)).await?;
    }
    if i.is_multiple_of(3) {
        let customer = &people.customers[i % CUSTOMERS];
        let path = format!("/_matrix/client/v3/join/{}", enc(room));
        customer.call(Method::POST, &path, Some(json!({}))).await?;
        customer
            .send_text(room, &format!("first{i}"), "Hola, necesito ayuda")
            .await?;
    }
    Ok(())
}

/// Times each listing, `samples` times, and reports them.
async fn time_listings(
    people: &People,
    updated_since: u64,
    samples: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    let page2 = list(&people.admin, "&status=open").await?["next"]
        .as_str()
        .map(|next| format!("&status=open&from={}", enc(next)))
        .ok_or("status=open has a single page: give more --conversations")?;
    let agent3 = &people.agents[3];
    let by_admin = [
        ("all, by activity", String::new()),
        ("status=open", "&status=open".into()),
        ("status=open, page 2", page2),
        ("assignee=none (queue)", "&assignee=none".into()),
        ("assignee=agent3", format!("&assignee={}", enc(&agent3.id))),
        ("label=label7", "&label=label7".into()),
        ("product_id=p42", "&product_id=p42".into()),
        (
            "organisation=org5&status=open",
            "&organisation=org5&status=open".into(),
        ),
        (
            "priority=urgent&channel=whatsapp",
            "&priority=urgent&channel=whatsapp".into(),
        ),
        (
            "updated_since=half-way",
            format!("&updated_since={updated_since}"),
        ),
        (
            "status=open, by waiting time",
            "&status=open&sort=waiting".into(),
        ),
    ];
    let cases = by_admin
        .into_iter()
        .map(|(name, query)| (name, &people.admin, query))
        // An agent's own listing: theirs and the queue.
        .chain([("agent view (mine + queue)", agent3, String::new())]);
    let mut worst_p99 = 0;
    for (name, who, query) in cases {
        let mut lat = Vec::with_capacity(samples);
        let mut returned = 0;
        for _ in 0..samples {
            let t = Instant::now();
            let page = list(who, &query).await?;
            lat.push(micros(t.elapsed()));
            returned = page["conversations"].as_array().map_or(0, Vec::len);
        }
        let s = Summary::from_samples(&mut lat);
        worst_p99 = worst_p99.max(s.p99_us);
        r.row(format!("list {name} ({returned})"), s.human());
        r.set(&format!("list {name}"), s.to_json());
        if returned == 0 {
            r.problem(format!("{name}: empty page"));
        }
    }
    r.set("list_worst_p99_ms", worst_p99 as f64 / 1000.0);
    Ok(())
}

/// A page of the conversations `who` sees, with these query parameters.
async fn list(who: &User, query: &str) -> Result<Value, BoxError> {
    let path = format!("{API}/conversations?limit={PAGE}{query}");
    who.call(Method::GET, &path, None).await
}

async fn assignment(dir: &Path, samples: usize, r: &mut Report) -> Result<(), BoxError> {
    progress("support: starting a desk with one agent");
    let support =
        "greeting = \"Hello\"\n[[support.agents]]\nuser = \"@agent:bench\"\ncapacity = 100000\n";
    let server = start_server(dir, support).await?;
    let result = assign_samples(&server, samples, r).await;
    server.stop().await;
    result
}

/// When the customer's `/sync` first showed each room's conversation with an assignee.
#[derive(Default)]
struct Assigned {
    at: Mutex<HashMap<String, Instant>>,
    changed: Notify,
}

impl Assigned {
    /// Waits until `room` is assigned, at most `deadline`.
    async fn wait(&self, room: &str, deadline: Instant) -> Option<Instant> {
        loop {
            let changed = self.changed.notified();
            if let Some(at) = self.at.lock().get(room) {
                return Some(*at);
            }
            if tokio::time::timeout_at(deadline.into(), changed)
                .await
                .is_err()
            {
                return None;
            }
        }
    }
}

/// Long-polls the customer's `/sync` for conversation state with an assignee, recording when
/// each room's first arrived.
async fn watch_assignments(customer: User, assigned: Arc<Assigned>) -> Result<(), BoxError> {
    let filter = enc(&json!({
        "room": {
            "timeline": { "types": [CONVERSATION], "limit": 50 },
            "state": { "types": [CONVERSATION] },
            "ephemeral": { "types": [] },
            "account_data": { "types": [] },
        },
        "presence": { "types": [] },
        "account_data": { "types": [] },
    })
    .to_string());
    let mut since = customer
        .call(
            Method::GET,
            &format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"),
            None,
        )
        .await?["next_batch"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    loop {
        let path = format!(
            "/_matrix/client/v3/sync?timeout=30000&filter={filter}&since={}",
            enc(&since)
        );
        let body = customer.call(Method::GET, &path, None).await?;
        let now = Instant::now();
        if let Some(rooms) = body["rooms"]["join"].as_object() {
            let mut at = assigned.at.lock();
            for (room, joined) in rooms {
                let events = ["state", "timeline"]
                    .into_iter()
                    .filter_map(|part| joined[part]["events"].as_array())
                    .flatten();
                let with_assignee = events
                    .into_iter()
                    .any(|e| e["type"] == CONVERSATION && e["content"]["assignee"].is_string());
                if with_assignee {
                    at.entry(room.clone()).or_insert(now);
                }
            }
        }
        assigned.changed.notify_waiters();
        since = body["next_batch"].as_str().unwrap_or_default().to_owned();
    }
}

async fn assign_samples(
    server: &RunningServer,
    samples: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    let base = server.base_url();
    let agent = User::register(&http, &base, "agent").await?;
    let customer = User::register(&http, &base, "customer").await?;
    agent.set_presence("online").await?;
    let assigned = Arc::new(Assigned::default());
    let watcher = tokio::spawn(watch_assignments(customer.clone(), assigned.clone()));
    let (mut from_open, mut from_message) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let body = json!({ "invite": ["@support:bench"] });
        let created = customer
            .call(Method::POST, "/_matrix/client/v3/createRoom", Some(body))
            .await?;
        let opened = Instant::now();
        let room = created["room_id"].as_str().unwrap_or_default().to_owned();
        customer
            .send_text(&room, &format!("first{i}"), "Hola, necesito ayuda")
            .await?;
        let sent = Instant::now();
        let deadline = opened + Duration::from_secs(10);
        let Some(at) = assigned.wait(&room, deadline).await else {
            r.problem(format!("{room} not assigned within 10 s"));
            continue;
        };
        from_open.push(micros(at.saturating_duration_since(opened)));
        from_message.push(micros(at.saturating_duration_since(sent)));
    }
    watcher.abort();
    let open = Summary::from_samples(&mut from_open);
    let message = Summary::from_samples(&mut from_message);
    r.row("assigned after createRoom", open.human());
    r.row("assigned after first message", message.human());
    r.set("assign_after_open", open.to_json());
    r.set("assign_after_first_message", message.to_json());
    Ok(())
}
