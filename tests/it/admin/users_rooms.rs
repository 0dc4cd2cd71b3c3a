//! `charla admin user …`, `room …` and `stats` through the real binary, and the admin API's
//! gate.

use serde_json::{Value, json};

use super::{AdminCli, run};
use crate::common::{TestServer, V3, assert_error, enc};

async fn login(server: &TestServer, user: &str, password: &str) -> (u16, Value) {
    server
        .client()
        .post(
            &format!("{V3}/login"),
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": password,
            }),
        )
        .await
}

#[tokio::test]
async fn the_cli_finds_the_server_and_its_token_from_the_config() {
    let server = TestServer::start().await;
    let token = server.data_path().join("admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "admin.token is private");
    }
    let config = server.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"localhost\"\n[server]\nlisten = \"{}\"\n[storage]\npath = {:?}\n",
            server.server.addr,
            server.data_path()
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_charla"));
    command
        .args(["admin", "--config"])
        .arg(&config)
        .args([
            "user",
            "create",
            "ana",
            "--password",
            "pw-ana-123",
            "--json",
        ])
        .env_remove("CHARLA_URL")
        .env_remove("CHARLA_ADMIN_TOKEN");
    let created = run(command).await.json();
    assert_eq!(created["user_id"], "@ana:localhost");

    // --url really redirects it: to a port nobody listens on, exit 3 and one line on stderr.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_charla"));
    command
        .args(["admin", "--config"])
        .arg(&config)
        .args(["--url", "http://127.0.0.1:9", "stats", "--json"])
        .env_remove("CHARLA_URL")
        .env_remove("CHARLA_ADMIN_TOKEN");
    let refused = run(command).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stdout.is_empty());
    assert_eq!(refused.stderr.trim().lines().count(), 1, "{refused:?}");

    // A wrong token is refused the same way.
    let cli = AdminCli {
        url: server.server.base_url(),
        token: "not-the-token".into(),
    };
    let wrong = cli.run(&["stats", "--json"]).await;
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(wrong.stderr.contains("M_UNKNOWN_TOKEN"), "{wrong:?}");
}

#[tokio::test]
async fn user_commands_create_show_list_reset_and_deactivate() {
    let server = TestServer::start().await;
    let cli = AdminCli::of(&server);

    let created = cli
        .run(&[
            "user",
            "create",
            "ana",
            "--password",
            "first-pw-1",
            "--displayname",
            "Ana Díaz",
            "--json",
        ])
        .await
        .json();
    assert_eq!(created["user_id"], "@ana:localhost");
    assert_eq!(created["displayname"], "Ana Díaz");
    assert_eq!(created["admin"], false);
    assert_eq!(created["role"], "user");

    let again = cli
        .run(&["user", "create", "ana", "--password", "x-pw-12345"])
        .await;
    assert_eq!(
        again.code, 1,
        "creating a user that exists fails: {again:?}"
    );
    assert!(again.stderr.contains("M_USER_IN_USE"), "{again:?}");
    assert_eq!(again.stderr.trim().lines().count(), 1);

    // Without --password one is made, printed, and works.
    let boss = cli
        .run(&["user", "create", "@boss:localhost", "--admin", "--json"])
        .await
        .json();
    assert_eq!(boss["admin"], true);
    let generated = boss["password"]
        .as_str()
        .expect("a generated password is printed");
    assert_eq!(login(&server, "boss", generated).await.0, 200);

    let shown = cli
        .run(&["user", "show", "@ana:localhost", "--json"])
        .await
        .json();
    assert_eq!(shown["displayname"], "Ana Díaz");
    assert_eq!(shown["deactivated"], false);
    assert_eq!(shown["devices"], 0);

    let (status, session) = login(&server, "ana", "first-pw-1").await;
    assert_eq!(status, 200);
    let mut ana = server.client();
    ana.token = session["access_token"].as_str().map(str::to_owned);
    assert_eq!(ana.get(&format!("{V3}/account/whoami")).await.0, 200);

    let reset = cli
        .run(&[
            "user",
            "reset-password",
            "@ana:localhost",
            "--password",
            "second-pw-2",
            "--json",
        ])
        .await
        .json();
    assert_eq!(reset["logout_devices"], true);
    let (status, body) = ana.get(&format!("{V3}/account/whoami")).await;
    assert_error(status, &body, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(login(&server, "ana", "first-pw-1").await.0, 403);
    assert_eq!(login(&server, "ana", "second-pw-2").await.0, 200);

    let listed = cli.run(&["user", "list", "--json"]).await.json();
    let ids: Vec<&str> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"@ana:localhost") && ids.contains(&"@boss:localhost"),
        "{listed}"
    );
    assert_eq!(listed["total"], ids.len());

    let done = cli
        .run(&["user", "deactivate", "@ana:localhost", "--json"])
        .await
        .json();
    assert_eq!(done["deactivated"], true);
    let (status, body) = login(&server, "ana", "second-pw-2").await;
    assert_error(status, &body, 403, "M_USER_DEACTIVATED");
    let listed = cli.run(&["user", "list", "--json"]).await.json();
    assert!(
        !listed.to_string().contains("@ana:localhost"),
        "deactivated users are listed only on request"
    );
    let all = cli
        .run(&["user", "list", "--deactivated", "--json"])
        .await
        .json();
    assert!(all.to_string().contains("@ana:localhost"));

    let missing = cli.run(&["user", "show", "@nobody:localhost"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("M_NOT_FOUND"), "{missing:?}");

    // Without --json: a table for people, with the user in it.
    let table = cli.run(&["user", "list"]).await;
    assert_eq!(table.code, 0);
    assert!(table.stdout.contains("@boss:localhost") && table.stdout.contains("user_id"));
}

