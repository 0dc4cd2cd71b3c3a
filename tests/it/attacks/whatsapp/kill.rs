//! `kill -9` of the real binary, again and again, during webhooks, agent sends and statuses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use whatsapp::sim::{SimConfig, Simulator};

use super::{bot_client, bridge_config, call, portals_by_customer, try_portals, wait_texts};
use crate::common::process::{self, Process, free_port};
use crate::common::{Client, V3, enc};
use crate::whatsapp_bridge::{text, wait_for};

/// Customers that first write in each killed cycle, so that portals are being created when
/// the process dies.
const NEW_PER_CYCLE: usize = 4;
/// Killed cycles; one more runs to the end.
const KILLS: usize = 12;
/// How long after the new customers' webhooks were acknowledged each cycle is killed: at once
/// (portals being created) to a while later (agents' messages and statuses under way).
const KILL_AFTER_MS: [u64; KILLS] = [0, 5, 10, 20, 40, 60, 90, 120, 160, 200, 250, 300];
/// Messages each known customer writes per cycle.
const PER_CYCLE: usize = 2;

/// One customer as the test drives them: what Meta acknowledged, in order, and the message
/// whose webhook got no 200 (posted again, as Meta does, before any later one).
struct Writer {
    phone: String,
    next: usize,
    unacked: Option<(String, String, String)>,
    acked: Vec<String>,
}

impl Writer {
    /// Writes up to `count` messages; stops at the first webhook without a 200.
    async fn write(mut self, sim: Simulator, hook: String, count: usize) -> Self {
        let http = reqwest::Client::new();
        if let Some((body, signature, text)) = self.unacked.take() {
            let answer = http
                .post(&hook)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", &signature)
                .body(body.clone())
                .send()
                .await;
            if !answer.is_ok_and(|a| a.status() == 200) {
                self.unacked = Some((body, signature, text));
                return self;
            }
            self.acked.push(text);
        }
        for _ in 0..count {
            let text_body = format!("{} m{}", self.phone, self.next);
            self.next += 1;
            let (_, hook) = sim
                .customer_says(&self.phone, &self.phone, None, false, text(&text_body))
                .await
                .unwrap();
            if hook.status != 200 {
                self.unacked = Some((hook.body, hook.signature, text_body));
                return self;
            }
            self.acked.push(text_body);
        }
        self
    }
}

/// The agent as the test drives them: joins every portal it is invited to, writes in each.
#[derive(Default)]
struct Agent {
    /// Portal room → customer.
    rooms: BTreeMap<String, String>,
    joined: HashSet<String>,
    sent: HashMap<String, usize>,
    /// Sends without an answer: (room, txn, body), sent again with the same txnId.
    unanswered: Vec<(String, String, String)>,
    /// (room, event id, body) of every send answered 200.
    acked: Vec<(String, String, String)>,
}

impl Agent {
    /// One pass: new portals joined, then one message in every joined portal, all at once (so
    /// that many are on their way to WhatsApp when the process dies). `false` once the server
    /// is gone.
    async fn pass(&mut self, agent: &Client, bot: &Client) -> bool {
        let mut sends = std::mem::take(&mut self.unanswered);
        if sends.is_empty() {
            let Some(portals) = try_portals(bot, &self.rooms).await else {
                return false;
            };
            for (customer, rooms) in portals {
                for room in rooms {
                    self.rooms.entry(room).or_insert_with(|| customer.clone());
                }
            }
            for (room, customer) in &self.rooms {
                if !self.joined.contains(room) {
                    let path = format!("{V3}/join/{}", enc(room));
                    match call(agent, reqwest::Method::POST, &path, Some(json!({}))).await {
                        Some((200, _)) => {
                            self.joined.insert(room.clone());
                        }
                        Some(_) => continue, // not invited yet
                        None => return false,
                    }
                }
                let n = self.sent.entry(room.clone()).or_default();
                *n += 1;
                sends.push((
                    room.clone(),
                    format!("t{customer}-{n}"),
                    format!("a {customer} {n}"),
                ));
            }
        }
        if sends.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let answers = futures_util::future::join_all(sends.iter().map(|(room, txn, body)| {
            let path = format!("{V3}/rooms/{}/send/m.room.message/{txn}", enc(room));
            let content = json!({"msgtype": "m.text", "body": body});
            async move { call(agent, reqwest::Method::PUT, &path, Some(content)).await }
        }))
        .await;
        for ((room, txn, body), answer) in sends.into_iter().zip(answers) {
            match answer {
                Some((200, answer)) => {
                    let event = answer["event_id"].as_str().unwrap().to_owned();
                    self.acked.push((room, event, body));
                }
                _ => self.unanswered.push((room, txn, body)),
            }
        }
        self.unanswered.is_empty()
    }
}

