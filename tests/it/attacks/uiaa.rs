//! User-interactive auth sessions under concurrency (#18 item 1): a session that another
//! request completed, or that belongs to another user or operation, gets a fresh challenge and
//! never breaks the server for anyone else.

use crate::common::{TestServer, V3, assert_error};
use serde_json::{Value, json};

const PASSWORD: &str = "secret-pw";

fn password_auth(user: &str, session: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": PASSWORD,
        "session": session,
    })
}

/// A challenge's session id, after checking it is one.
fn challenge_session(status: u16, body: &Value) -> String {
    assert_eq!(status, 401, "expected a UIA challenge: {body}");
    assert_eq!(
        body["flows"],
        json!([{ "stages": ["m.login.password"] }]),
        "{body}"
    );
    body["session"].as_str().expect("a session").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_one_session_get_answers_and_the_server_keeps_working() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let path = format!("{V3}/account/password");
    let change = |auth: Option<Value>| {
        let mut body = json!({ "new_password": PASSWORD, "logout_devices": false });
        if let Some(auth) = auth {
            body["auth"] = auth;
        }
        body
    };
    for _round in 0..3 {
        let (status, body) = alice.post(&path, change(None)).await;
        let session = challenge_session(status, &body);
        // The same completed stage four times at once: one wins, the others find the session
        // gone and must get a fresh challenge, not a closed connection.
        let attempts = (0..4).map(|_| {
            let (alice, path, body) = (
                alice.clone(),
                path.clone(),
                change(Some(password_auth("alice", &session))),
            );
            tokio::spawn(async move {
                let res = alice
                    .http
                    .post(format!("{}{path}", alice.base))
                    .bearer_auth(alice.token.as_deref().unwrap())
                    .json(&body)
                    .send()
                    .await
                    .expect("the server answers");
                let status = res.status().as_u16();
                (status, res.json::<Value>().await.unwrap_or(Value::Null))
            })
        });
        let attempts: Vec<_> = attempts.collect();
        let mut won = 0;
        for attempt in attempts {
            let (status, body) = attempt.await.unwrap();
            match status {
                200 => {
                    assert_eq!(body, json!({}));
                    won += 1;
                }
                _ => {
                    let fresh = challenge_session(status, &body);
                    assert_ne!(fresh, session, "a consumed session is not offered again");
                }
            }
        }
        assert!(won >= 1, "the completed stage went through at least once");
    }
    // Everyone else is still served: a registration and a new UIA round.
    s.user("bob").await;
    let (status, body) = alice.post(&path, change(None)).await;
    let session = challenge_session(status, &body);
    let (status, body) = alice
        .post(&path, change(Some(password_auth("alice", &session))))
        .await;
    assert_eq!((status, body), (200, json!({})));
}

#[tokio::test]
async fn a_session_started_by_another_user_or_for_another_operation_is_not_used() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let mallory = s.user("mallory").await;
    // Alice starts a deactivation; Mallory names her session in his own request.
    let (status, body) = alice
        .post(&format!("{V3}/account/deactivate"), json!({}))
        .await;
    let alices = challenge_session(status, &body);
    let (status, body) = mallory
        .post(
            &format!("{V3}/account/password"),
            json!({ "new_password": "x", "auth": { "type": "m.login.password", "session": alices,
                    "identifier": { "type": "m.id.user", "user": "mallory" }, "password": "wrong" } }),
        )
        .await;
    // A fresh session of his own, with the failed stage's error.
    let his = challenge_session(status, &body);
    assert_ne!(his, alices);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    // A password-change session does not authorize a deactivation.
    let (status, body) = alice
        .post(
            &format!("{V3}/account/password"),
            json!({ "new_password": "x" }),
        )
        .await;
    let password_session = challenge_session(status, &body);
    let (status, body) = alice
        .post(
            &format!("{V3}/account/deactivate"),
            json!({ "auth": { "type": "m.login.password", "session": password_session,
                    "identifier": { "type": "m.id.user", "user": "alice" }, "password": "wrong" } }),
        )
        .await;
    assert_ne!(challenge_session(status, &body), password_session);
    // Alice's account is intact.
    let (status, body) = alice.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .client()
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": "pw",
              "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(status, &body, 400, "M_USER_IN_USE");
}
