//! Accounts (#18 item 16): the login limiter also counts per address, so spraying passwords
//! over many accounts is limited; access tokens are not stored in plaintext, so a copy of the
//! data folder logs nobody in.

use serde_json::json;

use crate::common::{TestServer, V3, assert_error};

fn password_login(user: &str, password: &str) -> serde_json::Value {
    json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user },
            "password": password })
}

#[tokio::test]
async fn spraying_passwords_across_accounts_from_one_address_is_limited() {
    let s = TestServer::start_with("[limits]\nlogin_per_second = 0.01\nlogin_burst = 3\n").await;
    for name in ["ana", "bea", "carla", "dora", "eva"] {
        s.user(name).await;
    }
    let anon = s.client();
    // One wrong password per account: each account's own bucket is fresh every time.
    for user in ["ana", "bea", "carla"] {
        let (status, body) = anon
            .post(&format!("{V3}/login"), password_login(user, "Summer2026!"))
            .await;
        assert_error(status, &body, 403, "M_FORBIDDEN");
    }
    for user in ["dora", "eva", "nobody"] {
        let (status, body) = anon
            .post(&format!("{V3}/login"), password_login(user, "Summer2026!"))
            .await;
        assert_error(status, &body, 429, "M_LIMIT_EXCEEDED");
        assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
    }
}

#[tokio::test]
async fn behind_a_proxy_each_forwarded_address_has_its_own_allowance() {
    let s = TestServer::start_with(
        "[server]\nx_forwarded = true\n[limits]\nlogin_per_second = 0.01\nlogin_burst = 2\n",
    )
    .await;
    s.user("ana").await;
    let login = |forwarded: &'static str, user: &'static str| {
        let http = reqwest::Client::new();
        let url = s.url(&format!("{V3}/login"));
        async move {
            http.post(url)
                .header("x-forwarded-for", forwarded)
                .json(&password_login(user, "wrong"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(login("198.51.100.7", "u1").await, 403);
    assert_eq!(login("198.51.100.7", "u2").await, 403);
    assert_eq!(login("198.51.100.7", "u3").await, 429);
    // The proxy's last entry is the address it saw; an earlier one is the client's claim.
    assert_eq!(login("1.2.3.4, 203.0.113.9", "u4").await, 403);
    assert_eq!(login("198.51.100.7, 203.0.113.9", "u5").await, 403);
    assert_eq!(login("5.6.7.8, 203.0.113.9", "u6").await, 429);
}

/// Every file of the data folder, searched for the token's bytes, after a clean stop.
#[tokio::test]
async fn access_tokens_are_not_stored_in_the_data_folder() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let token = alice.token.clone().unwrap();
    let (status, _) = alice.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(status, 200);
    let data = s.data_path();
    let s = s.restart().await;
    // The session survives the restart (it is the hash that was stored).
    let mut again = s.client();
    again.token = Some(token.clone());
    let (status, body) = again.get(&format!("{V3}/account/whoami")).await;
    assert_eq!(
        (status, body["user_id"].as_str()),
        (200, Some("@alice:localhost"))
    );
    let mut stack = vec![data];
    let mut files = 0;
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "the access token is stored in {}",
                path.display()
            );
        }
    }
    assert!(files > 2, "the data folder was searched");
}
