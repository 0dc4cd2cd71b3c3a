//! The federation listener: TLS with the configured certificate, the server's signed keys, the
//! version, unknown endpoints, and the `/.well-known/matrix/server` delegation.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use charla::config::Config;
use ruma::{
    CanonicalJsonObject,
    signatures::{PublicKeyMap, verify_json},
};
use serde_json::Value;

use crate::common::{TestServer, assert_error};

/// A self-signed certificate for `localhost`, written as `cert.pem` and `key.pem` in `dir`;
/// the certificate's PEM.
fn certificate(dir: &Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    pem
}

fn federate(config: &mut Config, certs: &Path) {
    let f = &mut config.federation;
    f.enabled = true;
    f.listen = ([127, 0, 0, 1], 0).into();
    f.tls_certificate = certs.join("cert.pem");
    f.tls_private_key = certs.join("key.pem");
}

/// A server federating on an ephemeral port, and a client that trusts only its certificate
/// and reaches it as `localhost`.
async fn federating(extra: &str) -> (TestServer, reqwest::Client, SocketAddr, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let pem = certificate(certs.path());
    let server = TestServer::start_adjusted(extra, |c| federate(c, certs.path())).await;
    let addr = server
        .server
        .federation_addr
        .expect("the federation listener");
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .resolve("localhost", addr)
        .build()
        .unwrap();
    (server, client, addr, certs)
}

async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, Value) {
    let url = format!("https://localhost:{}{path}", addr.port());
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_server_publishes_its_key_signed_by_itself_over_tls() {
    let (_server, client, addr, _certs) = federating("").await;
    let (status, doc) = get(&client, addr, "/_matrix/key/v2/server").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["server_name"], "localhost");
    assert_eq!(doc["old_verify_keys"], serde_json::json!({}));
    let keys = doc["verify_keys"].as_object().unwrap();
    assert_eq!(keys.len(), 1);
    let (key_id, key) = keys.iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"), "{key_id}");
    let public = key["key"].as_str().unwrap();
    // A day ahead, as Synapse publishes.
    let now = ruma::MilliSecondsSinceUnixEpoch::now().get();
    let until = doc["valid_until_ts"].as_u64().unwrap();
    let day = 86_400_000;
    assert!(
        until > u64::from(now) + day - 60_000 && until <= u64::from(now) + day,
        "{until}"
    );
    // Signed by the key it lists.
    let object: CanonicalJsonObject = serde_json::from_value(doc.clone()).unwrap();
    let map: PublicKeyMap = BTreeMap::from([(
        "localhost".to_owned(),
        BTreeMap::from([(key_id.clone(), ruma::serde::Base64::parse(public).unwrap())]),
    )]);
    verify_json(&map, &object).unwrap();
    // The same key on every ask.
    let (_, again) = get(&client, addr, "/_matrix/key/v2/server").await;
    assert_eq!(again["verify_keys"], doc["verify_keys"]);
}

#[tokio::test]
async fn the_version_answers_and_every_other_path_is_unrecognized() {
    let (server, client, addr, _certs) = federating("").await;
    let (status, body) = get(&client, addr, "/_matrix/federation/v1/version").await;
    assert_eq!(status, 200);
    assert_eq!(body["server"]["name"], "Charla");
    assert_eq!(body["server"]["version"], env!("CARGO_PKG_VERSION"));
    // Not built yet, and not the client API: peers are told the endpoint is unknown.
    for path in [
        "/_matrix/federation/v1/query/profile?user_id=@a:localhost",
        "/_matrix/client/versions",
        "/_matrix/key/v2/query/localhost",
    ] {
        let (status, body) = get(&client, addr, path).await;
        assert_error(status, &body, 404, "M_UNRECOGNIZED");
    }
    // The client listener does not serve the Server-Server API.
    let (status, body) = server.client().get("/_matrix/federation/v1/version").await;
    assert_error(status, &body, 404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn the_federation_listener_speaks_only_tls() {
    let (_server, _client, addr, _certs) = federating("").await;
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/_matrix/federation/v1/version",
            addr.port()
        ))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that does not trust the certificate refuses it.
    let strict = reqwest::Client::builder()
        .resolve("localhost", addr)
        .build()
        .unwrap()
        .get(format!(
            "https://localhost:{}/_matrix/federation/v1/version",
            addr.port()
        ))
        .send()
        .await;
    assert!(strict.is_err(), "{strict:?}");
}

#[tokio::test]
async fn well_known_delegates_only_when_configured() {
    let (server, _client, _addr, _certs) =
        federating("[federation]\nwell_known_server = \"matrix.example.com:443\"\n").await;
    let (status, body) = server.client().get("/.well-known/matrix/server").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({ "m.server": "matrix.example.com:443" })
    );
    let (plain, _client, _addr, _certs) = federating("").await;
    let (status, body) = plain.client().get("/.well-known/matrix/server").await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // Federation off: nothing to delegate.
    let off = TestServer::start_with("[federation]\nwell_known_server = \"m.example.com\"\n").await;
    assert!(off.server.federation_addr.is_none());
    let (status, body) = off.client().get("/.well-known/matrix/server").await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn bad_federation_settings_are_refused_naming_the_key() {
    for (extra, key) in [
        (
            "ip_range_blocklist = [\"10.0.0.0/33\"]",
            "federation.ip_range_blocklist",
        ),
        (
            "ip_range_blocklist = [\"nowhere\"]",
            "federation.ip_range_blocklist",
        ),
        (
            "well_known_server = \"not a host\"",
            "federation.well_known_server",
        ),
    ] {
        let text = format!("server_name = \"x\"\n[federation]\n{extra}\n");
        let error = Config::from_toml(&text).unwrap_err().to_string();
        assert!(error.contains(key), "{extra}: {error}");
    }
    // Enabled without a certificate: the server does not start, and says which file.
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::config_for(&dir.path().join("data"), "");
    federate(&mut config, &dir.path().join("missing"));
    let error = match charla::server::start(config).await {
        Ok(_) => panic!("started without a certificate"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("cert.pem"), "{error}");
}
