//! Accounts, sessions, devices, profiles, push rules, filters and account data, against the
//! Client-Server API v1.16 (and Synapse's shared-secret registration): one file per topic, the
//! helpers they share here.

mod account_data;
mod devices;
mod password;
mod profiles;
mod push_rules;
mod registration;
mod sessions;
mod shared_secret;

use serde_json::{Value, json};

use crate::common::{Client, TestServer, V3};

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
