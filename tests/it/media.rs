//! The media repository against the Client-Server API v1.16: upload (plain and async),
//! authenticated download and thumbnails, the legacy unauthenticated endpoints, limits, and
//! durability across a restart.

use std::{io::Cursor, path::Path};

use crate::common::{Client, TestServer, assert_error};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UPLOAD: &str = "/_matrix/media/v3/upload";
const CREATE: &str = "/_matrix/media/v1/create";
const V1: &str = "/_matrix/client/v1/media";

/// A raw media response: status, headers, body bytes.
pub(crate) struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

pub(crate) async fn request(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> Got {
    let mut req = c.http.request(method, format!("{}{path}", c.base));
    if let Some(t) = &c.token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let res = req.send().await.expect("request sent");
    Got {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        bytes: res.bytes().await.expect("body").to_vec(),
    }
}

pub(crate) async fn get(c: &Client, path: &str) -> Got {
    request(c, reqwest::Method::GET, path, None, None).await
}

async fn upload_raw(c: &Client, query: &str, content_type: &str, bytes: Vec<u8>) -> Got {
    request(
        c,
        reqwest::Method::POST,
        &format!("{UPLOAD}{query}"),
        Some(content_type),
        Some(bytes),
    )
    .await
}

/// Uploads and returns the media id part of the `mxc://localhost/<id>` URI.
pub(crate) async fn upload(c: &Client, query: &str, content_type: &str, bytes: Vec<u8>) -> String {
    let got = upload_raw(c, query, content_type, bytes).await;
    assert_eq!(got.status, 200, "upload: {}", got.json());
    let uri = got.json()["content_uri"].as_str().unwrap().to_owned();
    uri.strip_prefix("mxc://localhost/")
        .unwrap_or_else(|| panic!("not a local mxc uri: {uri}"))
        .to_owned()
}

async fn put_content(c: &Client, id: &str, content_type: &str, bytes: Vec<u8>) -> Got {
    request(
        c,
        reqwest::Method::PUT,
        &format!("{UPLOAD}/localhost/{id}"),
        Some(content_type),
        Some(bytes),
    )
    .await
}

/// Deterministic bytes that are not an image.
pub(crate) fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

pub(crate) fn png(w: u32, h: u32) -> Vec<u8> {
    let img = RgbaImage::from_fn(w, h, |x, y| {
        Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255])
    });
    encode(DynamicImage::ImageRgba8(img), ImageFormat::Png)
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, 30, (y % 256) as u8]));
    encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg)
}

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// Decodes a thumbnail, checking its bytes are the format its Content-Type says.
pub(crate) fn decode(got: &Got, content_type: &str) -> DynamicImage {
    assert_eq!(got.status, 200, "thumbnail: {}", got.json());
    assert_eq!(got.header("content-type"), content_type);
    let format = ImageFormat::from_mime_type(content_type).unwrap();
    image::load_from_memory_with_format(&got.bytes, format).expect("a valid image")
}

/// Every regular file under the media folder, temporary files included.
pub(crate) fn media_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn upload_downloads_back_byte_for_byte_with_type_and_name() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    // Larger than limits.max_request_bytes (1 MiB): uploads use the media limit.
    let bytes = noise(3 * 1024 * 1024 + 17, 7);
    let id = upload(
        &alice,
        "?filename=factura%20n%C2%BA%207.pdf",
        "application/pdf",
        bytes.clone(),
    )
    .await;
    assert_eq!(id.len(), 24);

    let got = get(&bob, &format!("{V1}/download/localhost/{id}")).await;
    assert_eq!(got.status, 200);
    assert!(got.bytes == bytes, "content differs");
    assert_eq!(got.header("content-type"), "application/pdf");
    assert_eq!(got.header("content-length"), bytes.len().to_string());
    assert_eq!(
        got.header("content-disposition"),
        "attachment; filename*=utf-8''factura%20n%C2%BA%207.pdf"
    );
    assert_eq!(got.header("x-content-type-options"), "nosniff");
    assert_eq!(got.header("cross-origin-resource-policy"), "cross-origin");
    assert!(
        got.header("content-security-policy")
            .starts_with("sandbox; default-src 'none'; script-src 'none';"),
        "{}",
        got.header("content-security-policy")
    );

    // The file name in the path wins.
    let got = get(&bob, &format!("{V1}/download/localhost/{id}/copy.pdf")).await;
    assert_eq!(got.status, 200);
    assert!(got.bytes == bytes);
    assert_eq!(
        got.header("content-disposition"),
        "attachment; filename=copy.pdf"
    );
}

