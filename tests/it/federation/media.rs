//! Media across servers: a user of one server downloads (and thumbnails) media uploaded on
//! another, which this server fetches over federation (`multipart/mixed`) and caches.

use serde_json::Value;

use super::{Pair, pair};
use crate::{common::registered, media::png};

/// Uploads `bytes` as `name` to the server at `base`; the `mxc://` URI.
pub(super) async fn upload(
    base: &str,
    token: &str,
    content_type: &str,
    name: &str,
    bytes: Vec<u8>,
) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/_matrix/media/v3/upload?filename={name}"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["content_uri"].as_str().unwrap().to_owned()
}

/// `GET` on the client API of `base` with a token: status, headers, bytes.
pub(super) async fn fetch(
    base: &str,
    token: &str,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn media_of_another_server_is_fetched_cached_and_thumbnailed() {
    let Pair { a, b, _dirs } = pair("").await;
    let alice = registered(&a.base_url(), "alice").await;
    let bob = registered(&b.base_url(), "bob").await;
    let (alice_token, bob_token) = (alice.token.clone().unwrap(), bob.token.clone().unwrap());
    let image = png(64, 48);
    let uri = upload(
        &a.base_url(),
        &alice_token,
        "image/png",
        "Factura%20%C3%B1.png",
        image.clone(),
    )
    .await;
    let (server, id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    assert_eq!(server, a.services.config.server_name.as_str());

    // Bob, on B, downloads it: the same bytes, type and name.
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
    let (status, headers, bytes) = fetch(&b.base_url(), &bob_token, &path).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, image);
    assert_eq!(headers["content-type"], "image/png");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.contains("filename*=utf-8''Factura%20%C3%B1.png"),
        "{disposition}"
    );

    // Media A does not have: 404, as A says.
    let (status, _, body) = fetch(
        &b.base_url(),
        &bob_token,
        &format!("/_matrix/client/v1/media/download/{server}/nope"),
    )
    .await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, &body["errcode"]),
        (404, &Value::from("M_NOT_FOUND")),
        "{body}"
    );

    // Cached on B: served with A gone.
    a.stop().await;
    let (status, _, again) = fetch(&b.base_url(), &bob_token, &path).await;
    assert_eq!((status, again), (200, image));
    let thumb =
        format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32&method=scale");
    let (status, headers, bytes) = fetch(&b.base_url(), &bob_token, &thumb).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/png");
    let decoded = image::load_from_memory(&bytes).unwrap();
    // The configured size nearest the request, never larger than the original.
    assert!(
        decoded.width() <= 64 && decoded.height() <= 48,
        "{}x{}",
        decoded.width(),
        decoded.height()
    );

    // A server that is gone: 502, and nothing cached.
    let (status, _, _) = fetch(
        &b.base_url(),
        &bob_token,
        &format!("/_matrix/client/v1/media/download/{server}/other"),
    )
    .await;
    assert_eq!(status, 502);
}
