//! `whatsapp`: throughput of the WhatsApp bridge, both ways, without loss.
//!
//! Unlike the other scenarios it brings its own system: a Charla with the bridge in process
//! (talking to Charla over the Application Service API on loopback) and the Cloud API
//! simulator, in a temporary data folder. `--clients` customers each get a portal first
//! (not timed), then:
//!
//! - inbound: `--messages` signed webhooks (one text each, as Meta sends them; each customer's
//!   one after the other, customers in parallel, at most 64 in flight) from the time the first
//!   is posted until every message is an event in its portal;
//! - outbound: `--messages` agent messages (one sender task per portal, so each customer's
//!   order is checked) from the first send until the simulator has received them all and the
//!   outbox is empty.
//!
//! Both phases check that nothing was lost, duplicated or reordered: inbound, every wamid is
//! linked to an event and each portal's history, read by the agent, holds its customer's texts
//! once each and in order; outbound, the simulator received each customer's texts once each
//! and in order.
//!
//! `--ceiling` is the number's throughput ceiling for both the bridge's pacing and the
//! simulator (Meta's 1,000 by default); a higher one shows how far past it the bridge could go.
//! The CPU per outbound message is the whole process's (server, bridge, simulator and agents).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::bench::BenchArgs;
use crate::bench::client::BoxError;
use crate::bench::report::Report;
use crate::bench::setup::progress;
use crate::bench::stats::{Summary, micros};

const IN_FLIGHT: usize = 64;