#[tokio::test]
async fn disposition_is_inline_only_for_safe_types() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let cases = [
        (
            "image/png",
            "?filename=cat.png",
            "inline; filename=cat.png",
            "image/png",
        ),
        ("text/plain", "", "inline", "text/plain; charset=UTF-8"),
        (
            "text/html",
            "?filename=x.html",
            "attachment; filename=x.html",
            "text/html; charset=UTF-8",
        ),
        (
            "image/svg+xml",
            "",
            "attachment",
            "image/svg+xml; charset=UTF-8",
        ),
    ];
    for (i, (ct, query, disposition, served_type)) in cases.into_iter().enumerate() {
        let id = upload(&alice, query, ct, noise(100, i as u8)).await;
        let got = get(&alice, &format!("{V1}/download/localhost/{id}")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("content-disposition"), disposition, "{ct}");
        assert_eq!(got.header("content-type"), served_type, "{ct}");
    }
    // No Content-Type at all: stored as an opaque download.
    let got = request(
        &alice,
        reqwest::Method::POST,
        UPLOAD,
        None,
        Some(b"raw".to_vec()),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.json());
    let uri = got.json()["content_uri"].as_str().unwrap().to_owned();
    let id = uri.rsplit('/').next().unwrap();
    let got = get(&alice, &format!("{V1}/download/localhost/{id}")).await;
    assert_eq!(got.header("content-type"), "application/octet-stream");
    assert_eq!(got.header("content-disposition"), "attachment");
    assert_eq!(got.bytes, b"raw");
}

#[tokio::test]
async fn same_bytes_twice_share_one_file() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bytes = noise(5000, 3);
    let a = upload(
        &alice,
        "?filename=a.bin",
        "application/octet-stream",
        bytes.clone(),
    )
    .await;
    let b = upload(
        &alice,
        "?filename=b.bin",
        "application/octet-stream",
        bytes.clone(),
    )
    .await;
    assert_ne!(a, b, "each upload gets its own media id");
    let files = media_files(&s.data_path().join("media"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), bytes);
    let got = get(&alice, &format!("{V1}/download/localhost/{b}")).await;
    assert_eq!(
        got.header("content-disposition"),
        "attachment; filename=b.bin"
    );
}

