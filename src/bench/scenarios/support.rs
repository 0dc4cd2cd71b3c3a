//! `support`: the support desk's conversation index and automatic assignment.
//!
//! Unlike the other scenarios this one runs Charla's own code in process, because what it
//! measures has no Client-Server API counterpart and a homeserver other than Charla has no
//! support desk: `--homeserver` is ignored.
//!
//! 1. Index: `--conversations` synthetic conversation records (varied status, assignee,
//!    labels, channel, priority, organisation, product, order, activity times) are written
//!    through `ConversationIndex::put`, the same code the desk uses, into a fresh store; then
//!    each filter of `GET /api/support/v1/conversations` is timed as the handler runs it
//!    (`ConversationIndex::list`, a page of 50), `--samples` times.
//! 2. Assignment: a real server starts on a loopback port with one online agent; a customer
//!    opens `--samples` conversations over HTTP (`createRoom` inviting `@support`), each with
//!    a first message. Timed: from the `createRoom` answer until the index shows the assignee
//!    (polled in process every 100 µs), and from the first message's answer until then (0
//!    when the assignment was already decided).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bench::BenchArgs;
use crate::bench::client::BoxError;
use crate::bench::report::Report;
use crate::bench::setup::{Ctx, progress};
use crate::bench::stats::{Summary, micros};
use crate::storage::{Batch, Store};
use crate::support::{
    Conversation, ConversationIndex, ConversationRecord,
    conversation::{Channel, Contact, Priority, Status},
    index::{Filter, PageToken, Sort},
};

const AGENTS: u64 = 20;
const PAGE: usize = 50;

pub async fn run(_ctx: &Ctx, args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.conversations.max(1);
    let dir = std::env::temp_dir().join(format!(
        "charla-bench-support-{}-{}",
        std::process::id(),
        crate::support::now_ms()
    ));
    let mut r = Report::new(
        "support",
        format!("{n} conversations, pages of {PAGE}; assignment with 1 online agent"),
    );
    let outcome = measure(&dir, n, args.samples.max(1), &mut r).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    Ok(r)
}

