//! `charla bench`: a load tool that speaks only the Matrix Client-Server API.
//!
//! Because it uses nothing but public C-S endpoints over HTTP, the same tool
//! can be pointed at Charla or at Synapse (or any other homeserver) and the
//! numbers compared directly. See `docs/bench.md` for what each scenario
//! measures and how to read the results.
//!
//! Layout: [`client`], [`register`] and [`session`] form a tiny typed C-S
//! client, [`setup`] creates accounts
//! with bounded concurrency, [`scenarios`] holds one module per scenario,
//! [`stats`] computes percentiles and [`report`] prints the results.

mod client;
mod register;
mod report;
mod scenarios;
mod session;
mod setup;
mod stats;

use client::BoxError;
use report::{Report, mib, read_rss, render_table};
use serde_json::{Map, Value, json};
use setup::{Ctx, progress, random_prefix};

/// Which scenario(s) to run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Sustained message sends from many clients.
    Send,
    /// Send-to-/sync delivery latency with many idle long-polling clients.
    SyncLatency,
    /// Full initial /sync of a user in many rooms.
    InitialSync,
    /// Backwards /messages pagination through a long room.
    Messages,
    /// /messages, /relations and /threads through a room full of edits, reactions and threads
    /// (not part of `all`).
    Relations,
    /// /keys/query and /keys/claim over 100 devices.
    Keys,
    /// Upload and download of large files (not part of `all`).
    Media,
    /// Event delivery to an appservice the tool plays, live and after an outage (not part of
    /// `all`; needs `--registration`).
    Appservice,
    /// The support desk's conversation index and assignment, in process (not part of `all`).
    Support,
    /// All of the above, in that order.
    All,
    /// The WhatsApp bridge, inbound and outbound, against its own in-process Charla and the
    /// Cloud API simulator (ignores --homeserver; --clients customers, --messages each way;
    /// not part of `all`).
    Whatsapp,
    /// Backup and restore of a store of --messages messages, and sends during a backup, against
    /// its own in-process Charla (ignores --homeserver; not part of `all`).
    Backup,
    /// The web chat: --clients widget WebSockets held open (the server's memory), the delay of
    /// an agent's answer to its socket (--samples), customer messages per second (--duration),
    /// against its own `charla serve` child process (ignores --homeserver; not part of `all`).
    Webchat,
    /// Full-text search over --messages messages in --rooms support conversations of --clients
    /// users: query latency by kind (--samples each), indexing lag during the fill, a full
    /// reindex, the index's size; against its own in-process Charla (ignores --homeserver; not
    /// part of `all`; the figure is --messages 1000000 --rooms 10000).
    Search,
    /// Federation between two local servers: joining a room of 1,000 members and 10,000 state
    /// events on the other, --messages relayed at 1,000/s (delivery delay), and caught up after
    /// the peer's restart; its own in-process servers (ignores --homeserver; not part of `all`).
    Federation,
    /// The email bridge: --messages customer mails in (threads of 10, over --clients SMTP
    /// connections) into conversations, --messages agent answers out to a local relay, and a
    /// 25 MB attachment each way; its own in-process Charla (ignores --homeserver; not part of
    /// `all`).
    Email,
}

