//! `/metrics`: on its own listener only when enabled, parseable as Prometheus text, with the
//! types operators alert on, and moving with what the server does.

use serde_json::json;

use crate::common::{
    TestServer,
    metrics::{Metrics, scrape, wait_for_gauge},
    process::free_port,
};

const ENABLED: &str = "[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n";
/// The send endpoint's route template, as ruma names it.
const SEND: &str = "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}";

#[tokio::test]
async fn metrics_parse_and_move_with_sends_and_syncs() {
    let server = TestServer::start_with(ENABLED).await;
    let addr = server.server.metrics_addr.expect("metrics listener");
    let alice = server.user("alice").await;
    let room = alice.create_room(json!({ "name": "metrics" })).await;

    let before = scrape(addr).await;
    let sent = [("endpoint", SEND), ("method", "PUT"), ("status", "200")];
    for i in 0..5 {
        alice.send_text(&room, &format!("m{i}"), "hello").await;
    }
    let (status, _) = alice.get("/_matrix/client/v3/no/such/endpoint").await;
    assert_eq!(status, 404);
    let after = scrape(addr).await;

    // Counted by route template, with the status, exactly once per request.
    assert_eq!(
        after.counter("charla_http_requests", &sent)
            - before.counter("charla_http_requests", &sent),
        5.0,
        "{}",
        after.text
    );
    let unmatched = [("endpoint", "unmatched"), ("status", "404")];
    assert_eq!(after.counter("charla_http_requests", &unmatched), 1.0);
    // No label holds a path, a room id or a token.
    assert!(!after.text.contains(&room), "{}", after.text);
    assert!(!after.text.contains("no/such"), "{}", after.text);
    assert!(!after.text.contains(alice.token.as_deref().unwrap()));

    // The latency histogram of the send endpoint counted the same five.
    let latency = |m: &Metrics| {
        let send = [("endpoint", SEND), ("method", "PUT")];
        m.histogram("charla_http_request_duration_seconds", &send)
            .map_or(0, |h| {
                assert!(
                    h.buckets.iter().any(|b| b.upper_bound.is_infinite()),
                    "{h:?}"
                );
                h.count.unwrap_or(0)
            })
    };
    assert_eq!(latency(&after) - latency(&before), 5);

    // The stream moved by at least the five events, and the store counted them.
    let head = |m: &Metrics| m.gauge("charla_stream_head", &[]);
    assert!(head(&after) >= head(&before) + 5.0);
    assert!(
        after.counter("charla_events_stored", &[])
            >= before.counter("charla_events_stored", &[]) + 5.0
    );

    // The stream consumers report their lag by name, and catch up.
    for consumer in ["support bot", "push delivery"] {
        wait_for_gauge(addr, "charla_consumer_lag", &[("consumer", consumer)], 0.0).await;
    }
    // The store and the process report their sizes.
    assert!(after.gauge("charla_storage_log_bytes", &[]) >= 0.0);
    assert!(after.gauge("charla_storage_bytes", &[]) > 0.0);
    assert!(after.gauge("process_resident_memory_bytes", &[]) > 0.0);
    assert_eq!(after.gauge("charla_syncs_waiting", &[]), 0.0);

    // A waiting long poll shows, and stops showing once it is answered.
    let since = alice.sync(None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let poller = alice.clone();
    let poll = tokio::spawn(async move { poller.sync(Some(&since), 30_000).await });
    wait_for_gauge(addr, "charla_syncs_waiting", &[], 1.0).await;
    alice.send_text(&room, "wake", "wake up").await;
    let woken = poll.await.unwrap();
    assert!(woken["next_batch"].is_string(), "{woken}");
    wait_for_gauge(addr, "charla_syncs_waiting", &[], 0.0).await;
}

/// A scraper that does not ask for OpenMetrics gets the Prometheus text format 0.0.4, valid
/// too; anything but `/metrics` is 404.
#[tokio::test]
async fn prometheus_text_is_served_to_who_does_not_ask_for_openmetrics() {
    let server = TestServer::start_with(ENABLED).await;
    let url = format!("http://{}/metrics", server.server.metrics_addr.unwrap());
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status(), 200);
    let kind = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = res.text().await.unwrap();
    let exposition = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("not Prometheus text: {e:?}\n{text}"));
    let head = &exposition.families["charla_stream_head"];
    assert_eq!(
        head.family_type,
        openmetrics_parser::PrometheusType::Gauge,
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");

    let other = reqwest::get(url.replace("/metrics", "/other"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// `enabled = false` binds nothing, even with an address given.
#[tokio::test]
async fn disabled_metrics_open_no_listener() {
    let port = free_port();
    let server = TestServer::start_with(&format!(
        "[metrics]\nenabled = false\nlisten = \"127.0.0.1:{port}\"\n"
    ))
    .await;
    assert_eq!(server.server.metrics_addr, None);
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "something listens on the metrics port");
    // The server itself serves.
    let (status, _) = server.client().get("/_matrix/client/versions").await;
    assert_eq!(status, 200);
}
