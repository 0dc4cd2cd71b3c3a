//! End-to-end encryption, server side, over raw HTTP: key upload, query and claim with exact
//! bodies, to-device messages through sync, device-list changes, cross-signing with
//! user-interactive auth and signatures. The key backup tests are in `e2ee_backup.rs`.

use crate::common::{Client, TestServer, V3, assert_error, enc};
use base64::Engine;
use ruma::{CanonicalJsonObject, signatures::Ed25519KeyPair};
use serde_json::{Value, json};

/// An ed25519 key pair whose key id is `ed25519:<name>`, with its unpadded public key.
fn keypair(name: Option<&str>) -> (Ed25519KeyPair, String) {
    let doc = Ed25519KeyPair::generate();
    let probe = Ed25519KeyPair::from_der(&doc, "probe".into()).unwrap();
    let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(probe.public_key());
    let version = name.map_or(public.clone(), str::to_owned);
    (Ed25519KeyPair::from_der(&doc, version).unwrap(), public)
}

fn sign(value: &mut Value, user: &str, key: &Ed25519KeyPair) {
    let mut object: CanonicalJsonObject = serde_json::from_value(value.clone()).unwrap();
    ruma::signatures::sign_json(user, key, &mut object).unwrap();
    *value = serde_json::to_value(object).unwrap();
}

async fn whoami(c: &Client) -> (String, String) {
    let (status, body) = c.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200, "{body}");
    (
        body["user_id"].as_str().unwrap().to_owned(),
        body["device_id"].as_str().unwrap().to_owned(),
    )
}

/// Logs in again as `name`: a new device with the given display name.
async fn login(server: &TestServer, name: &str, display: &str) -> Client {
    let mut c = server.client();
    let (status, body) = c
        .post(
            &format!("{V3}/login"),
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name },
                    "password": "secret-pw", "initial_device_display_name": display }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    c.token = Some(body["access_token"].as_str().unwrap().to_owned());
    c
}

/// Device keys for the client's device, self-signed with a fresh device key.
async fn device_keys(c: &Client) -> Value {
    let (user, device) = whoami(c).await;
    let (key, public) = keypair(Some(&device));
    let mut keys = json!({
        "user_id": user, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{device}"): "Y3VydmUyNTUxOWtleQ", format!("ed25519:{device}"): public },
    });
    sign(&mut keys, &user, &key);
    keys
}

fn otk(key: &str) -> Value {
    json!({ "key": key, "signatures": { "@x:localhost": { "ed25519:X": "c2ln" } } })
}

/// The id of numbered test key `i`: ids sort like the numbers.
fn numbered_key_id(i: u32) -> String {
    format!("signed_curve25519:K{i:02}")
}

/// An upload body with numbered one-time keys.
fn numbered_keys(ids: impl IntoIterator<Item = u32>) -> Value {
    let keys: serde_json::Map<String, Value> = ids
        .into_iter()
        .map(|i| (numbered_key_id(i), otk(&format!("key{i}"))))
        .collect();
    json!({ "one_time_keys": keys })
}

async fn upload(c: &Client, body: Value) -> (u16, Value) {
    c.post(&format!("{V3}/keys/upload"), body).await
}

