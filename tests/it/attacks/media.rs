//! Attack tests: media. Issue #18 item 3 (one user could stall the server's blocking pool, and
//! slow clients held connections forever) and item 11 (thumbnail amplification).
//!
//! The slow clients are raw TCP connections that behave as attackers do: a body sent one byte
//! at a time, headers sent one byte at a time, a response never read. Where a test waits for
//! the server, it waits for an outcome (a login answered, a connection closed) within
//! [`STALL`], a bound only a stalled server reaches; nothing asserts how fast anything is.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};

use crate::{
    common::{Client, TestServer, assert_error},
    media::{decode, get, media_files, noise, png, upload},
};

const UPLOAD: &str = "/_matrix/media/v3/upload";
const V1: &str = "/_matrix/client/v1/media";
/// How long a test waits for something that must happen: only a stalled server takes this long.
const STALL: Duration = Duration::from_secs(60);
/// The blocking pool of the runtime the stall tests run the server in. The defect does not
/// depend on its size (tokio's default is 512); a small pool shows it with few connections.
const POOL: usize = 8;

/// A runtime like `charla serve`'s, with a blocking pool of [`POOL`] threads.
fn small_pool_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(POOL)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts an upload that announces a 1 MB body and sends it one byte every 100 ms, for as long
/// as the returned task runs (aborting it closes the connection).
async fn dripping_upload(addr: SocketAddr, token: &str) -> JoinHandle<()> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tokio::spawn(async move {
        while tcp.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Opens a download and never reads a byte of the response.
async fn unread_download(addr: SocketAddr, token: &str, id: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET {V1}/download/localhost/{id} HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

async fn login(s: &TestServer, name: &str) -> (u16, Value) {
    s.client()
        .post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": name },
                "password": "secret-pw",
            }),
        )
        .await
}

/// Another user's login (argon2, on the blocking pool) and first thumbnail of an image (a
/// decode, on the blocking pool) both complete while the attack goes on.
async fn others_are_still_served(s: &TestServer, alice: &Client, image: &str) {
    let (status, body) = tokio::time::timeout(STALL, login(s, "alice"))
        .await
        .expect("a login stalled behind the slow clients");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
    let got = tokio::time::timeout(
        STALL,
        get(
            alice,
            &format!("{V1}/thumbnail/localhost/{image}?width=32&height=32&method=crop"),
        ),
    )
    .await
    .expect("a thumbnail stalled behind the slow clients");
    let thumb = decode(&got, "image/png");
    assert_eq!((thumb.width(), thumb.height()), (32, 32));
}

/// Gives the attack's requests time to reach their handlers before the victims' requests go
/// out, so that on a server that blocks a thread per upload the pool is taken first.
async fn let_the_attack_take_hold() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[test]
fn slow_uploads_do_not_stall_logins_or_thumbnails() {
    small_pool_runtime().block_on(async {
        // The per-user cap is lifted here: this is about what each upload holds, not how many.
        let s = TestServer::start_with("[media]\nmax_concurrent_uploads_per_user = 1000\n").await;
        let mallory = s.user("mallory").await;
        let alice = s.user("alice").await;
        let image = upload(&alice, "", "image/png", png(64, 64)).await;
        let token = mallory.token.clone().unwrap();
        let mut drips = Vec::new();
        for _ in 0..POOL + 4 {
            drips.push(dripping_upload(s.server.addr, &token).await);
        }
        let_the_attack_take_hold().await;

        others_are_still_served(&s, &alice, &image).await;
        for drip in &drips {
            assert!(
                !drip.is_finished(),
                "a slow upload was cut off while it moved"
            );
        }
        drips.iter().for_each(JoinHandle::abort);
    });
}

#[test]
fn unread_downloads_do_not_stall_logins_or_thumbnails() {
    small_pool_runtime().block_on(async {
        let s = TestServer::start().await;
        let mallory = s.user("mallory").await;
        let alice = s.user("alice").await;
        let image = upload(&alice, "", "image/png", png(64, 64)).await;
        // Far more than the socket buffers and any read-ahead hold.
        let big = upload(&mallory, "", "application/octet-stream", noise(24 << 20, 3)).await;
        let token = mallory.token.clone().unwrap();
        let mut readers = Vec::new();
        for _ in 0..POOL + 4 {
            readers.push(unread_download(s.server.addr, &token, &big).await);
        }
        let_the_attack_take_hold().await;

        others_are_still_served(&s, &alice, &image).await;
        drop(readers);
    });
}

/// Reads until the server closes the connection (end of stream or reset), within [`STALL`].
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(STALL, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    received
}