/// Flags of `charla bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Base URL of the homeserver under test (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    pub homeserver: String,

    /// Scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,

    /// send: number of concurrent sending clients (distinct users).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,

    /// send: how long to send for, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,

    /// send: make all clients send into one shared room instead of one room each.
    #[arg(long)]
    pub shared_room: bool,

    /// sync-latency: number of idle clients long-polling /sync in the room.
    #[arg(long, default_value_t = 1000)]
    pub sync_clients: usize,

    /// sync-latency: how many of the long-polling clients are in the sender's room and
    /// receive each message; the others stay connected and idle (0 = all of them).
    #[arg(long, default_value_t = 10)]
    pub receivers: usize,

    /// sync-latency: number of messages whose delivery is measured; search: queries of each
    /// kind.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,

    /// initial-sync: number of rooms the syncing user is in; search: support conversations.
    #[arg(long, default_value_t = 500)]
    pub rooms: usize,

    /// messages: number of messages in the paginated room; backup, search: messages in the
    /// store.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,

    /// messages: `limit` of each /messages request.
    #[arg(long, default_value_t = 100)]
    pub page: u32,

    /// media: number of files uploaded, then downloaded, one at a time.
    #[arg(long, default_value_t = 20)]
    pub media_uploads: usize,

    /// media: size of each file, in bytes.
    #[arg(long, default_value_t = 10_000_000)]
    pub media_bytes: usize,

    /// appservice: the registration file the homeserver loads; the tool listens on its `url`.
    #[arg(long)]
    pub registration: Option<std::path::PathBuf>,

    /// appservice: events queued while the appservice is down, then drained.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: usize,

    /// whatsapp: the number's throughput ceiling in sends a second, for both the bridge's
    /// pacing and the simulator's `130429`. Above Meta's 1,000 it shows the bridge's headroom.
    #[arg(long, default_value_t = 1000.0)]
    pub ceiling: f64,

    /// support: number of conversations in the index.
    #[arg(long, default_value_t = 100_000)]
    pub conversations: u64,

    /// PID of the homeserver process; its VmRSS is read from /proc before and after.
    #[arg(long)]
    pub pid: Option<u32>,

    /// Registration token, for servers whose registration requires one.
    #[arg(long)]
    pub registration_token: Option<String>,

    /// Also print all results as one JSON object at the end.
    #[arg(long)]
    pub json: bool,

    /// Username prefix for the bench users [default: random, so runs never collide].
    #[arg(long)]
    pub user_prefix: Option<String>,
}

impl BenchArgs {
    fn scenarios(&self) -> Vec<Scenario> {
        match self.scenario {
            Scenario::All => vec![
                Scenario::Send,
                Scenario::SyncLatency,
                Scenario::InitialSync,
                Scenario::Messages,
                Scenario::Keys,
            ],
            s => vec![s],
        }
    }
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Send => "send",
        Scenario::SyncLatency => "sync-latency",
        Scenario::InitialSync => "initial-sync",
        Scenario::Messages => "messages",
        Scenario::Relations => "relations",
        Scenario::Keys => "keys",
        Scenario::Media => "media",
        Scenario::Appservice => "appservice",
        Scenario::Support => "support",
        Scenario::All => "all",
        Scenario::Whatsapp => "whatsapp",
        Scenario::Backup => "backup",
        Scenario::Webchat => "webchat",
        Scenario::Search => "search",
        Scenario::Federation => "federation",
        Scenario::Email => "email",
    }
}