#[tokio::test]
async fn async_upload_create_then_put_once_by_its_creator() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let got = request(&alice, reqwest::Method::POST, CREATE, None, None).await;
    assert_eq!(got.status, 200, "{}", got.json());
    let body = got.json();
    let uri = body["content_uri"].as_str().unwrap();
    let id = uri.strip_prefix("mxc://localhost/").unwrap().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let expires = body["unused_expires_at"].as_u64().unwrap();
    assert!(expires > now, "{expires} <= {now}");

    // Not uploaded yet: the client's timeout passes.
    let got = get(
        &alice,
        &format!("{V1}/download/localhost/{id}?timeout_ms=0"),
    )
    .await;
    assert_error(got.status, &got.json(), 504, "M_NOT_YET_UPLOADED");

    let got = put_content(&bob, &id, "text/plain", b"not yours".to_vec()).await;
    assert_error(got.status, &got.json(), 403, "M_FORBIDDEN");

    let got = put_content(&alice, &id, "text/plain", b"hola".to_vec()).await;
    assert_eq!(got.status, 200, "{}", got.json());
    assert_eq!(got.json(), serde_json::json!({}));

    let got = put_content(&alice, &id, "text/plain", b"again".to_vec()).await;
    assert_error(got.status, &got.json(), 409, "M_CANNOT_OVERWRITE_MEDIA");

    let got = get(&bob, &format!("{V1}/download/localhost/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes, b"hola");
    assert_eq!(got.header("content-type"), "text/plain; charset=UTF-8");

    let got = put_content(
        &alice,
        "AAAAAAAAAAAAAAAAAAAAAAAA",
        "text/plain",
        b"x".to_vec(),
    )
    .await;
    assert_error(got.status, &got.json(), 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn download_of_pending_media_waits_for_its_upload() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let got = request(&alice, reqwest::Method::POST, CREATE, None, None).await;
    let uri = got.json()["content_uri"].as_str().unwrap().to_owned();
    let id = uri.rsplit('/').next().unwrap().to_owned();
    let reader = alice.clone();
    let path = format!("{V1}/download/localhost/{id}?timeout_ms=30000");
    let waiting = tokio::spawn(async move { get(&reader, &path).await });
    // Give the download time to start waiting; correctness does not depend on it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let got = put_content(&alice, &id, "image/gif", b"GIF89a".to_vec()).await;
    assert_eq!(got.status, 200);
    let got = waiting.await.unwrap();
    assert_eq!(got.status, 200, "{}", got.json());
    assert_eq!(got.bytes, b"GIF89a");
    assert_eq!(got.header("content-type"), "image/gif");
}

#[tokio::test]
async fn pending_creations_are_limited_per_user() {
    let s = TestServer::start_with("[media]\nmax_pending_uploads = 2\n").await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    for _ in 0..2 {
        let got = request(&alice, reqwest::Method::POST, CREATE, None, None).await;
        assert_eq!(got.status, 200);
    }
    let got = request(&alice, reqwest::Method::POST, CREATE, None, None).await;
    assert_error(got.status, &got.json(), 429, "M_LIMIT_EXCEEDED");
    assert!(got.json()["retry_after_ms"].as_u64().unwrap() > 0);
    // Another user has their own allowance.
    let got = request(&bob, reqwest::Method::POST, CREATE, None, None).await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn png_and_jpeg_thumbnails_crop_exactly_and_scale_keeping_aspect() {
    // Requests snap to the default sizes (32×32 and 96×96 crop; 320×240, 640×480 and 800×600
    // scale): a crop fills its box exactly, a scale fits it keeping the aspect ratio.
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let png_id = upload(&alice, "?filename=wide.png", "image/png", png(400, 200)).await;
    let jpeg_id = upload(&alice, "", "image/jpeg", jpeg(300, 600)).await;
    let thumb = |id: &str, q: &str| format!("{V1}/thumbnail/localhost/{id}?{q}");

    let got = get(&alice, &thumb(&png_id, "width=90&height=90&method=crop")).await;
    let img = decode(&got, "image/png");
    assert_eq!((img.width(), img.height()), (96, 96));
    assert_eq!(got.header("x-content-type-options"), "nosniff");
    assert_eq!(got.header("content-disposition"), "inline");
    // The centre was kept: the 96×96 crop of the 192×96 scaled image starts at x=48 of
    // that image, i.e. x=100 of the original, whose red channel is 100.
    let left_red = img.to_rgba8().get_pixel(0, 50)[0];
    assert!(
        (90..=115).contains(&left_red),
        "red at the left edge: {left_red}"
    );

    // 320×240 is the smallest scale size that covers 100×100.
    let got = get(&alice, &thumb(&png_id, "width=100&height=100&method=scale")).await;
    let img = decode(&got, "image/png");
    assert_eq!((img.width(), img.height()), (320, 160));

    let got = get(&alice, &thumb(&jpeg_id, "width=64&height=64&method=scale")).await;
    let img = decode(&got, "image/jpeg");
    assert_eq!((img.width(), img.height()), (120, 240));

    let got = get(&alice, &thumb(&jpeg_id, "width=20&height=10&method=crop")).await;
    let img = decode(&got, "image/jpeg");
    assert_eq!((img.width(), img.height()), (32, 32));

    // Never larger than the original: a crop box wider than the image is cut to it, and a
    // request larger than every size gets the largest, not upscaled.
    let small = upload(&alice, "", "image/png", png(60, 20)).await;
    let got = get(&alice, &thumb(&small, "width=90&height=90&method=crop")).await;
    let img = decode(&got, "image/png");
    assert_eq!((img.width(), img.height()), (60, 20));
    let got = get(&alice, &thumb(&jpeg_id, "width=1000&height=1000")).await;
    let img = decode(&got, "image/jpeg");
    assert_eq!((img.width(), img.height()), (300, 600));

    // Stored once: the same request, or another that snaps to the same size, gives the same
    // bytes without a new file.
    let files_before = media_files(&s.data_path().join("media")).len();
    let a = get(&alice, &thumb(&png_id, "width=90&height=90&method=crop")).await;
    let b = get(&alice, &thumb(&png_id, "width=50&height=70&method=crop")).await;
    assert!(a.bytes == b.bytes);
    assert_eq!(
        media_files(&s.data_path().join("media")).len(),
        files_before
    );
}

#[tokio::test]
async fn gif_and_webp_thumbnails() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let source = DynamicImage::ImageRgba8(RgbaImage::from_fn(120, 80, |x, _| {
        Rgba([(x * 2) as u8, 0, 0, 255])
    }));
    let gif = upload(
        &alice,
        "",
        "image/gif",
        encode(source.clone(), ImageFormat::Gif),
    )
    .await;
    let webp = upload(&alice, "", "image/webp", encode(source, ImageFormat::WebP)).await;
    for id in [&gif, &webp] {
        let got = get(
            &alice,
            &format!("{V1}/thumbnail/localhost/{id}?width=60&height=60&method=scale"),
        )
        .await;
        // The 320×240 scale size, never larger than the image.
        let img = decode(&got, "image/png");
        assert_eq!((img.width(), img.height()), (120, 80));
    }
    // An animation that already fits is served as it is when an animated one is asked for.
    let got = get(
        &alice,
        &format!("{V1}/thumbnail/localhost/{gif}?width=200&height=200&animated=true"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), "image/gif");
}

#[tokio::test]
async fn thumbnail_errors() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let pdf = upload(&alice, "", "application/pdf", noise(64, 1)).await;
    let broken = upload(&alice, "", "image/png", noise(64, 2)).await;
    let image = upload(&alice, "", "image/png", png(10, 10)).await;
    let cases = [
        (format!("{pdf}?width=32&height=32"), 400, "M_UNKNOWN"),
        (format!("{broken}?width=32&height=32"), 400, "M_UNKNOWN"),
        (format!("{image}?height=32"), 400, "M_MISSING_PARAM"),
        (format!("{image}?width=0&height=32"), 400, "M_INVALID_PARAM"),
        (
            format!("{image}?width=abc&height=32"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            format!("{image}?width=32&height=32&method=zoom"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "AAAAAAAAAAAAAAAAAAAAAAAA?width=32&height=32".into(),
            404,
            "M_NOT_FOUND",
        ),
    ];
    for (q, status, errcode) in cases {
        let got = get(&alice, &format!("{V1}/thumbnail/localhost/{q}")).await;
        assert_error(got.status, &got.json(), status, errcode);
    }
}

#[tokio::test]
async fn authenticated_endpoints_need_a_token() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let id = upload(&alice, "", "image/png", png(8, 8)).await;
    let anon = s.client();
    let post = reqwest::Method::POST;
    let checks = [
        (post.clone(), UPLOAD.to_owned()),
        (post, CREATE.to_owned()),
        (reqwest::Method::PUT, format!("{UPLOAD}/localhost/{id}")),
        (reqwest::Method::GET, format!("{V1}/config")),
        (
            reqwest::Method::GET,
            format!("{V1}/download/localhost/{id}"),
        ),
        (
            reqwest::Method::GET,
            format!("{V1}/download/localhost/{id}/x.png"),
        ),
        (
            reqwest::Method::GET,
            format!("{V1}/thumbnail/localhost/{id}?width=4&height=4"),
        ),
    ];
    for (method, path) in &checks {
        let got = request(
            &anon,
            method.clone(),
            path,
            Some("image/png"),
            Some(vec![1]),
        )
        .await;
        assert_error(got.status, &got.json(), 401, "M_MISSING_TOKEN");
    }
    let mut bad = s.client();
    bad.token = Some("nope".into());
    let got = get(&bad, &format!("{V1}/download/localhost/{id}")).await;
    assert_error(got.status, &got.json(), 401, "M_UNKNOWN_TOKEN");
    // The legacy query parameter authenticates too.
    let token = alice.token.clone().unwrap();
    let got = get(
        &anon,
        &format!("{V1}/download/localhost/{id}?access_token={token}"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes, png(8, 8));
    let got = get(&alice, &format!("{V1}/config")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), serde_json::json!({ "m.upload.size": 52428800 }));
}

#[tokio::test]
async fn unknown_and_remote_media_is_not_found() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let id = upload(&alice, "", "text/plain", b"x".to_vec()).await;
    for path in [
        "download/localhost/AAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        format!("download/matrix.org/{id}"),
        "download/localhost/bad%2Fid".to_owned(),
        format!("thumbnail/example.com/{id}?width=5&height=5"),
    ] {
        let got = get(&alice, &format!("{V1}/{path}")).await;
        assert_error(got.status, &got.json(), 404, "M_NOT_FOUND");
    }
}

/// Sends an upload with a chunked body (no Content-Length) over a raw connection.
async fn chunked_upload(s: &TestServer, token: &str, chunks: &[Vec<u8>]) -> (u16, Value) {
    let mut tcp = tokio::net::TcpStream::connect(s.server.addr).await.unwrap();
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for c in chunks {
        // The server may answer and close early; later writes may fail.
        let _ = tcp.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await;
        let _ = tcp.write_all(c).await;
        let _ = tcp.write_all(b"\r\n").await;
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().unwrap();
    let body_start = text.find("\r\n\r\n").unwrap() + 4;
    let body = &text[body_start..];
    // The body may itself be chunked: take the JSON object inside.
    let json = body
        .find('{')
        .zip(body.rfind('}'))
        .map(|(a, b)| serde_json::from_str(&body[a..=b]).unwrap())
        .unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn uploads_over_the_limit_are_refused_and_store_nothing() {
    let s = TestServer::start_with("[media]\nmax_upload_bytes = 1000\n").await;
    let alice = s.user("alice").await;
    let media = s.data_path().join("media");
    let got = get(&alice, &format!("{V1}/config")).await;
    assert_eq!(got.json(), serde_json::json!({ "m.upload.size": 1000 }));

    let got = upload_raw(&alice, "", "application/octet-stream", noise(1001, 0)).await;
    assert_error(got.status, &got.json(), 413, "M_TOO_LARGE");
    // Without a Content-Length the limit is enforced while streaming.
    let token = alice.token.clone().unwrap();
    let (status, body) = chunked_upload(&s, &token, &[noise(600, 1), noise(600, 2)]).await;
    assert_error(status, &body, 413, "M_TOO_LARGE");
    // The async upload is held to the same limit.
    let got = request(&alice, reqwest::Method::POST, CREATE, None, None).await;
    let uri = got.json()["content_uri"].as_str().unwrap().to_owned();
    let id = uri.rsplit('/').next().unwrap().to_owned();
    let got = put_content(&alice, &id, "text/plain", noise(2000, 3)).await;
    assert_error(got.status, &got.json(), 413, "M_TOO_LARGE");
    assert_eq!(media_files(&media), Vec::<std::path::PathBuf>::new());
    // Still pending: the id can take content within the limit.
    let got = put_content(&alice, &id, "text/plain", noise(1000, 4)).await;
    assert_eq!(got.status, 200, "{}", got.json());

    let (status, body) = chunked_upload(&s, &token, &[noise(500, 5), noise(500, 6)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(media_files(&media).len(), 2);
}

#[tokio::test]
async fn legacy_endpoints_follow_the_config() {
    let on = TestServer::start_with("[media]\nlegacy_unauthenticated = true\n").await;
    let alice = on.user("alice").await;
    let id = upload(&alice, "?filename=p.png", "image/png", png(40, 20)).await;
    let anon = on.client();
    for prefix in ["/_matrix/media/v3", "/_matrix/media/r0"] {
        let got = get(&anon, &format!("{prefix}/download/localhost/{id}")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.bytes, png(40, 20));
        assert_eq!(got.header("content-disposition"), "inline; filename=p.png");
        let got = get(&anon, &format!("{prefix}/download/localhost/{id}/q.png")).await;
        assert_eq!(got.header("content-disposition"), "inline; filename=q.png");
        let got = get(
            &anon,
            &format!("{prefix}/thumbnail/localhost/{id}?width=10&height=10&method=scale"),
        )
        .await;
        let img = decode(&got, "image/png");
        assert_eq!((img.width(), img.height()), (40, 20));
        let got = get(&anon, &format!("{prefix}/config")).await;
        assert_eq!(got.json(), serde_json::json!({ "m.upload.size": 52428800 }));
    }

    let off = TestServer::start().await;
    let alice = off.user("alice").await;
    let id = upload(&alice, "", "image/png", png(40, 20)).await;
    for path in [
        format!("download/localhost/{id}"),
        format!("thumbnail/localhost/{id}?width=10&height=10"),
        "config".to_owned(),
    ] {
        let got = get(&alice, &format!("/_matrix/media/v3/{path}")).await;
        assert_error(got.status, &got.json(), 404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn media_survives_a_restart() {
    let s = TestServer::start().await;
    let mut alice = s.user("alice").await;
    let bytes = noise(200_000, 9);
    let file = upload(&alice, "?filename=log.txt", "text/plain", bytes.clone()).await;
    let image = upload(&alice, "", "image/png", png(64, 64)).await;
    let got = get(
        &alice,
        &format!("{V1}/thumbnail/localhost/{image}?width=16&height=16"),
    )
    .await;
    let thumb = got.bytes;
    let got = request(&alice, reqwest::Method::POST, CREATE, None, None).await;
    let uri = got.json()["content_uri"].as_str().unwrap().to_owned();
    let pending = uri.rsplit('/').next().unwrap().to_owned();

    let s = s.restart().await;
    alice.base = s.server.base_url();
    let got = get(&alice, &format!("{V1}/download/localhost/{file}")).await;
    assert_eq!(got.status, 200);
    assert!(got.bytes == bytes);
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=log.txt"
    );
    let got = get(
        &alice,
        &format!("{V1}/thumbnail/localhost/{image}?width=16&height=16"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes, thumb);
    // A pending id stays reserved for its creator.
    let got = put_content(&alice, &pending, "text/plain", b"later".to_vec()).await;
    assert_eq!(got.status, 200, "{}", got.json());
    let got = get(&alice, &format!("{V1}/download/localhost/{pending}")).await;
    assert_eq!(got.bytes, b"later");
}
