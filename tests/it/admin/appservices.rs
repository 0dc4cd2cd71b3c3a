//! `appservice …`: registrations added at runtime are used at once (token, namespace, pusher),
//! survive a restart, and stop at once when unregistered; the config's stay.

use serde_json::{Value, json};

use super::{AdminCli, admin_client};
use crate::{
    appservice_api::fake_appservice,
    common::{Client, TestServer, V3, assert_error, enc},
    support::eventually,
};

/// Registers a puppet as the appservice.
async fn register_puppet(asc: &Client, localpart: &str) -> (u16, Value) {
    asc.post(
        &format!("{V3}/register"),
        json!({ "type": "m.login.application_service", "username": localpart,
                "inhibit_login": true }),
    )
    .await
}

async fn whoami(c: &Client) -> (u16, Value) {
    c.get(&format!("{V3}/account/whoami")).await
}

fn registration(id: &str, as_token: &str, sender: &str, regex: &str) -> String {
    format!(
        "id: {id}\nurl: null\nas_token: {as_token}\nhs_token: hs-{id}\nsender_localpart: {sender}\n\
         namespaces:\n  users:\n    - exclusive: true\n      regex: '{regex}'\n"
    )
}

#[tokio::test]
async fn an_appservice_registered_at_runtime_works_at_once_until_it_is_unregistered() {
    let (url, seen) = fake_appservice().await;
    let s = TestServer::start().await;
    let cli = AdminCli::of(&s);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.yaml");
    let file_arg = file.to_str().unwrap();
    let registered = cli
        .json(&[
            "appservice",
            "register",
            file_arg,
            "--generate",
            "bridge",
            "--url",
            &url,
            "--namespace",
            "@bridge_.*:localhost",
        ])
        .await;
    assert_eq!(registered["id"], "bridge");
    assert_eq!(registered["sender"], "@bridgebot:localhost");
    assert_eq!(registered["source"], "store");
    assert_eq!(registered["file"], file_arg);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let written = appservice::Registration::from_file(&file).unwrap();
    assert_eq!(written.url.as_deref(), Some(url.as_str()));
    assert_eq!(written.as_token.len(), 64);
    assert_ne!(written.as_token, written.hs_token);

    // Its token authenticates at once, and its namespace is its own.
    let mut asc = s.client();
    asc.token = Some(written.as_token.clone());
    let (status, body) = whoami(&asc).await;
    assert_eq!(
        (status, &body["user_id"]),
        (200, &json!("@bridgebot:localhost"))
    );
    let (status, body) = register_puppet(&asc, "bridge_1").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = register_puppet(&asc, "mallory").await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");
    let (status, body) = s
        .client()
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "bridge_2", "password": "secret-pw",
                    "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");

    // Its pusher runs: a message in a room with its puppet reaches it.
    let alice = s.user("alice").await;
    let room = alice
        .create_room(json!({ "invite": ["@bridge_1:localhost"] }))
        .await;
    let (status, body) = asc
        .post(
            &format!(
                "{V3}/join/{}?user_id={}",
                enc(&room),
                enc("@bridge_1:localhost")
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    alice.send_text(&room, "t1", "hola, bridge").await;
    eventually("the transaction", || async {
        let seen = seen.lock().unwrap();
        seen.attempts
            .iter()
            .flat_map(|(_, _, body)| body["events"].as_array().cloned().unwrap_or_default())
            .any(|e| e["content"]["body"] == "hola, bridge")
            .then_some(())
    })
    .await;
    let pong = cli.json(&["appservice", "ping", "bridge"]).await;
    assert!(pong["duration_ms"].is_u64(), "{pong}");
    assert_eq!(
        seen.lock().unwrap().pings.last().unwrap().0,
        format!("Bearer {}", written.hs_token)
    );

    // Listed, never with its tokens.
    let list = cli.run(&["appservice", "list", "--json"]).await;
    assert_eq!(list.code, 0);
    assert!(!list.stdout.contains(&written.as_token) && !list.stdout.contains(&written.hs_token));
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list["appservices"][0]["id"], "bridge");
    assert_eq!(
        list["appservices"][0]["namespaces"]["users"][0]["regex"],
        "@bridge_.*:localhost"
    );
    // The same registration again: its id is taken (409), and --generate never overwrites.
    let reason = cli.fails(&["appservice", "register", file_arg], 1).await;
    assert!(reason.contains("bridge"), "{reason}");
    cli.fails(
        &[
            "appservice",
            "register",
            file_arg,
            "--generate",
            "b2",
            "--url",
            &url,
            "--namespace",
            "@b2_.*",
        ],
        4,
    )
    .await;

    // Kept in the store: it still works after a restart.
    let s = s.restart().await;
    let cli = AdminCli::of(&s);
    asc.base = s.server.base_url();
    assert_eq!(whoami(&asc).await.0, 200);

    let gone = cli.json(&["appservice", "unregister", "bridge"]).await;
    assert_eq!(gone["id"], "bridge");
    let (status, body) = whoami(&asc).await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
    // Its namespace is free again.
    let bob = s.user("bridge_3").await;
    assert!(bob.token.is_some());
    let list = cli.json(&["appservice", "list"]).await;
    assert_eq!(list["appservices"], json!([]));
    cli.fails(&["appservice", "unregister", "bridge"], 1).await;
    cli.fails(&["appservice", "ping", "bridge"], 1).await;
    let s = s.restart().await;
    asc.base = s.server.base_url();
    let (status, body) = whoami(&asc).await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn bad_or_clashing_registrations_are_refused_and_the_configs_stay() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("whatsapp.yaml");
    std::fs::write(
        &config_file,
        registration("whatsapp", "wa-token", "whatsappbot", "@wa_.*:localhost"),
    )
    .unwrap();
    let s = TestServer::start_with(&format!(
        "[appservice]\nregistrations = [{config_file:?}]\n[support]\nadmins = [\"@boss:localhost\"]\n"
    ))
    .await;
    let cli = AdminCli::of(&s);
    let _alice = s.user("alice").await;
    let admin = admin_client(&s);
    let post = |yaml: String| {
        let admin = admin.clone();
        async move {
            admin
                .raw(
                    reqwest::Method::POST,
                    "/_charla/admin/v1/appservices",
                    yaml.into_bytes(),
                )
                .await
        }
    };
    let good = registration("bot", "bot-token", "botuser", "@bot_.*:localhost");
    let cases = [
        (
            good.replace("'@bot_.*:localhost'", "'@bot_(:localhost'"),
            400,
            "namespaces.users[0].regex",
        ),
        (
            good.replace("sender_localpart: botuser", "sender_localpart: 'bad user'"),
            400,
            "sender_localpart",
        ),
        (good.replace("url: null", "url: ftp://x"), 400, "url"),
        ("id: [".to_owned(), 400, "registration"),
        (good.replace("id: bot", "id: whatsapp"), 409, "id"),
        (good.replace("bot-token", "wa-token"), 409, "as_token"),
        (good.replace("hs-bot", "wa-token"), 409, "hs_token"),
        (
            good.replace("botuser", "whatsappbot"),
            409,
            "sender_localpart",
        ),
        // A person's account, or the support bot, is not an appservice's to act as.
        (good.replace("botuser", "alice"), 409, "sender_localpart"),
        (good.replace("botuser", "support"), 409, "sender_localpart"),
    ];
    for (yaml, status, field) in cases {
        let (got, body) = post(yaml.clone()).await;
        assert_error(got, &body, status, "M_INVALID_PARAM");
        assert_eq!(body["field"], field, "{yaml}: {body}");
    }
    // JSON is taken as well.
    let json_registration = json!({
        "id": "bot", "url": null, "as_token": "bot-token", "hs_token": "hs-bot",
        "sender_localpart": "botuser",
        "namespaces": { "users": [{ "exclusive": true, "regex": "@bot_.*:localhost" }] },
    });
    let (status, body) = post(json_registration.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "store");

    // A file, as Synapse takes it, through the CLI.
    let file = dir.path().join("helper.yaml");
    std::fs::write(
        &file,
        registration(
            "helper",
            "helper-token",
            "helperbot",
            "@helper_.*:localhost",
        ),
    )
    .unwrap();
    let helper = cli
        .json(&["appservice", "register", file.to_str().unwrap()])
        .await;
    assert_eq!(helper["sender"], "@helperbot:localhost");
    let mut helper = s.client();
    helper.token = Some("helper-token".into());
    assert_eq!(whoami(&helper).await.1["user_id"], "@helperbot:localhost");
    cli.json(&["appservice", "unregister", "helper"]).await;

    let list = cli.json(&["appservice", "list"]).await;
    let sources: Vec<(&str, &str)> = list["appservices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["source"].as_str().unwrap()))
        .collect();
    assert_eq!(sources, [("whatsapp", "config"), ("bot", "store")]);
    let reason = cli
        .fails(&["appservice", "unregister", "whatsapp"], 1)
        .await;
    assert!(reason.contains("config"), "{reason}");
    let mut wa = s.client();
    wa.token = Some("wa-token".into());
    assert_eq!(whoami(&wa).await.0, 200);
    cli.json(&["appservice", "unregister", "bot"]).await;
    // The audit log has the registration and its removal, not the refusals.
    let boss = s.user("boss").await;
    let (_, audit) = boss.get("/api/support/v1/audit").await;
    let entries: Vec<(&str, &str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["via"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("appservice.unregister", "bot", "admin_token"),
            ("appservice.unregister", "helper", "admin_token"),
            ("appservice.register", "helper", "admin_token"),
            ("appservice.register", "bot", "admin_token"),
        ]
    );
}