async fn measure(
    dir: &std::path::Path,
    n: u64,
    samples: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    let store = Store::open(&dir.join("index"), 256)?;
    let index = ConversationIndex::new(store.clone());
    progress(format!("support: indexing {n} conversations"));
    let started = Instant::now();
    let now = crate::support::now_ms();
    let changes = crate::support::changes::Changes::default();
    let held = changes.lock().await;
    let mut batch = Batch::new();
    for i in 0..n {
        index.put(&held, &mut batch, None, &synthetic(i, now));
        if i % 1000 == 999 {
            // Made durable by the last write below.
            let _ticket = store.write(std::mem::take(&mut batch))?;
        }
    }
    store.write_durable(batch).await?;
    r.row(
        "fill",
        format!("{n} records in {:.1} s", started.elapsed().as_secs_f64()),
    );
    let agent = |k: u64| format!("@agent{k}:bench");
    let page2 = {
        let f = Filter {
            status: Some(Status::Open),
            ..Default::default()
        };
        index.list(&f, Sort::Activity, PAGE, None)?.1
    };
    let cases: Vec<(&str, Filter, Sort, Option<PageToken>)> = vec![
        ("all, by activity", Filter::default(), Sort::Activity, None),
        (
            "status=open",
            Filter {
                status: Some(Status::Open),
                ..Default::default()
            },
            Sort::Activity,
            None,
        ),
        (
            "status=open, page 2",
            Filter {
                status: Some(Status::Open),
                ..Default::default()
            },
            Sort::Activity,
            page2,
        ),
        (
            "assignee=none (queue)",
            Filter {
                assignee: Some(String::new()),
                ..Default::default()
            },
            Sort::Activity,
            None,
        ),
        (
            "assignee=agent3",
            Filter {
                assignee: Some(agent(3)),
                ..Default::default()
            },
            Sort::Activity,
            None,
        ),
        (
            "agent view (mine + queue)",
            Filter {
                only_assignees: Some(vec![agent(3), String::new()]),
                ..Default::default()
            },
            Sort::Activity,
            None,
        ),
        (
            "label=label7",
            Filter {
                label: Some("label7".into()),
                ..Default::default()
            },
            Sort::Activity,
            None,
        ),
        (
            "product_id=p42",
            Filter {
                product_id: Some("p42".into()),
                ..Default::default()
            },
            Sort::Activity,
            None,
        ),
        (
            "organisation=org5&status=open",
            Filter {
                organisation: Some("org5".into()),
                status: Some(Status::Open),
                ..Default::default()
            },
            Sort::Activity,
            None,
        ),
        (
            "priority=urgent&channel=whatsapp",
            Filter {
                priority: Some(Priority::Urgent),
                channel: Some(Channel::Whatsapp),
                ..Default::default()
            },
            Sort::Activity,
            None,
        ),
        (
            "updated_since=1h ago",
            Filter {
                updated_since: Some(now - 3_600_000),
                ..Default::default()
            },
            Sort::Activity,
            None,
        ),
        (
            "status=open, by waiting time",
            Filter {
                status: Some(Status::Open),
                ..Default::default()
            },
            Sort::Waiting,
            None,
        ),
    ];
    let mut worst_p99 = 0;
    for (name, filter, sort, from) in cases {
        let mut lat = Vec::with_capacity(samples);
        let mut returned = 0;
        for _ in 0..samples {
            let t = Instant::now();
            let (page, _) = index.list(&filter, sort, PAGE, from.as_ref())?;
            lat.push(micros(t.elapsed()));
            returned = page.len();
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
    drop(index);
    drop(store);
    assignment(dir, samples, r).await
}

/// A varied synthetic conversation.
fn synthetic(i: u64, now: u64) -> ConversationRecord {
    let status = match i % 10 {
        0 => Status::Closed,
        1 | 2 => Status::Pending,
        _ => Status::Open,
    };
    let assignee = (!i.is_multiple_of(5)).then(|| format!("@agent{}:bench", i % AGENTS));
    let activity = now - (i * 7_919) % (30 * 86_400_000);
    ConversationRecord {
        room_id: format!("!conv{i}:bench"),
        content: Conversation {
            status,
            priority: [
                Priority::Low,
                Priority::Medium,
                Priority::High,
                Priority::Urgent,
            ][(i % 4) as usize],
            labels: vec![format!("label{}", i % 50)],
            assignee,
            channel: [Channel::Whatsapp, Channel::Web, Channel::Matrix][(i % 3) as usize],
            contact: Contact {
                name: Some(format!("Customer {i}")),
                organisation: Some(format!("org{}", i % 500)),
                ..Default::default()
            },
            product_id: Some(format!("p{}", i % 5_000)),
            order_id: Some(format!("o{i}")),
            first_customer_message_ts: Some(activity - 60_000),
            ..Default::default()
        },
        created_ts: activity - 120_000,
        last_activity_ts: activity,
        waiting_since: i.is_multiple_of(3).then_some(activity - 30_000),
        messages: i % 40,
        ..Default::default()
    }
}

async fn assignment(dir: &std::path::Path, samples: usize, r: &mut Report) -> Result<(), BoxError> {
    progress("support: starting a server with one agent");
    let config = crate::config::Config::from_toml(&format!(
        "server_name = \"bench\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\npath = {:?}\n\
         [limits]\nsend_per_second = 1000000.0\nsend_burst = 1000000\n\
         [presence]\noffline_timeout_secs = 3600\nidle_timeout_secs = 3600\n\
         [logging]\nfilter = \"warn\"\n\
         [support]\ngreeting = \"Hello\"\n\
         [[support.agents]]\nuser = \"@agent:bench\"\ncapacity = 100000\n",
        dir.join("server")
    ))?;
    let server = crate::server::start(config).await?;
    let result = assign_samples(&server, samples, r).await;
    server.stop().await;
    result
}

async fn assign_samples(
    server: &crate::server::RunningServer,
    samples: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    let base = server.base_url();
    let call = |method: reqwest::Method, path: String, token: Option<String>, body: Value| {
        let req = http.request(method, format!("{base}{path}")).json(&body);
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        async move {
            let res = req.send().await?;
            let status = res.status();
            let v: Value = res.json().await?;
            if !status.is_success() {
                return Err(format!("{path}: {status} {v}").into());
            }
            Ok::<Value, BoxError>(v)
        }
    };
    let register = |name: &'static str| {
        call(
            reqwest::Method::POST,
            "/_matrix/client/v3/register".into(),
            None,
            json!({ "username": name, "password": "bench-password", "auth": { "type": "m.login.dummy" } }),
        )
    };
    let agent = register("agent").await?["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let customer = register("customer").await?["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    call(
        reqwest::Method::PUT,
        "/_matrix/client/v3/presence/@agent:bench/status".into(),
        Some(agent),
        json!({ "presence": "online" }),
    )
    .await?;
    let index = &server.services.support.index;
    let (mut from_open, mut from_message) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let created = call(
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom".into(),
            Some(customer.clone()),
            json!({ "invite": ["@support:bench"] }),
        )
        .await?;
        let opened = Instant::now();
        let room = created["room_id"].as_str().unwrap_or_default().to_owned();
        call(
            reqwest::Method::PUT,
            format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/first{i}"),
            Some(customer.clone()),
            json!({ "msgtype": "m.text", "body": "Hola, necesito ayuda" }),
        )
        .await?;
        let sent = Instant::now();
        let deadline = opened + Duration::from_secs(10);
        let assigned = loop {
            if index
                .get(&room)?
                .is_some_and(|c| c.content.assignee.is_some())
            {
                break Instant::now();
            }
            if Instant::now() > deadline {
                r.problem(format!("{room} not assigned within 10 s"));
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_micros(100)).await;
        };
        from_open.push(micros(assigned - opened));
        from_message.push(micros(assigned.saturating_duration_since(sent)));
    }
    let open = Summary::from_samples(&mut from_open);
    let message = Summary::from_samples(&mut from_message);
    r.row("assigned after createRoom", open.human());
    r.row("assigned after first message", message.human());
    r.set("assign_after_open", open.to_json());
    r.set("assign_after_first_message", message.to_json());
    Ok(())
}
