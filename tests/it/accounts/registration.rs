//! Registration: the dummy and token flows, `inhibit_login`, closed registration, username
//! availability.

use serde_json::{Value, json};

use super::{PASSWORD, assert_challenge, login, password_login, whoami};
use crate::common::{TestServer, V3, assert_error, enc};

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