#[tokio::test]
async fn a_client_sending_headers_slowly_is_disconnected() {
    let s = TestServer::start_adjusted("", |c| c.server.header_read_timeout_secs = 1).await;
    let mut tcp = TcpStream::connect(s.server.addr).await.unwrap();
    tcp.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    // One header byte every 200 ms, never the blank line that ends the headers.
    let drip = tokio::spawn(async move {
        for byte in b"X-Slow: ".iter().chain([b'a'; 10_000].iter()).cycle() {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut received = Vec::new();
    let closed = tokio::time::timeout(STALL, reader.read_to_end(&mut received)).await;
    drip.abort();
    assert!(
        closed.is_ok(),
        "the server kept a slowloris connection open"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.contains(" 200 "),
        "the slow request was answered: {text}"
    );
    // Requests at a normal pace are served as before.
    let (status, body) = s.client().get("/_matrix/client/versions").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["versions"].is_array(), "{body}");
}

/// Sends `path` a request announcing `length` bytes of `content_type` but only `sent` of them,
/// then asserts the server answers `408 M_UNKNOWN` and closes the connection.
async fn assert_stalled_body_gets_408(
    s: &TestServer,
    token: &str,
    path: &str,
    content_type: &str,
    length: usize,
    sent: &str,
) {
    let mut tcp = TcpStream::connect(s.server.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n{sent}"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut tcp).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    let body: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_error(408, &body, 408, "M_UNKNOWN");
}

#[tokio::test]
async fn an_upload_whose_body_stalls_is_cut_off_and_stores_nothing() {
    let s = TestServer::start_adjusted("", |c| c.server.idle_timeout_secs = 1).await;
    let token = s.user("mallory").await.token.unwrap();
    assert_stalled_body_gets_408(&s, &token, UPLOAD, "text/plain", 1000, "ten bytes!").await;
    assert_eq!(
        media_files(&s.data_path().join("media")),
        Vec::<std::path::PathBuf>::new(),
        "a stalled upload left a file"
    );
}

#[tokio::test]
async fn a_json_request_whose_body_stalls_is_cut_off() {
    // The idle timeout is the listener's, so it holds for every endpoint, not only media.
    let s = TestServer::start_adjusted("", |c| c.server.idle_timeout_secs = 1).await;
    let token = s.user("mallory").await.token.unwrap();
    let path = "/_matrix/client/v3/createRoom";
    assert_stalled_body_gets_408(&s, &token, path, "application/json", 100, "{\"name\": ").await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_download_is_disconnected() {
    let s = TestServer::start_adjusted("", |c| c.server.idle_timeout_secs = 1).await;
    let mallory = s.user("mallory").await;
    let big = upload(&mallory, "", "application/octet-stream", noise(24 << 20, 5)).await;
    let token = mallory.token.clone().unwrap();
    let mut tcp = unread_download(s.server.addr, &token, &big).await;
    // Without reading, the only sign of a closed connection is that writing to it fails: the
    // peer answers bytes sent to a closed socket with a reset.
    let closed = tokio::time::timeout(STALL, async {
        while tcp.write_all(b"\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept writing to a client that never reads"
    );
}

#[tokio::test]
async fn uploads_in_progress_are_capped_per_user() {
    let s = TestServer::start_with("[media]\nmax_concurrent_uploads_per_user = 2\n").await;
    let mallory = s.user("mallory").await;
    let alice = s.user("alice").await;
    let token = mallory.token.clone().unwrap();
    let drips = [
        dripping_upload(s.server.addr, &token).await,
        dripping_upload(s.server.addr, &token).await,
    ];
    // Once both slow uploads are in progress, a third is refused at once. (Until the server
    // has seen them, a small upload may still get through.)
    let refused = tokio::time::timeout(STALL, async {
        loop {
            let (status, body) = upload_small(&mallory).await;
            if status != 200 {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a third concurrent upload was never refused");
    let (status, body) = refused;
    assert_error(status, &body, 429, "M_LIMIT_EXCEEDED");
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body}"
    );
    // The limit is per user.
    let (status, body) = upload_small(&alice).await;
    assert_eq!(status, 200, "{body}");
    // Slots come back when the slow uploads go away.
    drips.iter().for_each(JoinHandle::abort);
    let (status, body) = tokio::time::timeout(STALL, async {
        loop {
            let (status, body) = upload_small(&mallory).await;
            if status == 200 {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the slots of closed uploads never came back");
    assert!(body["content_uri"].is_string(), "{status} {body}");
}

async fn upload_small(c: &Client) -> (u16, Value) {
    let got = crate::media::request(
        c,
        reqwest::Method::POST,
        UPLOAD,
        Some("text/plain"),
        Some(b"hello".to_vec()),
    )
    .await;
    (got.status, got.json())
}

#[tokio::test]
async fn thumbnails_at_300_sizes_store_at_most_the_configured_five() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let media = s.data_path().join("media");
    let image = upload(&alice, "", "image/png", png(1000, 800)).await;
    let originals = media_files(&media).len();
    // What the default sizes make of a 1000×800 image: 32×32 and 96×96 crops, and the image
    // scaled into 320×240, 640×480 and 800×600.
    let crops: HashSet<(u32, u32)> = [(32, 32), (96, 96)].into();
    let scales: HashSet<(u32, u32)> = [(300, 240), (600, 480), (750, 600)].into();
    let mut seen = HashSet::new();
    for i in 0..300u32 {
        let (width, height) = (1 + i * 7 % 1600, 1 + i * 13 % 1600);
        let (method, allowed) = if i % 2 == 0 {
            ("crop", &crops)
        } else {
            ("scale", &scales)
        };
        let got = get(
            &alice,
            &format!(
                "{V1}/thumbnail/localhost/{image}?width={width}&height={height}&method={method}"
            ),
        )
        .await;
        let thumb = decode(&got, "image/png");
        let size = (thumb.width(), thumb.height());
        assert!(
            allowed.contains(&size),
            "{width}x{height} {method} was answered with {size:?}"
        );
        seen.insert(size);
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    let thumbnails = media_files(&media).len() - originals;
    assert!(
        thumbnails <= 5,
        "{thumbnails} thumbnail files for one image"
    );
}
