//! Devices: list, get, rename, delete (one, or in bulk behind user-interactive auth).

use serde_json::json;

use super::{PASSWORD, assert_challenge, device_ids, login, login_client, password_auth, whoami};
use crate::common::{TestServer, V3, assert_error};

#[tokio::test]
async fn devices_list_get_rename_delete() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (_, res) = login(
        &s,
        json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD,
                "device_id": "PHONE", "initial_device_display_name": "Phone" }),
    )
    .await;
    let mut phone = s.client();
    phone.token = res["access_token"].as_str().map(str::to_owned);
    let own_device = whoami(&alice).await.1["device_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut expected = vec![own_device.clone(), "PHONE".to_owned()];
    expected.sort();
    assert_eq!(device_ids(&alice).await, expected);

    let (status, d) = alice.get(&format!("{V3}/devices/PHONE")).await;
    assert_eq!(status, 200);
    assert_eq!(d["device_id"], "PHONE");
    assert_eq!(d["display_name"], "Phone");

    let (status, body) = alice
        .put(
            &format!("{V3}/devices/PHONE"),
            json!({ "display_name": "Work phone" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (_, d) = alice.get(&format!("{V3}/devices/PHONE")).await;
    assert_eq!(d["display_name"], "Work phone");

    let (status, body) = alice.get(&format!("{V3}/devices/NOSUCH")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // Another user's devices are not visible.
    let bob = s.user("bob").await;
    let (status, body) = bob.get(&format!("{V3}/devices/PHONE")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // Deleting needs the password through user-interactive auth.
    let (status, body) = alice
        .delete(&format!("{V3}/devices/PHONE"), json!({}))
        .await;
    let session = assert_challenge(status, &body, &["m.login.password"]);
    assert_eq!(whoami(&phone).await.0, 200, "not deleted yet");

    let (status, body) = alice
        .delete(
            &format!("{V3}/devices/PHONE"),
            json!({ "auth": password_auth("@alice:localhost", "wrong", &session) }),
        )
        .await;
    assert_challenge(status, &body, &["m.login.password"]);
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(
        whoami(&phone).await.0,
        200,
        "not deleted after a wrong password"
    );

    // Bob's password does not authorise Alice's deletion.
    let (status, body) = alice
        .delete(
            &format!("{V3}/devices/PHONE"),
            json!({ "auth": password_auth("@bob:localhost", PASSWORD, &session) }),
        )
        .await;
    assert_challenge(status, &body, &["m.login.password"]);
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");

    let (status, body) = alice
        .delete(
            &format!("{V3}/devices/PHONE"),
            json!({ "auth": password_auth("@alice:localhost", PASSWORD, &session) }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = whoami(&phone).await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(device_ids(&alice).await, vec![own_device]);
    let (status, _) = alice.get(&format!("{V3}/devices/PHONE")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn delete_devices_in_bulk_with_uia() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let a = login_client(&s, "alice", PASSWORD).await;
    let b = login_client(&s, "alice", PASSWORD).await;
    let a_id = whoami(&a).await.1["device_id"].as_str().unwrap().to_owned();
    let b_id = whoami(&b).await.1["device_id"].as_str().unwrap().to_owned();
    let body = json!({ "devices": [a_id, b_id, "UNKNOWN"] });
    let (status, res) = alice
        .post(&format!("{V3}/delete_devices"), body.clone())
        .await;
    let session = assert_challenge(status, &res, &["m.login.password"]);
    let mut with_auth = body;
    with_auth["auth"] = password_auth("alice", PASSWORD, &session);
    let (status, res) = alice.post(&format!("{V3}/delete_devices"), with_auth).await;
    assert_eq!((status, res), (200, json!({})));
    for c in [&a, &b] {
        assert_eq!(whoami(c).await.0, 401);
    }
    assert_eq!(whoami(&alice).await.0, 200);
    assert_eq!(device_ids(&alice).await.len(), 1);
}
