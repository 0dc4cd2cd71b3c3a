//! Accounts, sessions, devices, profiles, push rules, filters and account data, against the
//! Client-Server API v1.16 (and Synapse's shared-secret registration).

use crate::common::{Client, TestServer, V3, assert_error, enc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

const PASSWORD: &str = "secret-pw";

/// A user-interactive auth challenge: `flows` exactly as given, a `session`, `params`.
fn assert_challenge(status: u16, body: &Value, stages: &[&str]) -> String {
    assert_eq!(status, 401, "expected a UIA challenge: {body}");
    assert_eq!(body["flows"], json!([{ "stages": stages }]), "{body}");
    assert!(body["params"].is_object(), "{body}");
    body["session"]
        .as_str()
        .expect("challenge has a session")
        .to_owned()
}

fn password_auth(user: &str, password: &str, session: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
        "session": session,
    })
}

async fn login(s: &TestServer, body: Value) -> (u16, Value) {
    s.client().post(&format!("{V3}/login"), body).await
}

/// Logs in with the password and returns a client for the new device.
async fn login_client(s: &TestServer, user: &str, password: &str) -> Client {
    let (status, body) = login(
        s,
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password }),
    )
    .await;
    assert_eq!(status, 200, "login {user}: {body}");
    let mut c = s.client();
    c.token = Some(body["access_token"].as_str().unwrap().to_owned());
    c
}

async fn whoami(c: &Client) -> (u16, Value) {
    c.get(&format!("{V3}/account/whoami")).await
}

fn password_login(user: &str, password: &str) -> Value {
    json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password })
}

async fn device_ids(c: &Client) -> Vec<String> {
    let (status, body) = c.get(&format!("{V3}/devices")).await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// Registration

#[tokio::test]
async fn register_goes_through_the_dummy_uia_flow() {
    let s = TestServer::start().await;
    let anon = s.client();
    let (status, body) = anon
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": PASSWORD, "initial_device_display_name": "Laptop" }),
        )
        .await;
    let session = assert_challenge(status, &body, &["m.login.dummy"]);
    assert!(
        body.get("errcode").is_none(),
        "a first challenge has no error: {body}"
    );
    assert!(body.get("completed").is_none(), "{body}");
    // Nothing exists yet.
    let (status, body) = anon
        .get(&format!("{V3}/register/available?username=alice"))
        .await;
    assert_eq!((status, body), (200, json!({ "available": true })));

    let (status, body) = anon
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": PASSWORD, "initial_device_display_name": "Laptop",
                    "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
    let device = body["device_id"].as_str().unwrap().to_owned();
    let mut alice = s.client();
    alice.token = Some(body["access_token"].as_str().unwrap().to_owned());
    let (status, me) = whoami(&alice).await;
    assert_eq!(status, 200);
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(me["device_id"], device.as_str());
    let (status, d) = alice.get(&format!("{V3}/devices/{}", enc(&device))).await;
    assert_eq!(status, 200);
    assert_eq!(d["display_name"], "Laptop");

    // The session is spent: replaying it does not register anyone else.
    let (status, body) = anon
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": PASSWORD,
                    "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    assert_error(status, &body, 400, "M_USER_IN_USE");
}