/// Starts the real binary on `port` with the bridge, the desk and the simulator at `sim`.
async fn spawn(dir: &std::path::Path, port: u16, sim: &Simulator, sim_base: &str) -> Process {
    let config = dir.join("config.toml");
    let bridge = "invite = [\"@agent:localhost\", \"@support:localhost\"]";
    let tables = "[support]\ngreeting = \"\"\nadmins = [\"@agent:localhost\"]\n";
    std::fs::write(
        &config,
        format!(
            "server_name = \"localhost\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [storage]\npath = \"data\"\n\
             [limits]\nsend_per_second = 100000.0\nsend_burst = 100000\n\
             [logging]\nfilter = \"error\"\n{}",
            bridge_config(sim, sim_base, bridge, tables)
        ),
    )
    .unwrap();
    process::serve(&config, &format!("http://127.0.0.1:{port}")).await
}

/// Issue #18 item 17 end to end: the real binary, the bridge inside, the simulator outside.
/// Customers keep writing (each message posted again, as Meta does, until it gets a 200), new
/// customers first write just before each kill, the agent answers in every portal at once and
/// WhatsApp sends statuses back; the process is killed 12 times, from right after the new
/// customers' webhooks (portals being created) to a while after (sends and statuses under
/// way). Then: one portal room per customer, every acknowledged message once and in order,
/// every agent message at WhatsApp (in the agent's order per customer), and once the customers
/// read everything, every agent message `read` on the support API. Before the fix, most
/// customers got two to five portal rooms, and agent messages whose link was lost stayed
/// `queued` for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_webhooks_sends_and_statuses_splits_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let hook = format!("{base}/bridges/whatsapp/webhook");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_base = format!("http://{}/v21.0", listener.local_addr().unwrap());
    let sim = Simulator::new(SimConfig {
        status_delay_ms: 5,
        ..SimConfig::default()
    });
    let _sim_server = sim.serve(listener).unwrap();
    sim.set_webhook_url(&hook);

    let mut process = Some(spawn(dir.path(), port, &sim, &sim_base).await);
    let bot = bot_client(
        &base,
        &dir.path().join("data/bridges/whatsapp/registration.yaml"),
    );
    let mut agent_client = Client {
        http: reqwest::Client::new(),
        base: base.clone(),
        token: None,
    };
    let (status, body) = agent_client
        .post(
            &format!("{V3}/register"),
            json!({"username": "agent", "password": "pw-pw-pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    agent_client.token = Some(body["access_token"].as_str().unwrap().to_owned());

    let mut writers: Vec<Writer> = Vec::new();
    let mut agent = Agent::default();
    let cycles = KILL_AFTER_MS.iter().copied().map(Some).chain([None]);
    for (cycle, kill_after) in cycles.enumerate() {
        if process.is_none() {
            process = Some(spawn(dir.path(), port, &sim, &sim_base).await);
        }
        let last = kill_after.is_none();
        // Known customers write, the agent answers, WhatsApp sends statuses back.
        let known: Vec<_> = writers
            .drain(..)
            .map(|w| tokio::spawn(w.write(sim.clone(), hook.clone(), PER_CYCLE)))
            .collect();
        let agent_task = {
            let (agent_client, bot) = (agent_client.clone(), bot.clone());
            let mut agent = std::mem::take(&mut agent);
            tokio::spawn(async move {
                for _ in 0..if last { 2 } else { 1000 } {
                    if !agent.pass(&agent_client, &bot).await {
                        break;
                    }
                }
                agent
            })
        };
        if let Some(kill_after) = kill_after {
            // New customers write, and the process dies while their portals are created.
            let new: Vec<_> = (0..NEW_PER_CYCLE)
                .map(|i| Writer {
                    phone: format!("3460{cycle}{i:06}"),
                    next: 0,
                    unacked: None,
                    acked: Vec::new(),
                })
                .map(|w| tokio::spawn(w.write(sim.clone(), hook.clone(), 1)))
                .collect();
            for w in new {
                writers.push(w.await.unwrap());
            }
            tokio::time::sleep(Duration::from_millis(kill_after)).await;
            process = None; // SIGKILL: no shutdown path runs.
        }
        for w in known {
            writers.push(w.await.unwrap());
        }
        agent = agent_task.await.unwrap();
    }
    // The last cycle: everything unacknowledged goes again and is acknowledged.
    for w in std::mem::take(&mut writers) {
        let w = w.write(sim.clone(), hook.clone(), 0).await;
        assert!(
            w.unacked.is_none(),
            "a webhook was refused with the server up"
        );
        writers.push(w);
    }
    while !agent.unanswered.is_empty() {
        assert!(agent.pass(&agent_client, &bot).await);
    }
    let inbound: usize = writers.iter().map(|w| w.acked.len()).sum();
    eprintln!(
        "kill -9 x{KILLS}: {} customers, {inbound} customer messages and {} agent messages \
         acknowledged, {} sends at WhatsApp",
        writers.len(),
        agent.acked.len(),
        sim.sent_count()
    );
    assert!(
        agent.acked.len() > 20,
        "the agent got going: {}",
        agent.acked.len()
    );

    // One portal room per customer.
    let portals = wait_for("every customer's portal", || async {
        let portals = portals_by_customer(&bot).await;
        (portals.len() == writers.len()).then_some(portals)
    })
    .await;
    let split: Vec<_> = portals
        .iter()
        .filter(|(_, rooms)| rooms.len() > 1)
        .collect();
    assert!(
        split.is_empty(),
        "customers with more than one portal: {split:?}"
    );

    // Every acknowledged message once, in order, in its customer's portal.
    for w in &writers {
        let room = &portals[&w.phone][0];
        let want: Vec<&str> = w.acked.iter().map(String::as_str).collect();
        wait_texts(&bot, room, &w.phone, &want).await;
    }

    // Every agent message at WhatsApp (at least once: a kill while a send is in flight sends it
    // again), each customer's first sends in the agent's order.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let sent = loop {
        let sent = sim.sent();
        let bodies: HashSet<&str> = sent
            .iter()
            .filter_map(|r| r.body["text"]["body"].as_str())
            .collect();
        let missing: Vec<_> = agent
            .acked
            .iter()
            .filter(|(_, _, body)| !bodies.contains(body.as_str()))
            .collect();
        if missing.is_empty() {
            break sent;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent messages never sent to WhatsApp: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut firsts: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for record in &sent {
        let body = record.body["text"]["body"].as_str().unwrap_or_default();
        let parts: Vec<&str> = body.split(' ').collect();
        if let ["a", customer, n] = parts[..]
            && seen.insert(body.to_owned())
        {
            assert_eq!(record.to, *customer, "{body} went to another customer");
            firsts
                .entry(customer.to_owned())
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    for (customer, order) in &firsts {
        assert!(
            order.windows(2).all(|p| p[0] < p[1]),
            "{customer}: {order:?}"
        );
    }

    // The customers read everything: every agent message ends `read` on the support API.
    for record in &sent {
        assert_eq!(sim.send_status(&record.wamid, "read").await, Ok(200));
    }
    for (room, customer) in &agent.rooms {
        let events: Vec<&str> = agent
            .acked
            .iter()
            .filter(|(r, _, _)| r == room)
            .map(|(_, event, _)| event.as_str())
            .collect();
        let path = format!("/api/support/v1/conversations/{}?limit=500", enc(room));
        wait_for("every agent message read", || async {
            let (status, body) = agent_client.get(&path).await;
            assert_eq!(status, 200, "{body}");
            let deliveries = &body["deliveries"];
            let unread: Vec<_> = events
                .iter()
                .filter(|event| deliveries[**event]["status"] != "read")
                .map(|event| (event.to_string(), deliveries[*event].clone()))
                .collect();
            if !unread.is_empty() {
                eprintln!("{customer}: not read yet: {unread:?}");
            }
            unread.is_empty().then_some(())
        })
        .await;
    }
    drop(process);
}
