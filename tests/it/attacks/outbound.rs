//! Requests to URLs users choose (#18 item 12): push gateways go through the same SSRF guard
//! as URL previews, redirects included, and previews are limited per user in rate and
//! concurrency, so one account cannot turn the server into its crawler.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use serde_json::json;
use tokio::sync::Notify;

use crate::{
    common::{Client, TestServer, assert_error, enc},
    push_gateway::{Gateway, direct_chat, set_pusher},
};

const NOTIFY: &str = "/_matrix/push/v1/notify";

/// A gateway-shaped listener on `ip` that only counts what reaches it.
async fn counting_listener(ip: &str) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            NOTIFY,
            post(|State(hits): State<Arc<AtomicUsize>>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({ "rejected": [] }))
            }),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .unwrap();
    let url = format!("http://{}{NOTIFY}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

/// A gateway on 127.0.0.1 that answers every notification with a redirect to `to`.
async fn redirecting_gateway(to: String) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            NOTIFY,
            post(
                |State((hits, to)): State<(Arc<AtomicUsize>, String)>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
                },
            ),
        )
        .with_state((hits.clone(), to));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{NOTIFY}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Bob's gateway is on an internal address (127.0.0.2: loopback, not allowed), Carol's on the
/// allowed 127.0.0.1. Both are members; Carol's notifications show delivery works, Bob's never
/// leave the server.
#[tokio::test]
async fn a_push_gateway_on_a_blocked_address_is_never_contacted() {
    let s = TestServer::start_with("[server]\nip_range_allowlist = [\"127.0.0.1\"]\n").await;
    let allowed = Gateway::start().await;
    let (internal, internal_hits) = counting_listener("127.0.0.2").await;
    let (alice, bob, room) = direct_chat(&s).await;
    let carol = s.user("carol").await;
    let (status, _) = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({ "user_id": "@carol:localhost" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(carol.join(&room).await.0, 200);
    set_pusher(&bob, "bob-phone", json!({ "url": internal })).await;
    set_pusher(&carol, "carol-phone", json!({ "url": allowed.url })).await;
    alice.send_text(&room, "m1", "first").await;
    alice.send_text(&room, "m2", "second").await;
    let got = allowed.wait_for(2).await;
    assert_eq!(got[1]["notification"]["content"]["body"], "second");
    // Bob's sender retried meanwhile (backoff from half a second): still nothing reached it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "an internal address was reached"
    );
}

#[tokio::test]
async fn a_push_gateway_redirect_to_an_internal_address_is_not_followed() {
    let s = TestServer::start_with("[server]\nip_range_allowlist = [\"127.0.0.1\"]\n").await;
    let (internal, internal_hits) = counting_listener("127.0.0.2").await;
    let (redirecting, redirect_hits) = redirecting_gateway(internal).await;
    let (alice, bob, room) = direct_chat(&s).await;
    set_pusher(&bob, "bob-phone", json!({ "url": redirecting })).await;
    alice.send_text(&room, "m1", "hello").await;
    wait_until("the gateway's first answer", || {
        redirect_hits.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

/// A fake site whose `/slow/*` pages answer only when released, and `/page/*` at once.
struct Site {
    base: String,
    slow_waiting: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

async fn site() -> Site {
    let slow_waiting = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let page = || {
        (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>A page</title></head></html>",
        )
    };
    let app = Router::new()
        .route("/page/{n}", get(move || async move { page() }))
        .route(
            "/slow/{n}",
            get(
                move |State((waiting, release)): State<(Arc<AtomicUsize>, Arc<Notify>)>| async move {
                    waiting.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    page()
                },
            ),
        )
        .with_state((slow_waiting.clone(), release.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Site {
        base,
        slow_waiting,
        release,
    }
}

async fn preview(c: &Client, url: &str) -> (u16, serde_json::Value) {
    c.get(&format!(
        "/_matrix/client/v1/media/preview_url?url={}",
        enc(url)
    ))
    .await
}

const PREVIEWS: &str = "[media]\nurl_preview = true\nurl_preview_ip_range_allowlist = [\"127.0.0.1\"]\n\
                        url_preview_per_second = 0.01\nurl_preview_burst = 3\n\
                        max_concurrent_previews_per_user = 2\n";

#[tokio::test]
async fn previews_are_rate_limited_per_user_and_cached_ones_are_free() {
    let s = TestServer::start_with(PREVIEWS).await;
    let web = site().await;
    let (alice, bob) = (s.user("alice").await, s.user("bob").await);
    for n in 0..3 {
        let (status, body) = preview(&alice, &format!("{}/page/{n}", web.base)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["og:title"], "A page");
    }
    let (status, body) = preview(&alice, &format!("{}/page/3", web.base)).await;
    assert_error(status, &body, 429, "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
    // A preview already made costs nothing; another user has their own allowance.
    let (status, _) = preview(&alice, &format!("{}/page/0", web.base)).await;
    assert_eq!(status, 200);
    let (status, _) = preview(&bob, &format!("{}/page/3", web.base)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn previews_being_fetched_at_once_are_limited_per_user() {
    let s = TestServer::start_with(
        "[media]\nurl_preview = true\nurl_preview_ip_range_allowlist = [\"127.0.0.1\"]\n\
         max_concurrent_previews_per_user = 2\n",
    )
    .await;
    let web = site().await;
    let alice = s.user("alice").await;
    let slow: Vec<_> = (0..2)
        .map(|n| {
            let (alice, url) = (alice.clone(), format!("{}/slow/{n}", web.base));
            tokio::spawn(async move { preview(&alice, &url).await })
        })
        .collect();
    wait_until("two fetches at the site", || {
        web.slow_waiting.load(Ordering::SeqCst) == 2
    })
    .await;
    let (status, body) = preview(&alice, &format!("{}/page/9", web.base)).await;
    assert_error(status, &body, 429, "M_LIMIT_EXCEEDED");
    // Once the slow ones finish, the slots are free again.
    web.release.notify_waiters();
    for t in slow {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let (status, body) = preview(&alice, &format!("{}/page/9", web.base)).await;
    assert_eq!(status, 200, "{body}");
}
