//! URL previews (`/preview_url`): Open Graph pages, pages without it, image URLs, the
//! `og:image` stored as media, the cache, and the SSRF filter (literal addresses, redirects and
//! host names that resolve to blocked addresses). The "web" is an axum server on 127.0.0.1
//! that counts the requests each path receives.

use std::{
    collections::HashMap,
    io::Cursor,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};

use crate::common::{Client, TestServer, assert_error, enc};

const V1: &str = "/_matrix/client/v1/media/preview_url";

/// Hits per path on the fake web server.
type Hits = Arc<Mutex<HashMap<String, usize>>>;

struct Web {
    addr: SocketAddr,
    hits: Hits,
}

impl Web {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// A 3×2 PNG: what every page's image is.
fn png() -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    RgbImage::from_pixel(3, 2, Rgb([200, 10, 10]))
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

const OG_PAGE: &str = r#"<!DOCTYPE html>
<html><head>
<title>Ignored title</title>
<meta property="og:title" content="Caf&eacute; &amp; Co">
<meta property="og:title" content="Café &amp; Co">
<meta property="og:description" content="Best &quot;coffee&quot; in   town">
<meta property="og:site_name" content="Cafe">
<meta property="og:type" content="website">
<meta property="og:url" content="http://cafe.example/og">
<meta property="og:image" content="/img.png">
<meta property="og:image:width" content="999">
</head><body><p>Body text</p></body></html>"#;

const PLAIN_PAGE: &str = r#"<html><head><title>Plain &#39;page&#39;</title>
<meta name="description" content="A plain page"></head>
<body><img src="tiny.png" width="4" height="4"><img src="img.png" width="300" height="200">
<p>Text</p></body></html>"#;

async fn serve(State(hits): State<(Hits, u16)>, Path(path): Path<String>) -> Response {
    let (hits, port) = hits;
    *hits.lock().unwrap().entry(format!("/{path}")).or_default() += 1;
    let html = |body: &str| {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body.to_owned(),
        )
            .into_response()
    };
    match path.as_str() {
        "og" => html(OG_PAGE),
        "slow" => {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            html(OG_PAGE)
        }
        "empty" => html(""),
        "og-again" => html(OG_PAGE),
        "plain" => html(PLAIN_PAGE),
        "latin1" => (
            [(header::CONTENT_TYPE, "text/html; charset=ISO-8859-1")],
            b"<title>Ni\xf1o</title>".to_vec(),
        )
            .into_response(),
        "img.png" => ([(header::CONTENT_TYPE, "image/png")], png()).into_response(),
        "named.png" => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            headers.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("inline; filename=\"cat.png\""),
            );
            (headers, png()).into_response()
        }
        "broken-image" => html(
            r#"<meta property="og:title" content="T"><meta property="og:image" content="/missing">
            <meta property="og:image:width" content="10">"#,
        ),
        "to-og" => (StatusCode::FOUND, [(header::LOCATION, "/og-again")]).into_response(),
        "to-blocked" => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("http://127.0.0.2:{port}/og"))],
        )
            .into_response(),
        "pdf" => ([(header::CONTENT_TYPE, "application/pdf")], "%PDF-1.4").into_response(),
        "huge" => html(&"x".repeat(200_000)),
        _ => (StatusCode::NOT_FOUND, "no").into_response(),
    }
}

