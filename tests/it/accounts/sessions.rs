//! Login and sessions: login types, user identifiers, wrong passwords, `whoami`, logout.

use serde_json::json;

use super::{PASSWORD, device_ids, login, login_client, password_login, whoami};
use crate::common::{TestServer, V3, assert_error};

#[tokio::test]
async fn login_types_list_password_and_application_service() {
    let s = TestServer::start().await;
    let (status, body) = s.client().get(&format!("{V3}/login")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "flows": [{ "type": "m.login.password" }, { "type": "m.login.application_service" }] })
    );
}

#[tokio::test]
async fn login_by_full_id_localpart_and_legacy_user_field() {
    let s = TestServer::start().await;
    let _alice = s.user("alice").await;
    let bodies = [
        password_login("@alice:localhost", PASSWORD),
        password_login("alice", PASSWORD),
        password_login("ALICE", PASSWORD),
        json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD }),
        json!({ "type": "m.login.password", "user": "@alice:localhost", "password": PASSWORD }),
    ];
    let mut tokens = Vec::new();
    let mut devices = Vec::new();
    for body in bodies {
        let (status, res) = login(&s, body.clone()).await;
        assert_eq!(status, 200, "{body}: {res}");
        assert_eq!(res["user_id"], "@alice:localhost");
        let token = res["access_token"].as_str().unwrap().to_owned();
        let device = res["device_id"].as_str().unwrap().to_owned();
        let mut c = s.client();
        c.token = Some(token.clone());
        let (_, me) = whoami(&c).await;
        assert_eq!(
            me["device_id"], device,
            "the token belongs to the returned device"
        );
        tokens.push(token);
        devices.push(device);
    }
    tokens.sort();
    tokens.dedup();
    devices.sort();
    devices.dedup();
    assert_eq!(tokens.len(), 5, "each login gets its own token");
    assert_eq!(devices.len(), 5, "each login gets its own device");

    // A chosen device id and display name are kept.
    let (status, res) = login(
        &s,
        json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD,
                "device_id": "PHONE", "initial_device_display_name": "My phone" }),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["device_id"], "PHONE");
}

#[tokio::test]
async fn wrong_password_or_unknown_user_is_403_forbidden() {
    let s = TestServer::start().await;
    let _alice = s.user("alice").await;
    let (status, wrong) = login(&s, password_login("alice", "not-the-password")).await;
    assert_error(status, &wrong, 403, "M_FORBIDDEN");
    let (status, unknown) = login(&s, password_login("nobody", PASSWORD)).await;
    assert_error(status, &unknown, 403, "M_FORBIDDEN");
    // The same answer for both, so logins do not reveal which accounts exist.
    assert_eq!(wrong, unknown);
    // Unsupported login types are refused.
    let (status, body) = login(&s, json!({ "type": "m.login.token", "token": "abc" })).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn whoami_returns_user_and_device() {
    let s = TestServer::start().await;
    let _alice = s.user("alice").await;
    let (status, res) = login(
        &s,
        json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD, "device_id": "DEV1" }),
    )
    .await;
    assert_eq!(status, 200);
    let mut c = s.client();
    c.token = res["access_token"].as_str().map(str::to_owned);
    let (status, me) = whoami(&c).await;
    assert_eq!(status, 200);
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(me["device_id"], "DEV1");
    assert_ne!(me["is_guest"], true);
}

#[tokio::test]
async fn logout_invalidates_only_that_token() {
    let s = TestServer::start().await;
    let first = s.user("alice").await;
    let second = login_client(&s, "alice", PASSWORD).await;
    let third = login_client(&s, "alice", PASSWORD).await;
    let second_device = whoami(&second).await.1["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(device_ids(&first).await.len(), 3);

    let (status, body) = second.post(&format!("{V3}/logout"), json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = whoami(&second).await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(whoami(&first).await.0, 200);
    assert_eq!(whoami(&third).await.0, 200);
    let remaining = device_ids(&first).await;
    assert_eq!(remaining.len(), 2);
    assert!(!remaining.contains(&second_device), "{remaining:?}");
    // Logging out twice: the token is already gone.
    let (status, body) = second.post(&format!("{V3}/logout"), json!({})).await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn logout_all_invalidates_every_token() {
    let s = TestServer::start().await;
    let first = s.user("alice").await;
    let second = login_client(&s, "alice", PASSWORD).await;
    let bob = s.user("bob").await;
    let (status, body) = first.post(&format!("{V3}/logout/all"), json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    for c in [&first, &second] {
        let (status, body) = whoami(c).await;
        assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
    }
    // Other users are untouched, and the account itself still works.
    assert_eq!(whoami(&bob).await.0, 200);
    let again = login_client(&s, "alice", PASSWORD).await;
    assert_eq!(device_ids(&again).await.len(), 1);
}
