//! Key queries (`/_matrix/key/v2/query`): Charla vouches for the keys it fetched, signed by
//! itself too, and a Charla with `trusted_key_servers` checks a server that no longer answers
//! key fetches through such a notary.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::{certificate, fake::Fake, peer_at};
use crate::common::enc;

/// An unauthenticated request to a federation listener; status and JSON answer.
async fn ask(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}{path}", addr.port());
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The fake asks the server federating on `port` for a profile: a signed request that the
/// server must check with the fake's keys.
async fn ask_profile(
    fake: &Fake,
    server: &charla::server::RunningServer,
    port: u16,
) -> (u16, Value) {
    let name = format!("127.0.0.1:{port}");
    let uri = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        enc(&format!("@nobody:{name}"))
    );
    fake.call(server.federation_addr.unwrap(), &name, "GET", &uri, None)
        .await
}

/// The signers of a key document.
fn signers(document: &Value) -> Vec<String> {
    let mut signers: Vec<String> = document["signatures"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    signers.sort();
    signers
}

#[tokio::test]
async fn a_notary_vouches_for_the_keys_of_a_server_that_no_longer_answers() {
    let certs = tempfile::tempdir().unwrap();
    certificate(certs.path());
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let a_port = crate::common::process::free_port();
    let a = peer_at(certs.path(), a_port, dirs[0].path(), "").await;
    let a_name = format!("127.0.0.1:{a_port}");
    let b_port = crate::common::process::free_port();
    let trusting = format!("trusted_key_servers = [\"{a_name}\"]");
    let b = peer_at(certs.path(), b_port, dirs[1].path(), &trusting).await;
    let c_port = crate::common::process::free_port();
    let c = peer_at(certs.path(), c_port, dirs[2].path(), "").await;
    let fake = Fake::start(certs.path()).await;
    // The fake asks A something: A fetches its keys to check the request.
    let a_addr = a.federation_addr.unwrap();
    let (status, answer) = ask_profile(&fake, &a, a_port).await;
    assert_eq!((status, &answer["errcode"]), (404, &json!("M_NOT_FOUND")));

    // A answers key queries for the fake and for itself; the fake's document carries both
    // the fake's signature and A's.
    let query = json!({ "server_keys": {
        fake.name.as_str(): { "ed25519:fake": { "minimum_valid_until_ts": 0 } },
        a_name.as_str(): {},
    }});
    let (status, answer) = ask(a_addr, "POST", "/_matrix/key/v2/query", Some(query)).await;
    assert_eq!(status, 200, "{answer}");
    let documents = answer["server_keys"].as_array().unwrap();
    assert_eq!(documents.len(), 2, "{answer}");
    let of = |name: &str| {
        documents
            .iter()
            .find(|d| d["server_name"] == name)
            .unwrap_or_else(|| panic!("{name} in {answer}"))
    };
    let mut both = vec![a_name.clone(), fake.name.clone()];
    both.sort();
    assert_eq!(signers(of(&fake.name)), both);
    assert!(of(&fake.name)["verify_keys"]["ed25519:fake"]["key"].is_string());
    assert_eq!(signers(of(&a_name)), vec![a_name.clone()]);
    let (status, answer) = ask(
        a_addr,
        "GET",
        &format!("/_matrix/key/v2/query/{}", enc(&fake.name)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["server_keys"][0]["server_name"], json!(fake.name));
    // Bad queries change nothing and say why.
    let (status, answer) = ask(a_addr, "GET", "/_matrix/key/v2/query/not%20a%20name", None).await;
    assert_eq!(
        (status, &answer["errcode"]),
        (400, &json!("M_INVALID_PARAM"))
    );
    let many: serde_json::Map<String, Value> = (0..51)
        .map(|i| (format!("s{i}.example"), json!({})))
        .collect();
    let (status, answer) = ask(
        a_addr,
        "POST",
        "/_matrix/key/v2/query",
        Some(json!({ "server_keys": many })),
    )
    .await;
    assert_eq!((status, &answer["errcode"]), (400, &json!("M_BAD_JSON")));

    // The fake stops serving its keys. B, which trusts A, checks the fake's request with the
    // keys A vouches for; C, which trusts nobody, cannot.
    fake.stop_key_server();
    let (status, answer) = ask_profile(&fake, &b, b_port).await;
    assert_eq!(
        (status, &answer["errcode"]),
        (404, &json!("M_NOT_FOUND")),
        "authenticated through the notary: {answer}"
    );
    let (status, answer) = ask_profile(&fake, &c, c_port).await;
    assert_eq!(
        (status, &answer["errcode"]),
        (401, &json!("M_UNAUTHORIZED")),
        "{answer}"
    );
    for server in [a, b, c] {
        server.stop().await;
    }
}
