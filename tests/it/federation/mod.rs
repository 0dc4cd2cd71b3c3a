//! The federation listener: TLS with the configured certificate, the server's signed keys, the
//! version, unknown endpoints, and the `/.well-known/matrix/server` delegation.

mod acl;
mod attacks;
mod backfill;
mod fake;
mod forks;
mod history;
mod knock;
mod media;
mod notary;
mod restricted;
mod rooms;
mod srv;
mod synapse;

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
pub(crate) fn certificate(dir: &Path) -> String {
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
        "/_matrix/federation/v1/openid/userinfo",
        "/_matrix/client/versions",
        "/_matrix/federation/v1/exchange_third_party_invite/!r:localhost",
    ] {
        let (status, body) = get(&client, addr, path).await;
        assert_error(status, &body, 404, "M_UNRECOGNIZED");
    }
    // A known path with the wrong method says so, as the client API does.
    let response = client
        .post(format!(
            "https://localhost:{}/_matrix/key/v2/server",
            addr.port()
        ))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_error(status, &body, 405, "M_UNRECOGNIZED");
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

/// A federating server named `127.0.0.1:<its federation port>`, reaching peers on loopback
/// without checking their (self-signed) certificates; `more` is added to `[federation]`.
async fn peer(certs: &Path, more: &str) -> (charla::server::RunningServer, tempfile::TempDir) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    (peer_at(certs, port, dir.path(), more).await, dir)
}

/// [`peer`] on a given federation port and data folder: how a test restarts one.
pub(crate) async fn peer_at(
    certs: &Path,
    port: u16,
    dir: &Path,
    more: &str,
) -> charla::server::RunningServer {
    let text = format!(
        "server_name = \"127.0.0.1:{port}\"\n\
         [storage]\npath = {:?}\ncache_capacity_mb = 16\n\
         [logging]\nfilter = \"warn\"\n\
         [federation]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
         tls_certificate = {:?}\ntls_private_key = {:?}\n\
         verify_certificates = false\nip_range_blocklist = []\n{more}\n",
        dir.join("data"),
        certs.join("cert.pem"),
        certs.join("key.pem"),
    );
    let mut config = Config::from_toml(&text).unwrap();
    config.server.listen = ([127, 0, 0, 1], 0).into();
    charla::server::start(config).await.unwrap()
}

/// Two federating servers on loopback; `b_more` is added to B's `[federation]`.
pub(crate) struct Pair {
    pub(crate) a: charla::server::RunningServer,
    pub(crate) b: charla::server::RunningServer,
    /// The certificate's and the two data folders, removed when the test ends.
    pub(crate) _dirs: [tempfile::TempDir; 3],
}

pub(crate) async fn pair(b_more: &str) -> Pair {
    pair_with("", b_more).await
}

/// Two federating servers on loopback, each with more `[federation]` settings.
pub(crate) async fn pair_with(a_more: &str, b_more: &str) -> Pair {
    let certs = tempfile::tempdir().unwrap();
    certificate(certs.path());
    let (a, a_dir) = peer(certs.path(), a_more).await;
    let (b, b_dir) = peer(certs.path(), b_more).await;
    Pair {
        a,
        b,
        _dirs: [certs, a_dir, b_dir],
    }
}

/// An `X-Matrix` header for `GET uri` from `origin` to `destination`, signed by a key of
/// version `version` that is not `origin`'s.
fn forged(origin: &str, destination: &str, version: &str, uri: &str) -> String {
    let der = ruma::signatures::Ed25519KeyPair::generate();
    let key = ruma::signatures::Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap();
    let mut object: CanonicalJsonObject = serde_json::from_value(serde_json::json!({
        "method": "GET", "uri": uri, "origin": origin, "destination": destination,
    }))
    .unwrap();
    ruma::signatures::sign_json(origin, &key, &mut object).unwrap();
    let sig = object["signatures"].as_object().unwrap()[origin]
        .as_object()
        .unwrap()[&format!("ed25519:{version}")]
        .as_str()
        .unwrap()
        .to_owned();
    format!(
        "X-Matrix origin=\"{origin}\",destination=\"{destination}\",key=\"ed25519:{version}\",sig=\"{sig}\""
    )
}