async fn claim(c: &Client, user: &str, device: &str) -> Value {
    let (status, body) = c
        .post(
            &format!("{V3}/keys/claim"),
            json!({ "one_time_keys": { user: { device: "signed_curve25519" } } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn upload_query_and_claim_with_exact_bodies() {
    let server = TestServer::start().await;
    let bob = server.user("bob").await;
    // Register, then log in on a named device: its name is served with its keys.
    let _registered = server.user("alice").await;
    let alice = login(&server, "alice", "Alice's phone").await;
    let (alice_id, alice_dev) = whoami(&alice).await;
    let keys = device_keys(&alice).await;

    let (status, body) = upload(
        &alice,
        json!({
            "device_keys": keys,
            "one_time_keys": { "signed_curve25519:AAAAAQ": otk("b3RrMQ"), "signed_curve25519:AAAAAg": otk("b3RrMg") },
            "fallback_keys": { "signed_curve25519:AAAAAw": otk("ZmFsbGJhY2s") },
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "one_time_key_counts": { "signed_curve25519": 2 } })
    );

    // Anyone may query: the device keys come back as uploaded, with the display name.
    let (status, body) = bob
        .post(
            &format!("{V3}/keys/query"),
            json!({ "device_keys": { &alice_id: [] } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut want = keys.clone();
    want["unsigned"] = json!({ "device_display_name": "Alice's phone" });
    assert_eq!(
        body,
        json!({ "device_keys": { &alice_id: { &alice_dev: want } } })
    );
    // Asking for an unknown device gives an empty map for the user.
    let (_, body) = bob
        .post(
            &format!("{V3}/keys/query"),
            json!({ "device_keys": { &alice_id: ["NOPE"] } }),
        )
        .await;
    assert_eq!(body, json!({ "device_keys": { &alice_id: {} } }));

    // Two claims get the two one-time keys, in key order, never the same one.
    let first = claim(&bob, &alice_id, &alice_dev).await;
    assert_eq!(
        first,
        json!({ "one_time_keys": { &alice_id: { &alice_dev: { "signed_curve25519:AAAAAQ": otk("b3RrMQ") } } } })
    );
    let second = claim(&bob, &alice_id, &alice_dev).await;
    assert_eq!(
        second,
        json!({ "one_time_keys": { &alice_id: { &alice_dev: { "signed_curve25519:AAAAAg": otk("b3RrMg") } } } })
    );
    let sync = alice.sync(None, 0).await;
    assert_eq!(
        sync["device_one_time_keys_count"],
        json!({ "signed_curve25519": 0 })
    );
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // None left: the fallback key, as often as asked, now marked used.
    for _ in 0..2 {
        assert_eq!(
            claim(&bob, &alice_id, &alice_dev).await,
            json!({ "one_time_keys": { &alice_id: { &alice_dev: { "signed_curve25519:AAAAAw": otk("ZmFsbGJhY2s") } } } })
        );
    }
    let sync = alice.sync(None, 0).await;
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));
    // An unknown device claims nothing.
    assert_eq!(
        claim(&bob, &alice_id, "NOPE").await,
        json!({ "one_time_keys": {} })
    );

    // Re-using a key id with other content is refused.
    let (status, body) = upload(
        &alice,
        json!({ "one_time_keys": { "signed_curve25519:AAAAAQ": otk("b3RrMQ") } }),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({ "one_time_key_counts": { "signed_curve25519": 1 } })
        )
    );
    let (status, body) = upload(
        &alice,
        json!({ "one_time_keys": { "signed_curve25519:AAAAAQ": otk("b3RoZXI") } }),
    )
    .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn concurrent_claims_never_share_a_key() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (alice_id, alice_dev) = whoami(&alice).await;
    let (status, _) = upload(&alice, numbered_keys(0..20)).await;
    assert_eq!(status, 200);
    let claims = (0..25).map(|_| claim(&bob, &alice_id, &alice_dev));
    let results = futures_util::future::join_all(claims).await;
    let mut got: Vec<String> = results
        .iter()
        .filter_map(|r| r["one_time_keys"][&alice_id][&alice_dev].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    got.sort();
    let want: Vec<String> = (0..20).map(numbered_key_id).collect();
    assert_eq!(got, want, "each key handed out exactly once");
}

/// Claims start after the device's last claimed key, so keys uploaded later under smaller
/// ids must still be handed out, each once, before the device runs dry.
#[tokio::test]
async fn keys_uploaded_under_smaller_ids_after_a_claim_are_still_claimed() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (alice_id, alice_dev) = whoami(&alice).await;
    let claimed = |body: &Value| -> Vec<String> {
        body["one_time_keys"][&alice_id][&alice_dev]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(upload(&alice, numbered_keys([5, 6, 7, 8, 9])).await.0, 200);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.extend(claimed(&claim(&bob, &alice_id, &alice_dev).await));
    }
    assert_eq!(got, [numbered_key_id(5), numbered_key_id(6)]);
    assert_eq!(upload(&alice, numbered_keys([0, 1, 10])).await.0, 200);
    for _ in 0..6 {
        let body = claim(&bob, &alice_id, &alice_dev).await;
        let keys = claimed(&body);
        assert_eq!(keys.len(), 1, "one key per claim: {body}");
        got.extend(keys);
    }
    got.sort();
    let want: Vec<String> = [0, 1, 5, 6, 7, 8, 9, 10].map(numbered_key_id).to_vec();
    assert_eq!(got, want, "each key handed out exactly once");
    let dry = claim(&bob, &alice_id, &alice_dev).await;
    assert_eq!(claimed(&dry), Vec::<String>::new(), "{dry}");
}

#[tokio::test]
async fn device_keys_of_another_user_or_device_are_refused() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (alice_id, _) = whoami(&alice).await;
    let mut keys = device_keys(&alice).await;
    keys["user_id"] = json!("@bob:localhost");
    let (status, body) = upload(&alice, json!({ "device_keys": keys })).await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let mut keys = device_keys(&alice).await;
    keys["device_id"] = json!("OTHERDEVICE");
    let (status, body) = upload(&alice, json!({ "device_keys": keys })).await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let (status, body) = upload(&alice, json!({ "one_time_keys": { "nocolon": "a2V5" } })).await;
    assert_eq!(status, 400, "{body}");
    // Nothing was stored.
    let (_, body) = bob
        .post(
            &format!("{V3}/keys/query"),
            json!({ "device_keys": { &alice_id: [] } }),
        )
        .await;
    assert_eq!(body, json!({ "device_keys": { &alice_id: {} } }));
}

#[tokio::test]
async fn to_device_messages_arrive_once_and_are_acknowledged() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let bob2 = login(&server, "bob", "second").await;
    let (bob_id, bob_dev) = whoami(&bob).await;
    let bob_t0 = next_batch(&bob.sync(None, 0).await);
    let bob2_t0 = next_batch(&bob2.sync(None, 0).await);

    let path = |txn: &str| format!("{V3}/sendToDevice/m.room_key_request/{txn}");
    let (status, body) = alice
        .put(
            &path("t1"),
            json!({ "messages": { &bob_id: { &bob_dev: { "n": 1 } } } }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    // The same transaction again sends nothing more.
    let (status, _) = alice
        .put(
            &path("t1"),
            json!({ "messages": { &bob_id: { &bob_dev: { "n": 1 } } } }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .put(
            &path("t2"),
            json!({ "messages": { &bob_id: { "*": { "n": 2 } } } }),
        )
        .await;
    assert_eq!(status, 200);

    let sync = bob.sync(Some(&bob_t0), 0).await;
    assert_eq!(
        sync["to_device"]["events"],
        json!([
            { "sender": "@alice:localhost", "type": "m.room_key_request", "content": { "n": 1 } },
            { "sender": "@alice:localhost", "type": "m.room_key_request", "content": { "n": 2 } },
        ])
    );
    // The next sync acknowledges them: gone, and no wait is owed either.
    let later = bob.sync(Some(&next_batch(&sync)), 0).await;
    assert!(
        later
            .get("to_device")
            .is_none_or(|t| t["events"] == json!([])),
        "{later}"
    );
    // The second device got only the wildcard message.
    let sync2 = bob2.sync(Some(&bob2_t0), 0).await;
    assert_eq!(
        sync2["to_device"]["events"],
        json!([{ "sender": "@alice:localhost", "type": "m.room_key_request", "content": { "n": 2 } }])
    );
}

#[tokio::test]
async fn to_device_backlog_comes_a_hundred_at_a_time() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (bob_id, bob_dev) = whoami(&bob).await;
    for n in 0..105 {
        let (status, _) = alice
            .put(
                &format!("{V3}/sendToDevice/m.dummy/b{n}"),
                json!({ "messages": { &bob_id: { &bob_dev: { "n": n } } } }),
            )
            .await;
        assert_eq!(status, 200);
    }
    let numbers = |sync: &Value| -> Vec<u64> {
        sync["to_device"]["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["content"]["n"].as_u64().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = bob.sync(None, 0).await;
    assert_eq!(numbers(&first), (0..100).collect::<Vec<_>>());
    // The next sync acknowledges the first hundred and gets the rest at once (pending messages
    // are never held back by the long poll); the same token again gets the rest again.
    let t0 = next_batch(&first);
    let second = bob.sync(Some(&t0), 30_000).await;
    assert_eq!(numbers(&second), (100..105).collect::<Vec<_>>());
    let again = bob.sync(Some(&t0), 0).await;
    assert_eq!(numbers(&again), (100..105).collect::<Vec<_>>());
}

#[tokio::test]
async fn to_device_wakes_a_long_poll() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (bob_id, bob_dev) = whoami(&bob).await;
    let since = next_batch(&bob.sync(None, 0).await);
    let poll = tokio::spawn({
        let bob = bob.clone();
        async move { bob.sync(Some(&since), 30_000).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, _) = alice
        .put(
            &format!("{V3}/sendToDevice/m.dummy/w1"),
            json!({ "messages": { &bob_id: { &bob_dev: {} } } }),
        )
        .await;
    assert_eq!(status, 200);
    let sync = poll.await.unwrap();
    assert_eq!(
        sync["to_device"]["events"],
        json!([{ "sender": "@alice:localhost", "type": "m.dummy", "content": {} }])
    );
}

#[tokio::test]
async fn device_lists_change_when_a_peer_uploads_keys_and_leave_when_they_go() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let t0 = next_batch(&alice.sync(None, 0).await);
    let (status, _) = bob.join(&room).await;
    assert_eq!(status, 200);
    // Bob's join makes him someone whose devices Alice must fetch.
    let sync = alice.sync(Some(&t0), 0).await;
    assert_eq!(
        sync["device_lists"]["changed"],
        json!(["@bob:localhost"]),
        "{sync}"
    );
    let t1 = next_batch(&sync);

    let (status, _) = upload(&bob, json!({ "device_keys": device_keys(&bob).await })).await;
    assert_eq!(status, 200);
    // Carol shares no room with Bob or Alice: her keys are none of Alice's business.
    let (status, _) = upload(&carol, json!({ "device_keys": device_keys(&carol).await })).await;
    assert_eq!(status, 200);
    let sync = alice.sync(Some(&t1), 0).await;
    assert_eq!(
        sync["device_lists"]["changed"],
        json!(["@bob:localhost"]),
        "{sync}"
    );
    let t2 = next_batch(&sync);
    let (status, body) = alice
        .get(&format!(
            "{V3}/keys/changes?from={}&to={}",
            enc(&t1),
            enc(&t2)
        ))
        .await;
    assert_eq!(
        (status, body),
        (200, json!({ "changed": ["@bob:localhost"], "left": [] }))
    );

    let (status, _) = bob
        .post(&format!("{V3}/rooms/{}/leave", enc(&room)), json!({}))
        .await;
    assert_eq!(status, 200);
    let sync = alice.sync(Some(&t2), 0).await;
    assert_eq!(
        sync["device_lists"]["left"],
        json!(["@bob:localhost"]),
        "{sync}"
    );
    assert!(
        sync["device_lists"]
            .get("changed")
            .is_none_or(|c| c == &json!([])),
        "{sync}"
    );

    // Deleting a device drops its keys and is a change for those who share a room.
    let t3 = next_batch(&sync);
    let (status, _) = bob.join(&room).await;
    assert_eq!(status, 200);
    let (_, bob_dev) = whoami(&bob).await;
    let (status, _) = bob.post(&format!("{V3}/logout"), json!({})).await;
    assert_eq!(status, 200);
    let sync = alice.sync(Some(&t3), 0).await;
    assert_eq!(
        sync["device_lists"]["changed"],
        json!(["@bob:localhost"]),
        "{sync}"
    );
    let (_, body) = alice
        .post(
            &format!("{V3}/keys/query"),
            json!({ "device_keys": { "@bob:localhost": [bob_dev] } }),
        )
        .await;
    assert_eq!(body, json!({ "device_keys": { "@bob:localhost": {} } }));
}

/// A user's cross-signing keys: master, and self-signing and user-signing keys signed by it.
fn cross_signing(user: &str) -> (Value, (Ed25519KeyPair, String), (Ed25519KeyPair, String)) {
    let (master, master_pub) = keypair(None);
    let (ss, ss_pub) = keypair(None);
    let (us, us_pub) = keypair(None);
    let key = |usage: &str, public: &str| json!({ "user_id": user, "usage": [usage], "keys": { format!("ed25519:{public}"): public } });
    let mut self_signing = key("self_signing", &ss_pub);
    sign(&mut self_signing, user, &master);
    let mut user_signing = key("user_signing", &us_pub);
    sign(&mut user_signing, user, &master);
    let body = json!({
        "master_key": key("master", &master_pub),
        "self_signing_key": self_signing,
        "user_signing_key": user_signing,
    });
    (body, (ss, ss_pub), (us, us_pub))
}

#[tokio::test]
async fn cross_signing_upload_needs_auth_only_to_replace_keys() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let path = format!("{V3}/keys/device_signing/upload");
    let (first, (ss, ss_pub), _) = cross_signing("@alice:localhost");

    // A user without a master key uploads without UIA; the same keys again need none either.
    assert_eq!(alice.post(&path, first.clone()).await, (200, json!({})));
    assert_eq!(alice.post(&path, first.clone()).await, (200, json!({})));

    // Replacing them asks for the password.
    let (second, _, _) = cross_signing("@alice:localhost");
    let (status, body) = alice.post(&path, second.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["flows"], json!([{ "stages": ["m.login.password"] }]));
    let session = body["session"].as_str().unwrap().to_owned();
    let mut wrong = second.clone();
    wrong["auth"] = json!({ "type": "m.login.password", "session": session,
        "identifier": { "type": "m.id.user", "user": "alice" }, "password": "nope" });
    let (status, body) = alice.post(&path, wrong).await;
    assert_error(status, &body, 401, "M_FORBIDDEN");
    // The old keys are still the ones served.
    let (_, q) = bob
        .post(
            &format!("{V3}/keys/query"),
            json!({ "device_keys": { "@alice:localhost": [] } }),
        )
        .await;
    assert_eq!(q["master_keys"]["@alice:localhost"], first["master_key"]);
    assert_eq!(
        q["self_signing_keys"]["@alice:localhost"],
        first["self_signing_key"]
    );
    // Others never see the user-signing key.
    assert!(q.get("user_signing_keys").is_none(), "{q}");
    let (_, q) = alice
        .post(
            &format!("{V3}/keys/query"),
            json!({ "device_keys": { "@alice:localhost": [] } }),
        )
        .await;
    assert_eq!(
        q["user_signing_keys"]["@alice:localhost"],
        first["user_signing_key"]
    );

    // A self-signing key not signed by the master key is refused.
    let (bad, _, _) = cross_signing("@bob:localhost");
    let mut bad_ss = bad.clone();
    bad_ss["self_signing_key"]["signatures"] = json!({});
    let (status, body) = bob.post(&path, bad_ss).await;
    assert_error(status, &body, 400, "M_INVALID_SIGNATURE");
    // Keys for another user are refused.
    let (status, body) = bob.post(&path, first.clone()).await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");

    // Alice signs her device with her self-signing key; the signature is served with the keys.
    let keys = device_keys(&alice).await;
    let (status, _) = upload(&alice, json!({ "device_keys": keys })).await;
    assert_eq!(status, 200);
    let (_, dev) = whoami(&alice).await;
    let mut signed = keys.clone();
    sign(&mut signed, "@alice:localhost", &ss);
    let mut forged = keys.clone();
    forged["signatures"]["@alice:localhost"][format!("ed25519:{ss_pub}")] = json!("Zm9yZ2Vk");
    let (status, body) = alice
        .post(
            &format!("{V3}/keys/signatures/upload"),
            json!({ "@alice:localhost": { &dev: signed, "UNKNOWN": forged.clone() } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "failures": { "@alice:localhost": { "UNKNOWN": { "errcode": "M_NOT_FOUND", "error": "Unknown key" } } } })
    );
    let (_, body) = alice
        .post(
            &format!("{V3}/keys/signatures/upload"),
            json!({ "@alice:localhost": { &dev: forged } }),
        )
        .await;
    assert_eq!(
        body,
        json!({ "failures": { "@alice:localhost": { &dev: { "errcode": "M_INVALID_SIGNATURE", "error": "Invalid signature" } } } })
    );
    let (_, q) = bob
        .post(
            &format!("{V3}/keys/query"),
            json!({ "device_keys": { "@alice:localhost": [&dev] } }),
        )
        .await;
    // The device's own signature and the self-signing key's, exactly.
    let sigs = &q["device_keys"]["@alice:localhost"][&dev]["signatures"]["@alice:localhost"];
    assert_eq!(sigs, &signed["signatures"]["@alice:localhost"], "{q}");
    assert_eq!(sigs.as_object().unwrap().len(), 2);

    // With the password, the keys are replaced.
    let mut authed = second.clone();
    authed["auth"] = json!({ "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" }, "password": "secret-pw" });
    assert_eq!(alice.post(&path, authed).await, (200, json!({})));
    let (_, q) = bob
        .post(
            &format!("{V3}/keys/query"),
            json!({ "device_keys": { "@alice:localhost": [] } }),
        )
        .await;
    assert_eq!(q["master_keys"]["@alice:localhost"], second["master_key"]);
}