/// Runs the selected scenario(s), prints the results table (and JSON with
/// `--json`) to stdout, and returns an error if any scenario failed or a
/// correctness check (room count, event count) did not hold.
pub async fn run(args: BenchArgs) -> Result<(), BoxError> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        progress("warning: current-thread tokio runtime; the tool may become the bottleneck");
    }
    if args.scenario == Scenario::Whatsapp {
        // Self-contained: it starts its own Charla and simulator.
        let report = scenarios::whatsapp::run(&args)
            .await
            .unwrap_or_else(|e| Report::failed("whatsapp", &e.to_string()));
        print!("{}", render_table(&[], std::slice::from_ref(&report)));
        if !report.problems.is_empty() {
            return Err(report.problems.join("; ").into());
        }
        return Ok(());
    }
    let prefix = args.user_prefix.clone().unwrap_or_else(random_prefix);
    let max_users = args.clients.max(args.sync_clients).max(1);
    let ctx = Ctx::new(
        &args.homeserver,
        max_users,
        prefix.clone(),
        args.registration_token.clone(),
    )?;
    // `support`, `backup`, `webchat` and `search` bring their own server.
    let versions = if matches!(
        args.scenario,
        Scenario::Support
            | Scenario::Backup
            | Scenario::Webchat
            | Scenario::Search
            | Scenario::Federation
            | Scenario::Email
    ) {
        Ok(Vec::new())
    } else {
        ctx.homeserver(0).versions().await
    };
    let versions = versions.map_err(|e| {
        format!(
            "{} does not answer /_matrix/client/versions: {e}",
            args.homeserver
        )
    })?;
    progress(format!(
        "homeserver {} supports C-S API {}; user prefix {prefix}",
        args.homeserver,
        versions.last().map_or("(none listed)", String::as_str)
    ));

    let rss_before = match args.pid {
        Some(pid) => Some(
            read_rss(pid)
                .await
                .ok_or_else(|| format!("cannot read VmRSS of pid {pid} from /proc"))?,
        ),
        None => None,
    };

    let mut reports = Vec::new();
    let mut rss_after_each = Map::new();
    for s in args.scenarios() {
        let name = scenario_name(s);
        progress(format!("scenario {name}: setting up"));
        let result = match s {
            Scenario::Send => scenarios::send::run(&ctx, &args).await,
            Scenario::SyncLatency => scenarios::sync_latency::run(&ctx, &args).await,
            Scenario::InitialSync => scenarios::initial_sync::run(&ctx, &args).await,
            Scenario::Messages => scenarios::messages::run(&ctx, &args).await,
            Scenario::Relations => scenarios::relations::run(&ctx, &args).await,
            Scenario::Keys => scenarios::keys::run(&ctx, &args).await,
            Scenario::Media => scenarios::media::run(&ctx, &args).await,
            Scenario::Appservice => scenarios::appservice::run(&ctx, &args).await,
            Scenario::Support => scenarios::support::run(&ctx, &args).await,
            Scenario::Backup => scenarios::backup::run(&args).await,
            Scenario::Webchat => scenarios::webchat::run(&args).await,
            Scenario::Search => scenarios::search::run(&ctx, &args).await,
            Scenario::Federation => scenarios::federation::run(&args).await,
            Scenario::Email => scenarios::email::run(&args).await,
            Scenario::All | Scenario::Whatsapp => {
                unreachable!("expanded by BenchArgs::scenarios / run on its own")
            }
        };
        let mut report = result.unwrap_or_else(|e| Report::failed(name, &e.to_string()));
        if let Some(pid) = args.pid
            && let Some((rss, hwm)) = read_rss(pid).await
        {
            report.row(
                "server RSS after",
                format!("{} (peak {})", mib(rss), mib(hwm)),
            );
            report.set("rss_after_kib", rss);
            rss_after_each.insert(name.into(), json!(rss));
        }
        progress(format!("scenario {name}: done"));
        reports.push(report);
    }

    let mut header = vec![
        ("homeserver".to_string(), args.homeserver.clone()),
        ("user prefix".to_string(), prefix.clone()),
    ];
    let mut rss_json = Value::Null;
    if let (Some(pid), Some((before, _))) = (args.pid, rss_before) {
        let after = read_rss(pid).await;
        let after_s = after.map_or("unavailable (process gone?)".to_string(), |(rss, hwm)| {
            format!("{} (peak {})", mib(rss), mib(hwm))
        });
        header.push((
            "server RSS".into(),
            format!("before {}, after {after_s}", mib(before)),
        ));
        rss_json = json!({
            "pid": pid,
            "before_kib": before,
            "after_kib": after.map(|a| a.0),
            "peak_kib": after.map(|a| a.1),
            "after_scenario_kib": rss_after_each,
        });
    }
    print!("{}", render_table(&header, &reports));

    let problems: Vec<String> = reports
        .iter()
        .flat_map(|r| r.problems.iter().map(move |p| format!("{}: {p}", r.name)))
        .collect();
    if args.json {
        let scenarios: Map<String, Value> = reports
            .iter()
            .map(|r| (r.name.to_string(), r.to_json()))
            .collect();
        let out = json!({
            "homeserver": args.homeserver,
            "server_versions": versions,
            "user_prefix": prefix,
            "rss": rss_json,
            "scenarios": scenarios,
            "problems": problems,
        });
        println!("{out}");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} problem(s): {}", problems.len(), problems.join("; ")).into())
    }
}
