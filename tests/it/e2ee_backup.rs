//! Server-side key backup over raw HTTP: versions, session keys with the spec's rule for which
//! key of a session wins, etags and counts, and writes to a version that is no longer current.

use crate::common::{TestServer, V3, assert_error, enc};
use serde_json::{Value, json};

fn session(first_index: u64, forwarded: u64, verified: bool, tag: &str) -> Value {
    json!({ "first_message_index": first_index, "forwarded_count": forwarded, "is_verified": verified,
            "session_data": { "ephemeral": "ZXBo", "ciphertext": tag, "mac": "bWFj" } })
}

#[tokio::test]
async fn key_backup_round_trip() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let version_path = format!("{V3}/room_keys/version");
    let (status, body) = alice.get(&version_path).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    let algorithm = json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                            "auth_data": { "public_key": "cHVibGlj", "signatures": {} } });
    let (status, body) = alice.post(&version_path, algorithm.clone()).await;
    assert_eq!((status, body), (200, json!({ "version": "1" })));
    let mut info = algorithm.clone();
    info["count"] = json!(0);
    info["etag"] = json!("0");
    info["version"] = json!("1");
    assert_eq!(alice.get(&version_path).await, (200, info.clone()));
    assert_eq!(alice.get(&format!("{version_path}/1")).await, (200, info));
    // Someone else's backup is not visible.
    let (status, body) = bob.get(&format!("{version_path}/1")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    let room = "!room:localhost";
    let keys = |v: &str| format!("{V3}/room_keys/keys?version={v}");
    let room_path = |v: &str| format!("{V3}/room_keys/keys/{}?version={v}", enc(room));
    let session_path =
        |sid: &str, v: &str| format!("{V3}/room_keys/keys/{}/{sid}?version={v}", enc(room));
    let (status, body) = alice
        .put(
            &keys("1"),
            json!({ "rooms": { room: { "sessions": { "s1": session(5, 1, false, "YQ") } } } }),
        )
        .await;
    assert_eq!((status, body), (200, json!({ "etag": "1", "count": 1 })));
    let (status, body) = alice
        .put(&session_path("s2", "1"), session(0, 0, false, "Yg"))
        .await;
    assert_eq!((status, body), (200, json!({ "etag": "2", "count": 2 })));

    // The spec's rule: a worse key does not replace a better one, a better one does.
    let (_, body) = alice
        .put(&session_path("s1", "1"), session(9, 0, false, "d29yc2U"))
        .await;
    assert_eq!(body, json!({ "etag": "2", "count": 2 }));
    let (_, body) = alice
        .put(&session_path("s1", "1"), session(5, 0, false, "bGVzc2Zvcg"))
        .await;
    assert_eq!(body, json!({ "etag": "3", "count": 2 }));
    let (_, body) = alice
        .put(&session_path("s1", "1"), session(7, 3, true, "dmVyaWZpZWQ"))
        .await;
    assert_eq!(body, json!({ "etag": "4", "count": 2 }));
    let (_, body) = alice
        .put(
            &session_path("s1", "1"),
            session(0, 0, false, "dW52ZXJpZmllZA"),
        )
        .await;
    assert_eq!(body, json!({ "etag": "4", "count": 2 }));

    assert_eq!(
        alice.get(&keys("1")).await,
        (
            200,
            json!({ "rooms": { room: { "sessions": {
            "s1": session(7, 3, true, "dmVyaWZpZWQ"), "s2": session(0, 0, false, "Yg") } } } })
        )
    );
    assert_eq!(
        alice.get(&session_path("s2", "1")).await,
        (200, session(0, 0, false, "Yg"))
    );
    let (status, body) = alice.get(&session_path("s3", "1")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // A new version becomes current: writing to the old one is refused, with the current one.
    let (_, body) = alice.post(&version_path, algorithm.clone()).await;
    assert_eq!(body, json!({ "version": "2" }));
    let (status, body) = alice
        .put(&session_path("s9", "1"), session(0, 0, false, "eA"))
        .await;
    assert_error(status, &body, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(body["current_version"], "2");
    let (status, body) = alice
        .put(&session_path("s9", "7"), session(0, 0, false, "eA"))
        .await;
    assert_error(status, &body, 403, "M_WRONG_ROOM_KEYS_VERSION");
    // The old version is still readable; deleting its keys and then it works.
    let (_, body) = alice.get(&room_path("1")).await;
    assert_eq!(body["sessions"].as_object().unwrap().len(), 2);
    assert_eq!(
        alice.delete(&session_path("s2", "1"), json!({})).await,
        (200, json!({ "etag": "5", "count": 1 }))
    );
    assert_eq!(
        alice.delete(&format!("{version_path}/1"), json!({})).await,
        (200, json!({}))
    );
    let (status, body) = alice.get(&keys("1")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // Changing a version's algorithm is refused; its auth_data may change.
    let mut other = algorithm.clone();
    other["algorithm"] = json!("org.example.other");
    let (status, body) = alice.put(&format!("{version_path}/2"), other).await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let mut updated = algorithm.clone();
    updated["auth_data"]["public_key"] = json!("bmV3");
    assert_eq!(
        alice
            .put(&format!("{version_path}/2"), updated.clone())
            .await,
        (200, json!({}))
    );
    let (_, body) = alice.get(&version_path).await;
    assert_eq!(body["auth_data"], updated["auth_data"]);
}