#[tokio::test]
async fn room_commands_list_show_members_and_delete() {
    let server = TestServer::start().await;
    let cli = AdminCli::of(&server);
    let ana = server.user("ana").await;
    let bob = server.user("bob").await;
    let room = ana
        .create_room(
            json!({ "name": "Ventas", "room_alias_name": "ventas", "preset": "public_chat" }),
        )
        .await;
    assert_eq!(bob.join(&room).await.0, 200);
    let event = ana.send_text(&room, "t1", "the secret price is 42").await;

    let listed = cli.run(&["room", "list", "--json"]).await.json();
    let entry = listed["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room.as_str())
        .cloned()
        .expect("the room is listed");
    assert_eq!(entry["name"], "Ventas");
    assert_eq!(entry["canonical_alias"], "#ventas:localhost");
    assert_eq!(entry["joined_members"], 2);
    assert_eq!(entry["creator"], "@ana:localhost");

    let shown = cli.run(&["room", "show", &room, "--json"]).await.json();
    assert_eq!(shown["join_rules"], "public");
    assert_eq!(shown["conversation"], Value::Null);

    let members = cli.run(&["room", "members", &room, "--json"]).await.json();
    assert_eq!(
        members["members"],
        json!([
            { "user_id": "@ana:localhost", "membership": "join", "displayname": "ana" },
            { "user_id": "@bob:localhost", "membership": "join", "displayname": "bob" },
        ])
    );

    let deleted = cli.run(&["room", "delete", &room, "--json"]).await.json();
    assert_eq!(
        deleted["kicked_users"],
        json!(["@ana:localhost", "@bob:localhost"])
    );
    assert!(deleted["purged_events"].as_u64().unwrap() > 0);

    for member in [&ana, &bob] {
        let (_, joined) = member.get(&format!("{V3}/joined_rooms")).await;
        assert_eq!(joined["joined_rooms"], json!([]));
        let (status, body) = member.join(&room).await;
        assert_error(status, &body, 403, "M_FORBIDDEN");
    }
    let listed = cli.run(&["room", "list", "--json"]).await.json();
    assert!(!listed.to_string().contains(room.as_str()), "{listed}");
    let (status, _) = ana
        .get(&format!("{V3}/directory/room/{}", enc("#ventas:localhost")))
        .await;
    assert_eq!(status, 404, "the alias is gone");
    // The history is purged: the message's text is nowhere, its position kept.
    let (status, context) = ana
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room),
            enc(&event)
        ))
        .await;
    assert!(
        status != 200 || context["content"] == json!({}),
        "{status} {context}"
    );
    let again = cli.run(&["room", "delete", &room]).await;
    assert_eq!(again.code, 1, "{again:?}");
    // The store still opens and serves after the purge.
    let server = server.restart().await;
    let cli = AdminCli::of(&server);
    assert!(
        !cli.run(&["room", "list", "--json"])
            .await
            .json()
            .to_string()
            .contains(room.as_str())
    );
}

#[tokio::test]
async fn stats_count_users_rooms_and_todays_messages() {
    let server = TestServer::start().await;
    let cli = AdminCli::of(&server);
    let ana = server.user("ana").await;
    let room = ana.create_room(json!({})).await;
    for i in 0..3 {
        ana.send_text(&room, &format!("t{i}"), "hello").await;
    }
    let stats = cli.run(&["stats", "--json"]).await.json();
    assert!(
        stats["users"].is_u64() && stats["rooms"].is_u64(),
        "{stats}"
    );
    // ana and the support bot's account.
    assert!(stats["users"].as_u64().unwrap() >= 1);
    assert_eq!(stats["rooms"], 1);
    assert_eq!(stats["messages_today"], 3);
    assert_eq!(stats["messages_today_complete"], true);
    assert_eq!(stats["open_tickets"], 0);
    assert_eq!(stats["conversations"]["open"], 0);
}

