//! `user set-role`: desk roles kept in the store, over the config's, and what they change.

use serde_json::json;

use super::{AdminCli, admin_client};
use crate::{
    common::{Client, assert_error, enc},
    support::{API, BOT, desk, eventually, set_presence},
};

/// The desk's agents as the support API lists them: (user, capacity).
async fn agents(boss: &Client) -> Vec<(String, u64)> {
    let (status, body) = boss.get(&format!("{API}/agents")).await;
    assert_eq!(status, 200, "{body}");
    body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["user_id"].as_str().unwrap().to_owned(),
                a["capacity"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_role_set_by_the_cli_makes_an_agent_who_gets_assigned_and_survives_a_restart() {
    let d = desk().await;
    let cli = AdminCli::of(&d.s);
    let dani = d.s.user("dani").await;
    let set = cli
        .json(&[
            "user",
            "set-role",
            "@dani:localhost",
            "agent",
            "--capacity",
            "2",
        ])
        .await;
    assert_eq!(
        set,
        json!({ "user_id": "@dani:localhost", "role": "agent", "capacity": 2 })
    );
    // Ana, an agent of the config's, loses the role; the config's agents keep their order.
    let set = cli
        .json(&["user", "set-role", "@ana:localhost", "user"])
        .await;
    assert_eq!(
        set,
        json!({ "user_id": "@ana:localhost", "role": "user", "capacity": null })
    );
    let expected = vec![
        ("@bob:localhost".to_owned(), 5),
        ("@dani:localhost".to_owned(), 2),
    ];
    assert_eq!(agents(&d.boss).await, expected);

    // Dani is the only agent online: a new conversation goes to her.
    set_presence(&dani, "dani", "online").await;
    let carla = d.s.user("carla").await;
    let room = carla.create_room(json!({ "invite": [BOT] })).await;
    eventually("the assignment to dani", || async {
        let (status, body) = d
            .boss
            .get(&format!("{API}/conversations/{}", enc(&room)))
            .await;
        (status == 200 && body["assignee"] == "@dani:localhost").then_some(())
    })
    .await;
    // The audit log says who gave the role and how.
    let (_, audit) = d.boss.get(&format!("{API}/audit")).await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "role.set" && e["target"] == "@dani:localhost")
        .expect("the role change is audited");
    assert_eq!(entry["via"], "admin_token");
    assert_eq!(entry["details"], json!({ "role": "agent", "capacity": 2 }));

    // Kept in the store: a restart keeps both changes over the config.
    let s = d.s.restart().await;
    let boss = Client {
        base: s.server.base_url(),
        ..d.boss.clone()
    };
    assert_eq!(agents(&boss).await, expected);
    // An agent without --capacity keeps the one she has.
    let set = AdminCli::of(&s)
        .json(&["user", "set-role", "@dani:localhost", "agent"])
        .await;
    assert_eq!(set["capacity"], 2);
    // Made an admin, she may use the admin API herself.
    let set = AdminCli::of(&s)
        .json(&["user", "set-role", "@dani:localhost", "admin"])
        .await;
    assert_eq!(set["role"], "admin");
    let dani = Client {
        base: s.server.base_url(),
        ..dani
    };
    let (status, body) = dani.get("/_charla/admin/v1/tickets").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn bad_roles_are_refused_naming_the_field_and_change_nothing() {
    let d = desk().await;
    let cli = AdminCli::of(&d.s);
    let admin = admin_client(&d.s);
    let role = |user: &str| format!("/_charla/admin/v1/users/{}/role", enc(user));
    let cases = [
        (
            "@bob:localhost",
            json!({ "role": "admin", "capacity": 3 }),
            "capacity",
        ),
        (
            "@bob:localhost",
            json!({ "role": "agent", "capacity": 0 }),
            "capacity",
        ),
        (
            "@bob:localhost",
            json!({ "role": "agent", "capacity": "2" }),
            "capacity",
        ),
        ("@bob:localhost", json!({ "role": "boss" }), "role"),
        (
            "@bob:elsewhere.example",
            json!({ "role": "agent" }),
            "user_id",
        ),
        ("bob", json!({ "role": "agent" }), "user_id"),
        (BOT, json!({ "role": "agent" }), "user_id"),
    ];
    for (user, body, field) in cases {
        let (status, answer) = admin.put(&role(user), body.clone()).await;
        assert_error(status, &answer, 400, "M_INVALID_PARAM");
        assert_eq!(answer["field"], field, "{user} {body}: {answer}");
    }
    let (status, answer) = admin
        .put(&role("@nobody:localhost"), json!({ "role": "agent" }))
        .await;
    assert_error(status, &answer, 404, "M_NOT_FOUND");
    // Through the CLI: exit 1, the server's reason.
    let reason = cli
        .fails(
            &[
                "user",
                "set-role",
                "@bob:localhost",
                "admin",
                "--capacity",
                "2",
            ],
            1,
        )
        .await;
    assert!(reason.contains("M_INVALID_PARAM"), "{reason}");
    assert_eq!(
        agents(&d.boss).await,
        vec![
            ("@ana:localhost".to_owned(), 1),
            ("@bob:localhost".to_owned(), 5)
        ]
    );
}