async fn start_web() -> Web {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Hits::default();
    let app = Router::new()
        .route("/{*path}", get(serve))
        .with_state((hits.clone(), addr.port()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Web { addr, hits }
}

/// A server with previews on, allowed to reach 127.0.0.1 (and nothing else that is blocked).
async fn start_server() -> TestServer {
    TestServer::start_with(
        "[media]\nurl_preview = true\nurl_preview_ip_range_allowlist = [\"127.0.0.1/32\"]\n\
         url_preview_max_bytes = 100000\n",
    )
    .await
}

async fn preview(c: &Client, url: &str) -> (u16, Value) {
    c.get(&format!("{V1}?url={}&ts=1700000000000", enc(url)))
        .await
}

/// Downloads an `mxc://` URI through the authenticated endpoint.
async fn download(c: &Client, mxc: &str) -> (u16, String, Vec<u8>) {
    let path = mxc.strip_prefix("mxc://").expect("an mxc URI");
    let res = c
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{path}",
            c.base
        ))
        .bearer_auth(c.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let content_type = res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    (status, content_type, res.bytes().await.unwrap().to_vec())
}

/// Takes the `og:image` out of a preview, checking it is a local `mxc://` URI.
fn take_mxc(body: &mut Value) -> String {
    let mxc = body["og:image"].as_str().expect("og:image").to_owned();
    assert!(mxc.starts_with("mxc://localhost/"), "{mxc}");
    body.as_object_mut().unwrap().remove("og:image");
    mxc
}

#[tokio::test]
async fn open_graph_page_previews_with_its_image_stored_as_media() {
    let web = start_web().await;
    let server = start_server().await;
    let alice = server.user("alice").await;

    let (status, mut body) = preview(&alice, &web.url("/og")).await;
    assert_eq!(status, 200, "{body}");
    let mxc = take_mxc(&mut body);
    assert_eq!(
        body,
        json!({
            "og:title": "Café & Co",
            "og:description": "Best \"coffee\" in town",
            "og:site_name": "Cafe",
            "og:type": "website",
            "og:url": "http://cafe.example/og",
            "og:image:type": "image/png",
            "og:image:width": 3,
            "og:image:height": 2,
            "matrix:image:size": png().len(),
        })
    );
    let (status, content_type, bytes) = download(&alice, &mxc).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(bytes, png());
    assert_eq!((web.hits("/og"), web.hits("/img.png")), (1, 1));

    // Another user, a legacy path, another `ts`: served from the cache, nothing refetched.
    let bob = server.user("bob").await;
    let (status, again) = bob
        .get(&format!(
            "/_matrix/media/v3/preview_url?url={}",
            enc(&web.url("/og"))
        ))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["og:image"], mxc.as_str());
    assert_eq!(again["og:title"], "Café & Co");
    assert_eq!((web.hits("/og"), web.hits("/img.png")), (1, 1));
}

#[tokio::test]
async fn page_without_open_graph_falls_back_to_title_description_and_largest_image() {
    let web = start_web().await;
    let server = start_server().await;
    let alice = server.user("alice").await;

    let (status, mut body) = preview(&alice, &web.url("/plain")).await;
    assert_eq!(status, 200, "{body}");
    take_mxc(&mut body);
    assert_eq!(
        body,
        json!({
            "og:title": "Plain 'page'",
            "og:description": "A plain page",
            "og:image:type": "image/png",
            "og:image:width": 3,
            "og:image:height": 2,
            "matrix:image:size": png().len(),
        })
    );
    assert_eq!((web.hits("/tiny.png"), web.hits("/img.png")), (0, 1));

    let (status, body) = preview(&alice, &web.url("/latin1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "og:title": "Niño", "og:description": null }));
}

#[tokio::test]
async fn an_image_url_previews_as_the_image() {
    let web = start_web().await;
    let server = start_server().await;
    let alice = server.user("alice").await;

    let (status, mut body) = preview(&alice, &web.url("/named.png")).await;
    assert_eq!(status, 200, "{body}");
    let mxc = take_mxc(&mut body);
    assert_eq!(
        body,
        json!({
            "og:description": "cat.png",
            "og:image:type": "image/png",
            "og:image:width": 3,
            "og:image:height": 2,
            "matrix:image:size": png().len(),
        })
    );
    assert_eq!(download(&alice, &mxc).await.2, png());

    let (status, mut body) = preview(&alice, &web.url("/img.png")).await;
    assert_eq!(status, 200, "{body}");
    take_mxc(&mut body);
    assert_eq!(body["og:description"], Value::Null);
    assert!(body.as_object().unwrap().contains_key("og:description"));
}

#[tokio::test]
async fn redirects_are_followed_but_not_to_blocked_addresses() {
    let web = start_web().await;
    let server = start_server().await;
    let alice = server.user("alice").await;

    let (status, body) = preview(&alice, &web.url("/to-og")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["og:title"], "Café & Co");
    assert_eq!(web.hits("/og-again"), 1);

    let (status, body) = preview(&alice, &web.url("/to-blocked")).await;
    assert_error(status, &body, 403, "M_UNKNOWN");
    assert_eq!(body["error"], "IP address blocked");
    assert_eq!((web.hits("/to-blocked"), web.hits("/og")), (1, 0));
}

#[tokio::test]
async fn a_broken_image_drops_og_image_but_keeps_the_preview() {
    let web = start_web().await;
    let server = start_server().await;
    let alice = server.user("alice").await;
    let (status, body) = preview(&alice, &web.url("/broken-image")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "og:title": "T", "og:image:width": "10", "og:description": null })
    );
    assert_eq!(web.hits("/missing"), 1);
}