/// Every admin endpoint: 401 without a token, 403 `M_FORBIDDEN` for a user who is not an
/// admin, before any lookup (the targets do not exist).
#[tokio::test]
async fn every_admin_endpoint_refuses_anonymous_callers_and_non_admins() {
    let server = TestServer::start().await;
    let user = server.user("mallory").await;
    let anonymous = server.client();
    let endpoints: &[(&str, &str)] = &[
        ("GET", "/_charla/admin/v1/users"),
        ("POST", "/_charla/admin/v1/users"),
        ("GET", "/_charla/admin/v1/users/@x:localhost"),
        ("POST", "/_charla/admin/v1/users/@x:localhost/deactivate"),
        ("POST", "/_charla/admin/v1/users/@x:localhost/password"),
        ("GET", "/_charla/admin/v1/rooms"),
        ("GET", "/_charla/admin/v1/rooms/!x:localhost"),
        ("GET", "/_charla/admin/v1/rooms/!x:localhost/members"),
        ("DELETE", "/_charla/admin/v1/rooms/!x:localhost"),
        ("GET", "/_charla/admin/v1/stats"),
        ("GET", "/_charla/admin/v1/backup"),
        ("GET", "/_synapse/admin/v2/users"),
        ("GET", "/_synapse/admin/v2/users/@x:localhost"),
        ("PUT", "/_synapse/admin/v2/users/@x:localhost"),
        ("POST", "/_synapse/admin/v1/deactivate/@x:localhost"),
        ("POST", "/_synapse/admin/v1/reset_password/@x:localhost"),
        ("GET", "/_synapse/admin/v1/users/@x:localhost/admin"),
        ("PUT", "/_synapse/admin/v1/users/@x:localhost/admin"),
        ("GET", "/_synapse/admin/v1/users/@x:localhost/joined_rooms"),
        ("GET", "/_synapse/admin/v1/rooms"),
        ("GET", "/_synapse/admin/v1/rooms/!x:localhost"),
        ("GET", "/_synapse/admin/v1/rooms/!x:localhost/members"),
        ("DELETE", "/_synapse/admin/v1/rooms/!x:localhost"),
        ("DELETE", "/_synapse/admin/v2/rooms/!x:localhost"),
        ("GET", "/_synapse/admin/v2/rooms/!x:localhost/delete_status"),
        ("GET", "/_synapse/admin/v2/rooms/delete_status/1"),
    ];
    for (method, path) in endpoints {
        let method: reqwest::Method = method.parse().unwrap();
        let path = path.replace('!', "%21").replace('@', "%40");
        let (status, body) = anonymous.raw(method.clone(), &path, b"{}".to_vec()).await;
        assert_error(status, &body, 401, "M_MISSING_TOKEN");
        let (status, body) = user.raw(method, &path, b"{}".to_vec()).await;
        assert_error(status, &body, 403, "M_FORBIDDEN");
    }
}

/// Administrators are accounts with the admin flag and the desk's admins, besides the token;
/// what they do is in the audit log with who did it.
#[tokio::test]
async fn admin_accounts_and_desk_admins_may_call_it_and_are_audited() {
    let server = TestServer::start_with("[support]\nadmins = [\"@lead:localhost\"]\n").await;
    let cli = AdminCli::of(&server);
    let lead = server.user("lead").await;
    let _ = server.user("carol").await;
    cli.run(&[
        "user",
        "create",
        "root",
        "--password",
        "root-pw-123",
        "--admin",
    ])
    .await;
    let (status, session) = login(&server, "root", "root-pw-123").await;
    assert_eq!(status, 200);
    let mut root = server.client();
    root.token = session["access_token"].as_str().map(str::to_owned);

    let (status, body) = root.get("/_charla/admin/v1/users/@carol:localhost").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = lead.get("/_synapse/admin/v2/users").await;
    assert_eq!(status, 200);
    let (status, _) = lead
        .post(
            "/_charla/admin/v1/users/@carol:localhost/deactivate",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);

    let (status, audit) = lead.get("/api/support/v1/audit").await;
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().expect("entries");
    let created = entries
        .iter()
        .find(|e| e["action"] == "user.create" && e["target"] == "@root:localhost")
        .expect("user creation audited");
    assert_eq!(created["via"], "admin_token");
    let deactivated = entries
        .iter()
        .find(|e| e["action"] == "user.deactivate")
        .expect("deactivation audited");
    assert_eq!(deactivated["actor"], "@lead:localhost");
    assert_eq!(deactivated["via"], "admin");
}

/// Deleting a conversation's room closes the conversation first: it leaves the desk's open
/// lists and its agent's load.
#[tokio::test]
async fn deleting_a_conversation_room_closes_the_conversation() {
    let desk = crate::support::desk().await;
    let cli = AdminCli::of(&desk.s);
    let _customer = desk.s.user("cus").await;
    let (status, created) = desk
        .boss
        .post(
            "/api/support/v1/conversations",
            json!({ "participants": ["@cus:localhost"], "name": "Refund" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().expect("room_id").to_owned();
    let before = cli.run(&["stats", "--json"]).await.json();
    assert_eq!(before["conversations"]["open"], 1, "{before}");

    let deleted = cli.run(&["room", "delete", &room, "--json"]).await.json();
    assert!(
        deleted["kicked_users"].as_array().unwrap().len() >= 2,
        "{deleted}"
    );

    let after = cli.run(&["stats", "--json"]).await.json();
    assert_eq!(after["conversations"]["open"], 0, "{after}");
    assert_eq!(after["conversations"]["closed"], 1, "{after}");
    let (status, audit) = desk.boss.get("/api/support/v1/audit").await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == room.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["room.delete", "conversation.close", "conversation.create"],
        "newest first"
    );
}
