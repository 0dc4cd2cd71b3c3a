//! Password changes and deactivation, both behind user-interactive auth.

use serde_json::{Value, json};

use super::{
    PASSWORD, assert_challenge, login, login_client, password_auth, password_login, whoami,
};
use crate::common::{TestServer, V3, assert_error, enc};

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