#[tokio::test]
async fn internal_addresses_are_refused_without_an_allowlist() {
    let web = start_web().await;
    let server = TestServer::start_with("[media]\nurl_preview = true\n").await;
    let alice = server.user("alice").await;

    let (status, body) = preview(&alice, &web.url("/og")).await;
    assert_error(status, &body, 403, "M_UNKNOWN");
    assert_eq!(body["error"], "IP address blocked");

    // A host name is refused when it resolves to a blocked address.
    let by_name = format!("http://localhost:{}/og", web.addr.port());
    let (status, body) = preview(&alice, &by_name).await;
    assert_error(status, &body, 502, "M_UNKNOWN");
    assert_eq!(
        body["error"],
        "DNS resolution failure during URL preview generation"
    );

    for literal in [
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
    ] {
        let (status, body) = preview(&alice, literal).await;
        assert_error(status, &body, 403, "M_UNKNOWN");
    }
    assert_eq!(web.hits("/og"), 0);
}

#[tokio::test]
async fn bad_requests_and_upstream_failures_get_synapse_errors() {
    let web = start_web().await;
    let server = start_server().await;
    let alice = server.user("alice").await;

    let (status, body) = alice.get(V1).await;
    assert_error(status, &body, 400, "M_MISSING_PARAM");
    let (status, body) = preview(&alice, "ftp://127.0.0.1/file").await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let (status, body) = preview(&alice, "not a url").await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let (status, body) = alice
        .get(&format!("{V1}?url={}&ts=yesterday", enc(&web.url("/og"))))
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    assert_eq!(web.hits("/og"), 0);

    let (status, body) = preview(&alice, &web.url("/nothing-here")).await;
    assert_error(status, &body, 502, "M_UNKNOWN");
    assert_eq!(body["error"], "Got error 404");
    let (status, body) = preview(&alice, &web.url("/pdf")).await;
    assert_error(status, &body, 502, "M_UNKNOWN");
    let (status, body) = preview(&alice, &web.url("/huge")).await;
    assert_error(status, &body, 502, "M_TOO_LARGE");
    assert_eq!(body["error"], "Requested file is too large > 100000 bytes");
}

#[tokio::test]
async fn previews_need_a_token_and_can_be_disabled() {
    let web = start_web().await;
    let server = start_server().await;
    let anonymous = server.client();
    for path in [
        V1,
        "/_matrix/media/v3/preview_url",
        "/_matrix/media/r0/preview_url",
    ] {
        let (status, body) = anonymous
            .get(&format!("{path}?url={}", enc(&web.url("/og"))))
            .await;
        assert_error(status, &body, 401, "M_MISSING_TOKEN");
    }
    assert_eq!(web.hits("/og"), 0);

    let disabled = TestServer::start().await;
    let alice = disabled.user("alice").await;
    let (status, body) = preview(&alice, &web.url("/og")).await;
    assert_error(status, &body, 404, "M_UNRECOGNIZED");
    assert_eq!(web.hits("/og"), 0);
}

#[tokio::test]
async fn concurrent_requests_for_one_url_share_one_fetch() {
    let web = start_web().await;
    let server = start_server().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let url = web.url("/slow");
    let (a, b) = tokio::join!(preview(&alice, &url), preview(&bob, &url));
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(a.1, b.1);
    assert_eq!(a.1["og:title"], "Café & Co");
    assert_eq!((web.hits("/slow"), web.hits("/img.png")), (1, 1));

    let (status, body) = preview(&alice, &web.url("/empty")).await;
    assert_eq!((status, body), (200, json!({})));
}