#[tokio::test]
async fn a_user_reads_a_profile_on_another_server_and_forged_requests_are_refused() {
    let Pair { a, b, _dirs } = pair("").await;
    let (a_name, b_name) = (
        a.services.config.server_name.clone(),
        b.services.config.server_name.clone(),
    );
    let bob = crate::common::registered(&b.base_url(), "bob").await;
    let (status, body) = bob
        .put(
            &format!("/_matrix/client/v3/profile/@bob:{b_name}/displayname"),
            serde_json::json!({ "displayname": "Bob de B" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Alice on A asks for Bob's profile: A signs a query to B, B checks it with A's key.
    let alice = crate::common::registered(&a.base_url(), "alice").await;
    let (status, body) = alice
        .get(&format!("/_matrix/client/v3/profile/@bob:{b_name}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({ "displayname": "Bob de B" }));
    let (status, body) = alice
        .get(&format!(
            "/_matrix/client/v3/profile/@bob:{b_name}/displayname"
        ))
        .await;
    assert_eq!(
        (status, &body["displayname"]),
        (200, &Value::from("Bob de B"))
    );
    let (status, body) = alice
        .get(&format!("/_matrix/client/v3/profile/@nobody:{b_name}"))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // Straight to B's federation listener, as an attacker would.
    let b_fed = b.federation_addr.unwrap();
    let uri = format!(
        "/_matrix/federation/v1/query/profile?user_id=%40bob%3A{}",
        b_name.as_str().replace(':', "%3A")
    );
    let ask = |authorization: Option<String>| raw_get(b_fed, &uri, authorization);
    let (status, body) = ask(None).await;
    assert_error(status, &body, 401, "M_UNAUTHORIZED");
    // In A's name with a key A does not publish, and with A's key id but another key.
    let (_, a_keys) = raw_get(a.federation_addr.unwrap(), "/_matrix/key/v2/server", None).await;
    let a_key_id = a_keys["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let a_version = a_key_id.trim_start_matches("ed25519:");
    for header in [
        forged(a_name.as_str(), b_name.as_str(), "unknown", &uri),
        forged(a_name.as_str(), b_name.as_str(), a_version, &uri),
        // From a server that does not exist.
        forged("127.0.0.1:1", b_name.as_str(), "1", &uri),
        // Meant for another server.
        forged(a_name.as_str(), "elsewhere.example", a_version, &uri),
        // In B's own name.
        forged(b_name.as_str(), b_name.as_str(), "1", &uri),
        "X-Matrix garbage".to_owned(),
    ] {
        let (status, body) = ask(Some(header.clone())).await;
        assert_error(status, &body, 401, "M_UNAUTHORIZED");
        assert!(body.get("displayname").is_none(), "{header}: {body}");
    }
}

/// `GET uri` straight to a federation listener at `addr`, its certificate unchecked, with
/// `authorization` as the header: the status and the JSON answer.
async fn raw_get(addr: SocketAddr, uri: &str, authorization: Option<String>) -> (u16, Value) {
    let insecure = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut request = insecure.get(format!("https://127.0.0.1:{}{uri}", addr.port()));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn key_fetches_and_peers_requests_are_bounded() {
    let Pair { a, b, _dirs } = pair("per_origin_per_second = 0.001\nper_origin_burst = 3").await;
    let b_name = b.services.config.server_name.clone();
    let b_fed = b.federation_addr.unwrap();
    let uri = "/_matrix/federation/v1/query/profile?user_id=%40x%3Ay";
    let ask = |origin: String| {
        let header = forged(&origin, b_name.as_str(), "1", uri);
        raw_get(b_fed, uri, Some(header))
    };
    // An authenticated peer gets its burst, then 429s (which its users see as a failure).
    let alice = crate::common::registered(&a.base_url(), "alice").await;
    crate::common::registered(&b.base_url(), "bob").await;
    let path = format!("/_matrix/client/v3/profile/@bob:{b_name}");
    for _ in 0..3 {
        let (status, body) = alice.get(&path).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = alice.get(&path).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("429"), "{body}");
    // A server that does not answer: refused, and not asked again for a while.
    for attempt in 0..3 {
        let (status, body) = ask("127.0.0.1:1".to_owned()).await;
        assert_error(status, &body, 401, "M_UNAUTHORIZED");
        let again = body["error"]
            .as_str()
            .unwrap()
            .contains("failed a moment ago");
        assert_eq!(again, attempt > 0, "{body}");
    }
    // Each new origin makes B call it: one address may cause 20 such calls, then waits.
    let mut limited = 0;
    for port in 2..=30 {
        let (status, body) = ask(format!("127.0.0.1:{port}")).await;
        match status {
            401 => assert_error(status, &body, 401, "M_UNAUTHORIZED"),
            _ => {
                assert_error(status, &body, 429, "M_LIMIT_EXCEEDED");
                limited += 1;
            }
        }
    }
    assert!(limited >= 5, "{limited} of 29 limited");
}

#[tokio::test]
async fn device_keys_are_queried_and_claimed_across_servers() {
    use base64::Engine;
    let Pair { a, b, _dirs } = pair("").await;
    let b_name = b.services.config.server_name.clone();
    let bob = crate::common::registered(&b.base_url(), "bob").await;
    let (_, me) = bob.get("/_matrix/client/v3/account/whoami").await;
    let (bob_id, device) = (
        me["user_id"].as_str().unwrap(),
        me["device_id"].as_str().unwrap(),
    );
    // Bob's device keys, self-signed, and two one-time keys.
    let der = ruma::signatures::Ed25519KeyPair::generate();
    let key = ruma::signatures::Ed25519KeyPair::from_der(&der, device.to_owned()).unwrap();
    let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.public_key());
    let mut keys: CanonicalJsonObject = serde_json::from_value(serde_json::json!({
        "user_id": bob_id, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{device}"): "Y3VydmUyNTUxOWtleQ", format!("ed25519:{device}"): public },
    }))
    .unwrap();
    ruma::signatures::sign_json(bob_id, &key, &mut keys).unwrap();
    let otk = |k: &str| serde_json::json!({ "key": k, "signatures": { bob_id: { format!("ed25519:{device}"): "c2ln" } } });
    let (status, body) = bob
        .post(
            "/_matrix/client/v3/keys/upload",
            serde_json::json!({ "device_keys": keys, "one_time_keys": {
                "signed_curve25519:AAAA": otk("first"), "signed_curve25519:AAAB": otk("second"),
            } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Alice on A asks for Bob's keys: A asks B.
    let alice = crate::common::registered(&a.base_url(), "alice").await;
    let (status, body) = alice
        .post(
            "/_matrix/client/v3/keys/query",
            serde_json::json!({ "device_keys": { bob_id: [], format!("@carol:127.0.0.1:1"): [] } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Exactly what Bob uploaded, with his signature.
    let uploaded = serde_json::to_value(&keys).unwrap();
    let got = &body["device_keys"][bob_id][device];
    assert_eq!(got["keys"], uploaded["keys"], "{body}");
    assert_eq!(got["signatures"], uploaded["signatures"], "{body}");
    // A server that does not answer is a failure, the others still answer.
    assert!(body["failures"]["127.0.0.1:1"].is_object(), "{body}");
    // Claims take one key each, in order, and never the same twice.
    for want in ["first", "second"] {
        let (status, body) = alice
            .post(
                "/_matrix/client/v3/keys/claim",
                serde_json::json!({ "one_time_keys": { bob_id: { device: "signed_curve25519" } } }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let claimed = body["one_time_keys"][bob_id][device].as_object().unwrap();
        assert_eq!(claimed.len(), 1, "{body}");
        assert_eq!(claimed.values().next().unwrap()["key"], want, "{body}");
    }
    let (_, body) = alice
        .post(
            "/_matrix/client/v3/keys/claim",
            serde_json::json!({ "one_time_keys": { bob_id: { device: "signed_curve25519" } } }),
        )
        .await;
    assert!(body["one_time_keys"].get(bob_id).is_none(), "{body}");
    assert_eq!(b_name.as_str(), bob_id.split_once(':').unwrap().1);
}

#[tokio::test]
async fn an_alias_of_another_server_resolves_through_it() {
    let Pair { a, b, _dirs } = pair("").await;
    let b_name = b.services.config.server_name.clone();
    let bob = crate::common::registered(&b.base_url(), "bob").await;
    let room = bob
        .create_room(serde_json::json!({ "room_alias_name": "lobby" }))
        .await;
    let alice = crate::common::registered(&a.base_url(), "alice").await;
    let alias = format!("%23lobby%3A{}", b_name.as_str().replace(':', "%3A"));
    let (status, body) = alice
        .get(&format!("/_matrix/client/v3/directory/room/{alias}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({ "room_id": room, "servers": [b_name] })
    );
    let missing = format!("%23nowhere%3A{}", b_name.as_str().replace(':', "%3A"));
    let (status, body) = alice
        .get(&format!("/_matrix/client/v3/directory/room/{missing}"))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
}