pub async fn run(args: &BenchArgs) -> Result<Report, BoxError> {
    let customers = args.clients.max(1);
    let total = args.messages.max(customers);
    let dir = std::env::temp_dir().join(format!("charla-wa-bench-{:08x}", rand::random::<u32>()));
    let result = run_in(&dir, customers, total, args.ceiling).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    dir: &std::path::Path,
    customers: usize,
    total: usize,
    ceiling: f64,
) -> Result<Report, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_addr = listener.local_addr()?;
    let sim = whatsapp::sim::Simulator::new(whatsapp::sim::SimConfig {
        throughput_per_second: ceiling,
        ..Default::default()
    });
    let _sim_server = sim.serve(listener)?;
    let c = sim.config();
    let text = format!(
        "server_name = \"localhost\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\npath = {:?}\n[limits]\nsend_per_second = 1000000.0\nsend_burst = 1000000\n\
         [logging]\nfilter = \"warn\"\n\
         [bridges.whatsapp]\nenabled = true\napi_base = \"http://{sim_addr}/v21.0\"\n\
         phone_number_id = \"{}\"\naccess_token = \"{}\"\napp_secret = \"{}\"\n\
         verify_token = \"bench\"\ninvite = [\"@agent:localhost\"]\n\
         sends_per_second = {ceiling:?}\n",
        dir.join("data"),
        c.phone_number_id,
        c.access_token,
        c.app_secret
    );
    let config = crate::config::Config::from_toml(&text)?;
    let server = crate::server::start(config).await?;
    let base = server.base_url();
    sim.set_webhook_url(&format!("{base}/bridges/whatsapp/webhook"));
    let bridge = server
        .whatsapp
        .as_ref()
        .ok_or("bridge not running")?
        .bridge()
        .clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;

    // The agent, then one portal per customer (not timed).
    let token = register_agent(&http, &base).await?;
    progress(format!("whatsapp: creating {customers} portals"));
    let phones: Vec<String> = (0..customers).map(|i| format!("3460{:07}", i)).collect();
    futures_util::stream::iter(&phones)
        .map(|phone| {
            let sim = sim.clone();
            async move {
                sim.customer_says(
                    phone,
                    "Bench",
                    None,
                    false,
                    json!({"type": "text", "text": {"body": "hola"}}),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut rooms = Vec::new();
    for phone in &phones {
        let room = wait(Duration::from_secs(60), || {
            bridge
                .store()
                .portal(phone)
                .ok()
                .flatten()
                // Saved before its invitees are invited: the agent can join once it is set up.
                .filter(|p| !p.setting_up)
                .map(|p| p.room_id.to_string())
        })
        .await
        .ok_or("portals were not created")?;
        let url = format!("{base}/_matrix/client/v3/join/{}", enc(&room));
        http.post(url)
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?;
        rooms.push(room);
    }
    wait(Duration::from_secs(60), || {
        bridge.store().inbox_is_empty().then_some(())
    })
    .await;

    let mut report = Report::new(
        "whatsapp",
        format!(
            "{customers} customers, {total} messages each way, bridge in process + simulator, \
             ceiling {ceiling} sends/s"
        ),
    );

    // Inbound: signed webhooks, one message each.
    let hook = format!("{base}/bridges/whatsapp/webhook");
    // Per customer, in the order they write; a customer's next webhook goes once the last
    // was accepted (so their order is defined), customers in parallel.
    let mut queues: Vec<Vec<(String, String)>> = vec![Vec::new(); customers];
    let mut wamids = Vec::with_capacity(total);
    for i in 0..total {
        let phone = &phones[i % customers];
        let wamid = format!("wamid.bench{i:08}");
        let envelope = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": c.display_phone_number, "phone_number_id": c.phone_number_id},
            "contacts": [{"profile": {"name": "Bench"}, "wa_id": phone}],
            "messages": [{"from": phone, "id": wamid, "timestamp": "1750000000", "type": "text", "text": {"body": format!("in {i}")}}],
        }}]}]});
        let body = envelope.to_string();
        let signature = whatsapp::signature::sign(&c.app_secret, body.as_bytes());
        queues[i % customers].push((body, signature));
        wamids.push(wamid);
    }
    progress(format!("whatsapp: inbound, {total} webhooks"));
    let started = Instant::now();
    let refused: usize = futures_util::stream::iter(queues)
        .map(|queue| {
            let (http, hook) = (&http, &hook);
            async move {
                let mut refused = 0;
                for (body, signature) in queue {
                    let answer = http
                        .post(hook)
                        .header("x-hub-signature-256", signature)
                        .body(body)
                        .send()
                        .await;
                    refused += usize::from(answer.map_or(true, |a| a.status().as_u16() != 200));
                }
                refused
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .fold(0, |sum, n| std::future::ready(sum + n))
        .await;
    let accepted_in = started.elapsed();
    wait(Duration::from_secs(600), || {
        bridge.store().inbox_is_empty().then_some(())
    })
    .await;
    let inbound = started.elapsed();
    let missing = wamids
        .iter()
        .filter(|w| !matches!(bridge.store().message(w), Ok(Some(_))))
        .count();
    report.row(
        "inbound webhooks accepted",
        format!("{:.0}/s", total as f64 / accepted_in.as_secs_f64()),
    );
    report.row(
        "inbound into portal rooms",
        format!(
            "{:.0} msg/s ({total} in {:.2} s)",
            total as f64 / inbound.as_secs_f64(),
            inbound.as_secs_f64()
        ),
    );
    report.set("inbound_msgs_per_sec", total as f64 / inbound.as_secs_f64());
    // What the agent sees: each customer's messages once each, in the order they were sent.
    let mut out_of_order = 0;
    for (r, room) in rooms.iter().enumerate() {
        let seen = inbound_bodies(&http, &base, &token, room).await?;
        let expected: Vec<String> = (r..total)
            .step_by(customers)
            .map(|i| format!("in {i}"))
            .collect();
        out_of_order += usize::from(seen != expected);
    }
    if refused > 0 || missing > 0 || out_of_order > 0 {
        report.problem(format!(
            "inbound: {refused} webhooks refused, {missing} messages missing, \
             {out_of_order} portals with messages lost, doubled or out of order"
        ));
    }

    // Outbound: one sending task per portal, so the order per customer is meaningful.
    progress(format!("whatsapp: outbound, {total} agent messages"));
    let per_room = total / customers;
    let already = sim.sent_count();
    let throttled_before = sim.throttled();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let sends = rooms.iter().enumerate().map(|(r, room)| {
        let (http, base, token) = (&http, &base, &token);
        async move {
            let (mut failures, mut latencies_us) = (0, Vec::with_capacity(per_room));
            for i in 0..per_room {
                let url = format!(
                    "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/b{i}",
                    enc(room)
                );
                let body = json!({"msgtype": "m.text", "body": format!("out {r} {i}")});
                let sent_at = Instant::now();
                let ok = http
                    .put(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|a| a.status().is_success());
                failures += usize::from(!ok);
                latencies_us.push(micros(sent_at.elapsed()));
            }
            (failures, latencies_us)
        }
    });
    let (mut failed, mut send_latencies_us) = (0, Vec::with_capacity(total));
    for (failures, latencies_us) in futures_util::future::join_all(sends).await {
        failed += failures;
        send_latencies_us.extend(latencies_us);
    }
    let sent_total = per_room * customers;
    let sent_in = started.elapsed();
    wait(Duration::from_secs(600), || {
        (sim.sent_count() >= already + sent_total && bridge.store().outbox_is_empty()).then_some(())
    })
    .await;
    let outbound = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    let received: Vec<Value> = sim
        .sent_since(already)
        .iter()
        .map(|r| r.body["text"]["body"].clone())
        .collect();
    let mut per_customer: Vec<Vec<usize>> = vec![Vec::new(); customers];
    for body in &received {
        let parts: Vec<usize> = body
            .as_str()
            .unwrap_or_default()
            .split(' ')
            .skip(1)
            .filter_map(|p| p.parse().ok())
            .collect();
        if let [r, i] = parts[..]
            && r < customers
        {
            per_customer[r].push(i);
        }
    }
    let in_order = per_customer
        .iter()
        .all(|seq| *seq == (0..per_room).collect::<Vec<_>>());
    report.row(
        "outbound agent sends accepted",
        format!("{:.0}/s", sent_total as f64 / sent_in.as_secs_f64()),
    );
    report.row(
        "outbound agent send latency",
        Summary::from_samples(&mut send_latencies_us).human(),
    );
    report.row(
        "outbound to the Cloud API",
        format!(
            "{:.0} msg/s ({sent_total} in {:.2} s)",
            sent_total as f64 / outbound.as_secs_f64(),
            outbound.as_secs_f64()
        ),
    );
    report.row(
        "outbound CPU per message (whole process)",
        format!(
            "{:.2} ms ({:.2} cores busy)",
            cpu.as_secs_f64() * 1000.0 / sent_total as f64,
            cpu.as_secs_f64() / outbound.as_secs_f64()
        ),
    );
    report.row(
        "outbound refused for throughput (130429)",
        format!("{}", sim.throttled() - throttled_before),
    );
    report.set(
        "outbound_msgs_per_sec",
        sent_total as f64 / outbound.as_secs_f64(),
    );
    if failed > 0 || received.len() != sent_total || !in_order {
        report.problem(format!(
            "outbound: {failed} sends failed, {} of {sent_total} received, in order per customer: {in_order}",
            received.len()
        ));
    }
    server.stop().await;
    Ok(report)
}

async fn register_agent(http: &reqwest::Client, base: &str) -> Result<String, BoxError> {
    let answer: Value = http
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&json!({"username": "agent", "password": "bench-password", "auth": {"type": "m.login.dummy"}}))
        .send()
        .await?
        .json()
        .await?;
    Ok(answer["access_token"]
        .as_str()
        .ok_or("agent registration failed")?
        .to_owned())
}

/// The bench's inbound texts (`in N`) in a portal, oldest first, as the agent reads them.
async fn inbound_bodies(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    room: &str,
) -> Result<Vec<String>, BoxError> {
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut url = format!(
            "{base}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
            enc(room)
        );
        if let Some(f) = &from {
            url.push_str(&format!("&from={}", enc(f)));
        }
        let page: Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for event in page["chunk"].as_array().into_iter().flatten() {
            if let Some(body) = event["content"]["body"].as_str()
                && body.starts_with("in ")
                && event["type"] == "m.room.message"
            {
                bodies.push(body.to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) if page["chunk"].as_array().is_some_and(|c| !c.is_empty()) => {
                from = Some(end.to_owned())
            }
            _ => break,
        }
    }
    bodies.reverse();
    Ok(bodies)
}

/// User and system CPU time of this whole process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Polls `check` every 10 ms until it gives a value or `limit` passes.
async fn wait<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