#[tokio::test]
async fn register_with_inhibit_login_and_chosen_device() {
    let s = TestServer::start().await;
    let anon = s.client();
    let (status, body) = anon
        .post(
            &format!("{V3}/register"),
            json!({ "username": "quiet", "password": PASSWORD, "inhibit_login": true,
                    "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@quiet:localhost");
    // No session: no token and no device (ruma writes `device_id: null`, Synapse omits it).
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(body["device_id"].is_null(), "{body}");
    // The account exists and can log in.
    let (status, body) = login(&s, password_login("quiet", PASSWORD)).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = anon
        .post(
            &format!("{V3}/register"),
            json!({ "username": "chosen", "password": PASSWORD, "device_id": "MYDEVICE",
                    "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_id"], "MYDEVICE");
}

#[tokio::test]
async fn token_registration_mode() {
    let s = TestServer::start_with("[registration]\nmode = \"token\"\ntokens = [\"t0k\"]\n").await;
    let anon = s.client();
    let register = |auth: Value| json!({ "username": "alice", "password": PASSWORD, "auth": auth });

    let (status, body) = anon
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    let session = assert_challenge(status, &body, &["m.login.registration_token"]);

    // The dummy stage is not offered in token mode.
    let (status, body) = anon
        .post(
            &format!("{V3}/register"),
            register(json!({ "type": "m.login.dummy", "session": session })),
        )
        .await;
    assert_challenge(status, &body, &["m.login.registration_token"]);
    assert!(body["errcode"].is_string(), "{body}");

    // A wrong token: the challenge again, with the stage's error, same session.
    let (status, body) = anon
        .post(
            &format!("{V3}/register"),
            register(json!({ "type": "m.login.registration_token", "token": "wrong", "session": session })),
        )
        .await;
    assert_eq!(
        assert_challenge(status, &body, &["m.login.registration_token"]),
        session
    );
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    let (status, _) = login(&s, password_login("alice", PASSWORD)).await;
    assert_eq!(status, 403, "no account after a wrong token");

    let (status, body) = anon
        .post(
            &format!("{V3}/register"),
            register(
                json!({ "type": "m.login.registration_token", "token": "t0k", "session": session }),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
    let mut alice = s.client();
    alice.token = body["access_token"].as_str().map(str::to_owned);
    assert_eq!(whoami(&alice).await.0, 200);
}

#[tokio::test]
async fn registration_token_validity() {
    let path = "/_matrix/client/v1/register/m.login.registration_token/validity";
    let s = TestServer::start_with("[registration]\nmode = \"token\"\ntokens = [\"t0k\"]\n").await;
    let anon = s.client();
    let (status, body) = anon.get(&format!("{path}?token=t0k")).await;
    assert_eq!((status, body), (200, json!({ "valid": true })));
    let (status, body) = anon.get(&format!("{path}?token=nope")).await;
    assert_eq!((status, body), (200, json!({ "valid": false })));
    let (status, body) = anon.get(path).await;
    assert_eq!(status, 400, "the token is required: {body}");

    // Open registration uses no tokens (as Synapse answers); closed registration refuses all.
    let s = TestServer::start().await;
    let (status, body) = s.client().get(&format!("{path}?token=t0k")).await;
    assert_eq!((status, body), (200, json!({ "valid": false })));
    let s = TestServer::start_with("[registration]\nmode = \"closed\"\n").await;
    let (status, body) = s.client().get(&format!("{path}?token=t0k")).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn closed_registration_is_403() {
    let s = TestServer::start_with("[registration]\nmode = \"closed\"\n").await;
    let anon = s.client();
    for body in [
        json!({ "username": "alice", "password": PASSWORD }),
        json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
    ] {
        let (status, res) = anon.post(&format!("{V3}/register"), body).await;
        assert_error(status, &res, 403, "M_FORBIDDEN");
    }
    let (status, _) = login(&s, password_login("alice", PASSWORD)).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn username_availability() {
    let s = TestServer::start().await;
    let _alice = s.user("alice").await;
    let anon = s.client();
    let (status, body) = anon
        .get(&format!("{V3}/register/available?username=bob"))
        .await;
    assert_eq!((status, body), (200, json!({ "available": true })));
    for name in ["alice", "Alice"] {
        let (status, body) = anon
            .get(&format!("{V3}/register/available?username={name}"))
            .await;
        assert_error(status, &body, 400, "M_USER_IN_USE");
    }
    let (status, body) = anon.get(&format!("{V3}/register/available")).await;
    assert_eq!(status, 400, "username is required: {body}");
}

// ---------------------------------------------------------------------------------------------
// Login and sessions

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

// ---------------------------------------------------------------------------------------------
// Devices

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

// ---------------------------------------------------------------------------------------------
// Password and deactivation

#[tokio::test]
async fn change_password_with_uia_logs_out_other_devices() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let other = login_client(&s, "alice", PASSWORD).await;

    let (status, body) = alice
        .post(
            &format!("{V3}/account/password"),
            json!({ "new_password": "new-pw" }),
        )
        .await;
    let session = assert_challenge(status, &body, &["m.login.password"]);
    let (status, body) = alice
        .post(
            &format!("{V3}/account/password"),
            json!({ "new_password": "new-pw", "auth": password_auth("alice", "wrong", &session) }),
        )
        .await;
    assert_challenge(status, &body, &["m.login.password"]);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    // Still the old password after the refused attempt.
    assert_eq!(login(&s, password_login("alice", "new-pw")).await.0, 403);

    let (status, body) = alice
        .post(
            &format!("{V3}/account/password"),
            json!({ "new_password": "new-pw", "auth": password_auth("alice", PASSWORD, &session) }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = login(&s, password_login("alice", PASSWORD)).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    assert_eq!(login(&s, password_login("alice", "new-pw")).await.0, 200);
    // logout_devices defaults to true: the other device is logged out, this one is not.
    let (status, body) = whoami(&other).await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(whoami(&alice).await.0, 200);
}

#[tokio::test]
async fn change_password_can_keep_other_devices() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let other = login_client(&s, "alice", PASSWORD).await;
    let (status, body) = alice
        .post(
            &format!("{V3}/account/password"),
            json!({ "new_password": "new-pw", "logout_devices": false,
                    "auth": { "type": "m.login.password", "password": PASSWORD,
                              "identifier": { "type": "m.id.user", "user": "alice" } } }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(whoami(&other).await.0, 200);
    assert_eq!(login(&s, password_login("alice", "new-pw")).await.0, 200);
}

#[tokio::test]
async fn deactivate_with_uia_leaves_rooms_and_blocks_login() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    // A pending invite is rejected too (as Synapse does), so it does not linger.
    let invited = alice.create_room(json!({})).await;
    let (status, _) = alice
        .post(
            &format!("{V3}/rooms/{}/invite", enc(&invited)),
            json!({ "user_id": "@bob:localhost" }),
        )
        .await;
    assert_eq!(status, 200);
    let since = bob.sync(None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = bob
        .post(&format!("{V3}/account/deactivate"), json!({}))
        .await;
    let session = assert_challenge(status, &body, &["m.login.password"]);
    let (status, body) = bob
        .post(
            &format!("{V3}/account/deactivate"),
            json!({ "auth": password_auth("bob", PASSWORD, &session) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");

    let (status, body) = whoami(&bob).await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
    let (status, body) = login(&s, password_login("bob", PASSWORD)).await;
    assert_error(status, &body, 403, "M_USER_DEACTIVATED");
    let (status, body) = alice
        .get(&format!("{V3}/profile/{}", enc("@bob:localhost")))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // The id stays taken.
    let (status, body) = s
        .client()
        .post(
            &format!("{V3}/register"),
            json!({ "username": "bob", "password": "x", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(status, &body, 400, "M_USER_IN_USE");

    // Alice sees Bob leave, sent by Bob himself.
    let sync = alice.sync(Some(&since), 0).await;
    let events = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    let leave: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost")
        .collect();
    assert_eq!(leave.len(), 1, "{events:?}");
    assert_eq!(leave[0]["content"]["membership"], "leave");
    assert_eq!(leave[0]["sender"], "@bob:localhost");
    let (_, members) = alice
        .get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
        .await;
    assert_eq!(
        members["joined"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["@alice:localhost"]
    );
    let (status, member) = alice
        .get(&format!(
            "{V3}/rooms/{}/state/m.room.member/{}",
            enc(&invited),
            enc("@bob:localhost")
        ))
        .await;
    assert_eq!((status, member), (200, json!({ "membership": "leave" })));
}

// ---------------------------------------------------------------------------------------------
// Profiles

#[tokio::test]
async fn profile_get_and_set() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let me = enc("@alice:localhost");

    // The display name starts as the localpart.
    let (status, body) = bob.get(&format!("{V3}/profile/{me}")).await;
    assert_eq!((status, body), (200, json!({ "displayname": "alice" })));

    let (status, body) = alice
        .put(
            &format!("{V3}/profile/{me}/displayname"),
            json!({ "displayname": "Alice Liddell" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = alice
        .put(
            &format!("{V3}/profile/{me}/avatar_url"),
            json!({ "avatar_url": "mxc://localhost/rabbit" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));

    let (_, body) = bob.get(&format!("{V3}/profile/{me}/displayname")).await;
    assert_eq!(body, json!({ "displayname": "Alice Liddell" }));
    let (_, body) = bob.get(&format!("{V3}/profile/{me}/avatar_url")).await;
    assert_eq!(body, json!({ "avatar_url": "mxc://localhost/rabbit" }));
    let (_, body) = s.client().get(&format!("{V3}/profile/{me}")).await;
    assert_eq!(
        body,
        json!({ "displayname": "Alice Liddell", "avatar_url": "mxc://localhost/rabbit" })
    );

    // Someone else's profile cannot be changed.
    let (status, body) = bob
        .put(
            &format!("{V3}/profile/{me}/displayname"),
            json!({ "displayname": "Mallory" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = bob
        .put(
            &format!("{V3}/profile/{me}/avatar_url"),
            json!({ "avatar_url": "mxc://localhost/evil" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (_, body) = bob.get(&format!("{V3}/profile/{me}")).await;
    assert_eq!(
        body,
        json!({ "displayname": "Alice Liddell", "avatar_url": "mxc://localhost/rabbit" })
    );

    let (status, body) = bob
        .get(&format!("{V3}/profile/{}", enc("@nobody:localhost")))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn displayname_change_updates_member_events() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let other = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    assert_eq!(bob.join(&other).await.0, 200);

    let (status, _) = alice
        .put(
            &format!("{V3}/profile/{}/displayname", enc("@alice:localhost")),
            json!({ "displayname": "Alice L." }),
        )
        .await;
    assert_eq!(status, 200);

    for r in [&room, &other] {
        let (status, body) = bob
            .get(&format!("{V3}/rooms/{}/members?membership=join", enc(r)))
            .await;
        assert_eq!(status, 200, "{body}");
        let alice_member = body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["state_key"] == "@alice:localhost")
            .expect("alice is a member")
            .clone();
        assert_eq!(
            alice_member["content"],
            json!({ "membership": "join", "displayname": "Alice L." })
        );
        assert_eq!(alice_member["sender"], "@alice:localhost");
        assert_eq!(
            alice_member["unsigned"]["prev_content"]["displayname"],
            "alice"
        );
        let (_, joined) = bob
            .get(&format!("{V3}/rooms/{}/joined_members", enc(r)))
            .await;
        assert_eq!(
            joined["joined"]["@alice:localhost"]["display_name"],
            "Alice L."
        );
        assert_eq!(joined["joined"]["@bob:localhost"]["display_name"], "bob");
    }
}

// ---------------------------------------------------------------------------------------------
// Shared-secret registration (`register_new_matrix_user`)

const SECRET: &str = "a-shared-secret-for-tests";

fn registration_mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(user.as_bytes());
    mac.update(b"\x00");
    mac.update(password.as_bytes());
    mac.update(b"\x00");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(mac.finalize().into_bytes())
}

async fn nonce(c: &Client) -> String {
    let (status, body) = c.get("/_synapse/admin/v1/register").await;
    assert_eq!(status, 200, "{body}");
    body["nonce"].as_str().expect("a nonce").to_owned()
}

#[tokio::test]
async fn shared_secret_registration_like_register_new_matrix_user() {
    let s =
        TestServer::start_with(&format!("[registration]\nshared_secret = \"{SECRET}\"\n")).await;
    let anon = s.client();
    let n = nonce(&anon).await;
    // The body the Synapse script sends, `user_type: null` included.
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "admin1", "password": "pw-admin",
                    "mac": registration_mac(SECRET, &n, "admin1", "pw-admin", false),
                    "admin": false, "user_type": null }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@admin1:localhost");
    let mut c = s.client();
    c.token = Some(body["access_token"].as_str().unwrap().to_owned());
    let (_, me) = whoami(&c).await;
    assert_eq!(me["user_id"], "@admin1:localhost");
    assert_eq!(me["device_id"], body["device_id"]);
    assert_eq!(login(&s, password_login("admin1", "pw-admin")).await.0, 200);

    // An admin flag is part of the MAC.
    let n = nonce(&anon).await;
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "admin2", "password": "pw",
                    "mac": registration_mac(SECRET, &n, "admin2", "pw", true), "admin": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // An existing user: M_USER_IN_USE (the script's `exists_ok` looks for exactly that).
    let n = nonce(&anon).await;
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "admin1", "password": "pw",
                    "mac": registration_mac(SECRET, &n, "admin1", "pw", false), "admin": false }),
        )
        .await;
    assert_error(status, &body, 400, "M_USER_IN_USE");
}

#[tokio::test]
async fn shared_secret_registration_refuses_bad_mac_and_reused_nonce() {
    let s =
        TestServer::start_with(&format!("[registration]\nshared_secret = \"{SECRET}\"\n")).await;
    let anon = s.client();

    // A MAC made with another secret.
    let n = nonce(&anon).await;
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "eve", "password": "pw",
                    "mac": registration_mac("wrong-secret", &n, "eve", "pw", false) }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    // A MAC that claims `notadmin` for an admin request.
    let n = nonce(&anon).await;
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": n, "username": "eve", "password": "pw", "admin": true,
                    "mac": registration_mac(SECRET, &n, "eve", "pw", false) }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    assert_eq!(login(&s, password_login("eve", "pw")).await.0, 403);

    // A nonce works once.
    let n = nonce(&anon).await;
    let good = json!({ "nonce": n, "username": "carol", "password": "pw",
                       "mac": registration_mac(SECRET, &n, "carol", "pw", false) });
    let (status, body) = anon.post("/_synapse/admin/v1/register", good.clone()).await;
    assert_eq!(status, 200, "{body}");
    let replay = json!({ "nonce": n, "username": "dave", "password": "pw",
                         "mac": registration_mac(SECRET, &n, "dave", "pw", false) });
    let (status, body) = anon.post("/_synapse/admin/v1/register", replay).await;
    assert_error(status, &body, 400, "M_UNKNOWN");
    assert_eq!(login(&s, password_login("dave", "pw")).await.0, 403);
    // A nonce the server never issued.
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": "made-up", "username": "dave", "password": "pw",
                    "mac": registration_mac(SECRET, "made-up", "dave", "pw", false) }),
        )
        .await;
    assert_error(status, &body, 400, "M_UNKNOWN");
    assert_eq!(login(&s, password_login("dave", "pw")).await.0, 403);
}

#[tokio::test]
async fn shared_secret_registration_disabled_without_secret() {
    let s = TestServer::start_with("[registration]\nshared_secret = \"\"\n").await;
    let anon = s.client();
    let (status, body) = anon.get("/_synapse/admin/v1/register").await;
    assert_error(status, &body, 400, "M_UNKNOWN");
    // Not even a MAC keyed with the empty secret gets through.
    let (status, body) = anon
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": "n", "username": "eve", "password": "pw",
                    "mac": registration_mac("", "n", "eve", "pw", false) }),
        )
        .await;
    assert_error(status, &body, 400, "M_UNKNOWN");
    assert_eq!(login(&s, password_login("eve", "pw")).await.0, 403);
}

// ---------------------------------------------------------------------------------------------
// Push rules

fn rule_ids(ruleset: &Value, kind: &str) -> Vec<String> {
    ruleset[kind]
        .as_array()
        .unwrap_or_else(|| panic!("{kind} missing: {ruleset}"))
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn push_rules_default_set() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (status, body) = alice.get(&format!("{V3}/pushrules/")).await;
    assert_eq!(status, 200, "{body}");
    let global = &body["global"];
    // The predefined rules of v1.16, in the spec's priority order (the legacy mention rules
    // are deprecated but still listed; Synapse serves the same list).
    assert_eq!(
        rule_ids(global, "override"),
        [
            ".m.rule.master",
            ".m.rule.suppress_notices",
            ".m.rule.invite_for_me",
            ".m.rule.member_event",
            ".m.rule.is_user_mention",
            ".m.rule.contains_display_name",
            ".m.rule.is_room_mention",
            ".m.rule.roomnotif",
            ".m.rule.tombstone",
            ".m.rule.reaction",
            ".m.rule.room.server_acl",
            ".m.rule.suppress_edits",
        ]
    );
    assert_eq!(
        rule_ids(global, "underride"),
        [
            ".m.rule.call",
            ".m.rule.encrypted_room_one_to_one",
            ".m.rule.room_one_to_one",
            ".m.rule.message",
            ".m.rule.encrypted",
        ]
    );
    assert_eq!(
        global["content"],
        json!([{
            "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
            "pattern": "alice",
            "actions": ["notify", { "set_tweak": "sound", "value": "default" }, { "set_tweak": "highlight" }],
        }])
    );
    let message = global["underride"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule_id"] == ".m.rule.message")
        .unwrap();
    assert_eq!(
        message["conditions"],
        json!([{ "kind": "event_match", "key": "type", "pattern": "m.room.message" }])
    );
    assert_eq!(message["actions"], json!(["notify"]));
    let master = &global["override"][0];
    assert_eq!(master["enabled"], false);
    assert_eq!(master["default"], true);
    assert_eq!(master["actions"], json!([]));
    // No default room or sender rules (ruma leaves the empty lists out; Synapse sends `[]`).
    for kind in ["room", "sender"] {
        assert!(
            global[kind].as_array().is_none_or(|r| r.is_empty()),
            "{global}"
        );
    }

    // The global scope alone, and one rule.
    let (status, scope) = alice.get(&format!("{V3}/pushrules/global/")).await;
    assert_eq!(status, 200);
    assert_eq!(&scope, global);
    let (status, rule) = alice
        .get(&format!("{V3}/pushrules/global/override/.m.rule.master"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(&rule, master);
}

#[tokio::test]
async fn push_rules_custom_rule_lifecycle() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let base = format!("{V3}/pushrules/global/override");
    let rule = json!({
        "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": "urgente" }],
        "actions": ["notify", { "set_tweak": "sound", "value": "default" }],
    });
    let (status, body) = alice
        .put(&format!("{base}/org.example.urgent"), rule.clone())
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, got) = alice.get(&format!("{base}/org.example.urgent")).await;
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!({
            "rule_id": "org.example.urgent", "default": false, "enabled": true,
            "conditions": rule["conditions"], "actions": rule["actions"],
        })
    );
    // A new user rule goes before the server-default override rules but after none in particular.
    let (_, all) = alice.get(&format!("{V3}/pushrules/")).await;
    let ids = rule_ids(&all["global"], "override");
    assert!(ids.contains(&"org.example.urgent".to_owned()), "{ids:?}");

    // Insert another rule just before it.
    let (status, body) = alice
        .put(
            &format!("{base}/org.example.first?before=org.example.urgent"),
            json!({ "conditions": [], "actions": [] }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (_, all) = alice.get(&format!("{V3}/pushrules/")).await;
    let ids = rule_ids(&all["global"], "override");
    let first = ids.iter().position(|i| i == "org.example.first").unwrap();
    let urgent = ids.iter().position(|i| i == "org.example.urgent").unwrap();
    assert_eq!(first + 1, urgent, "{ids:?}");

    // Disable, re-read, enable.
    let (status, body) = alice
        .get(&format!("{base}/org.example.urgent/enabled"))
        .await;
    assert_eq!((status, body), (200, json!({ "enabled": true })));
    let (status, _) = alice
        .put(
            &format!("{base}/org.example.urgent/enabled"),
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alice
        .get(&format!("{base}/org.example.urgent/enabled"))
        .await;
    assert_eq!(body, json!({ "enabled": false }));
    let (_, got) = alice.get(&format!("{base}/org.example.urgent")).await;
    assert_eq!(got["enabled"], false);

    // Change the actions.
    let (status, _) = alice
        .put(
            &format!("{base}/org.example.urgent/actions"),
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alice
        .get(&format!("{base}/org.example.urgent/actions"))
        .await;
    assert_eq!(body, json!({ "actions": [] }));

    // A server-default rule can be enabled but not deleted.
    let (status, _) = alice
        .put(
            &format!("{base}/.m.rule.master/enabled"),
            json!({ "enabled": true }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = alice.get(&format!("{base}/.m.rule.master/enabled")).await;
    assert_eq!(body, json!({ "enabled": true }));
    let (status, body) = alice
        .delete(&format!("{base}/.m.rule.master"), json!({}))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // Delete the custom rule.
    let (status, body) = alice
        .delete(&format!("{base}/org.example.urgent"), json!({}))
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = alice.get(&format!("{base}/org.example.urgent")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice
        .delete(&format!("{base}/org.example.urgent"), json!({}))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // Room and content rules.
    let room = alice.create_room(json!({})).await;
    let (status, _) = alice
        .put(
            &format!("{V3}/pushrules/global/room/{}", enc(&room)),
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, got) = alice
        .get(&format!("{V3}/pushrules/global/room/{}", enc(&room)))
        .await;
    assert_eq!(
        got,
        json!({ "rule_id": room, "default": false, "enabled": true, "actions": [] })
    );
    let (status, _) = alice
        .put(
            &format!("{V3}/pushrules/global/content/org.example.word"),
            json!({ "pattern": "pedido", "actions": ["notify"] }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, got) = alice
        .get(&format!("{V3}/pushrules/global/content/org.example.word"))
        .await;
    assert_eq!(got["pattern"], "pedido");

    // Another user's rules are their own.
    let bob = s.user("bob").await;
    let (status, _) = bob.get(&format!("{base}/org.example.first")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn push_rules_cannot_be_set_as_account_data() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (status, body) = alice
        .put(
            &format!(
                "{V3}/user/{}/account_data/m.push_rules",
                enc("@alice:localhost")
            ),
            json!({ "global": {} }),
        )
        .await;
    // The spec's answer for server-controlled account data: 405 M_BAD_JSON.
    assert_error(status, &body, 405, "M_BAD_JSON");
    let (_, rules) = alice.get(&format!("{V3}/pushrules/")).await;
    assert!(
        !rules["global"]["override"].as_array().unwrap().is_empty(),
        "the rules are intact: {rules}"
    );
}

// ---------------------------------------------------------------------------------------------
// Filters

#[tokio::test]
async fn filters_round_trip_and_are_private() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let filter = json!({
        "event_fields": ["type", "content.body"],
        "event_format": "federation",
        "presence": { "not_types": ["*"] },
        "account_data": { "types": ["m.direct"] },
        "room": {
            "rooms": ["!a:localhost"],
            "include_leave": true,
            "timeline": { "limit": 5, "types": ["m.room.message"], "not_senders": ["@spam:localhost"] },
            "state": { "lazy_load_members": true },
        },
    });
    let me = enc("@alice:localhost");
    let (status, body) = alice
        .post(&format!("{V3}/user/{me}/filter"), filter.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["filter_id"].as_str().expect("filter_id").to_owned();
    let (status, got) = alice
        .get(&format!("{V3}/user/{me}/filter/{}", enc(&id)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, filter);

    // Bob can neither read Alice's filter nor create one in her name.
    let (status, body) = bob
        .get(&format!("{V3}/user/{me}/filter/{}", enc(&id)))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = bob.post(&format!("{V3}/user/{me}/filter"), json!({})).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    // Filter ids are per user: Bob's own lookup of the id finds nothing.
    let (status, body) = bob
        .get(&format!(
            "{V3}/user/{}/filter/{}",
            enc("@bob:localhost"),
            enc(&id)
        ))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice.get(&format!("{V3}/user/{me}/filter/nosuch")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // A stored filter applies to /sync by id.
    let room = alice.create_room(json!({})).await;
    for i in 0..3 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let (status, body) = alice
        .post(
            &format!("{V3}/user/{me}/filter"),
            json!({ "room": { "timeline": { "limit": 2 } } }),
        )
        .await;
    assert_eq!(status, 200);
    let id = body["filter_id"].as_str().unwrap();
    let (status, sync) = alice.get(&format!("{V3}/sync?filter={}", enc(id))).await;
    assert_eq!(status, 200);
    let timeline = &sync["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["events"].as_array().unwrap().len(), 2);
    assert_eq!(timeline["limited"], true);
}

// ---------------------------------------------------------------------------------------------
// Account data

#[tokio::test]
async fn account_data_global_and_per_room() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({})).await;
    let me = enc("@alice:localhost");
    let global_path = |kind: &str| format!("{V3}/user/{me}/account_data/{kind}");
    let room_path = |kind: &str| format!("{V3}/user/{me}/rooms/{}/account_data/{kind}", enc(&room));

    let global = json!({ "theme": "dark", "nested": { "list": [1, 2, { "x": null }] } });
    let per_room = json!({ "tags": { "u.work": { "order": 0.5 } } });
    let (status, body) = alice
        .put(&global_path("org.example.settings"), global.clone())
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = alice
        .put(&room_path("org.example.room"), per_room.clone())
        .await;
    assert_eq!((status, body), (200, json!({})));

    let (status, got) = alice.get(&global_path("org.example.settings")).await;
    assert_eq!((status, got), (200, global.clone()));
    let (status, got) = alice.get(&room_path("org.example.room")).await;
    assert_eq!((status, got), (200, per_room.clone()));
    // Global and room data are separate namespaces.
    let (status, body) = alice.get(&global_path("org.example.room")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice.get(&room_path("org.example.settings")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // Private to the user.
    let (status, body) = bob.get(&global_path("org.example.settings")).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = bob
        .put(&global_path("org.example.settings"), json!({}))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = bob.get(&room_path("org.example.room")).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");

    // Initial sync carries both.
    let sync = alice.sync(None, 0).await;
    let global_events = sync["account_data"]["events"].as_array().unwrap();
    assert!(
        global_events.contains(&json!({ "type": "org.example.settings", "content": global })),
        "{global_events:?}"
    );
    assert_eq!(
        sync["rooms"]["join"][&room]["account_data"]["events"],
        json!([{ "type": "org.example.room", "content": per_room }])
    );
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // A later incremental sync has only what changed: one new global entry.
    let (status, _) = alice
        .put(&global_path("org.example.other"), json!({ "n": 1 }))
        .await;
    assert_eq!(status, 200);
    let sync = alice.sync(Some(&since), 0).await;
    assert_eq!(
        sync["account_data"]["events"],
        json!([{ "type": "org.example.other", "content": { "n": 1 } }])
    );
    assert!(
        sync["rooms"]["join"].get(&room).is_none(),
        "nothing changed in the room: {sync}"
    );
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // Then only a room entry changes: it comes alone, in the room.
    let changed = json!({ "tags": {} });
    let (status, _) = alice
        .put(&room_path("org.example.room"), changed.clone())
        .await;
    assert_eq!(status, 200);
    let sync = alice.sync(Some(&since), 0).await;
    assert!(
        sync["account_data"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{sync}"
    );
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(
        joined["account_data"]["events"],
        json!([{ "type": "org.example.room", "content": changed }])
    );
    assert!(
        joined["timeline"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{joined}"
    );

    // An incremental sync with nothing new is empty of account data.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let sync = alice.sync(Some(&since), 0).await;
    assert!(
        sync["account_data"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{sync}"
    );
    assert!(
        sync["rooms"]["join"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{sync}"
    );
}

#[tokio::test]
async fn room_account_data_for_unknown_room_is_refused() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let path = format!(
        "{V3}/user/{}/rooms/{}/account_data/org.example.x",
        enc("@alice:localhost"),
        enc("!nosuch:localhost")
    );
    let (status, body) = alice.put(&path, json!({ "a": 1 })).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice
        .put(
            &format!(
                "{V3}/user/{}/rooms/not-a-room-id/account_data/org.example.x",
                enc("@alice:localhost")
            ),
            json!({ "a": 1 }),
        )
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn first_sync_carries_the_default_push_rules() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let sync = alice.sync(None, 0).await;
    let rules = sync["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("m.push_rules in the first sync");
    let overrides: Vec<&str> = rules["content"]["global"]["override"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(overrides.first(), Some(&".m.rule.master"));
    // The same rules the push rules API serves.
    let (status, api) = alice.get("/_matrix/client/v3/pushrules/").await;
    assert_eq!(status, 200);
    assert_eq!(api["global"], rules["content"]["global"]);
    // An incremental sync does not repeat them.
    let next = sync["next_batch"].as_str().unwrap().to_owned();
    let later = alice.sync(Some(&next), 0).await;
    assert!(
        later["account_data"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{later}"
    );
}
