//! Synapse's admin API in Synapse's shapes: the fields, types and codes synapse-admin and
//! scripts written for Synapse rely on, as Synapse 1.163 answers them on loopback.

use serde_json::{Value, json};

use super::admin_client;
use crate::common::{TestServer, V3, assert_error, enc};

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn users_list_get_put_deactivate_and_reset_password_answer_as_synapse() {
    let server = TestServer::start().await;
    let admin = admin_client(&server);
    for name in ["ana", "bob", "cid"] {
        server.user(name).await;
    }

    let (status, page) = admin.get("/_synapse/admin/v2/users?limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_token"], "2", "next_token is a string");
    let total = page["total"].as_u64().unwrap();
    assert_eq!(
        keys(&page["users"][0]),
        sorted(&[
            "name",
            "user_type",
            "is_guest",
            "admin",
            "deactivated",
            "shadow_banned",
            "displayname",
            "avatar_url",
            "creation_ts",
            "erased",
            "last_seen_ts",
            "locked",
        ])
    );
    assert!(page["users"][0]["admin"].is_boolean() && page["users"][0]["deactivated"].is_boolean());
    let (_, last) = admin
        .get(&format!("/_synapse/admin/v2/users?from=2&limit={total}"))
        .await;
    assert!(
        last.get("next_token").is_none(),
        "no next_token on the last page: {last}"
    );
    let (_, found) = admin.get("/_synapse/admin/v2/users?name=bo").await;
    assert_eq!(found["users"][0]["name"], "@bob:localhost");
    assert_eq!(found["total"], 1);

    let (status, ana) = admin
        .get(&format!(
            "/_synapse/admin/v2/users/{}",
            enc("@ana:localhost")
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        keys(&ana),
        sorted(&[
            "name",
            "admin",
            "deactivated",
            "locked",
            "shadow_banned",
            "creation_ts",
            "appservice_id",
            "consent_server_notice_sent",
            "consent_version",
            "consent_ts",
            "user_type",
            "is_guest",
            "suspended",
            "displayname",
            "avatar_url",
            "threepids",
            "external_ids",
            "erased",
            "last_seen_ts",
        ])
    );
    assert_eq!(ana["threepids"], json!([]));
    let (status, body) = admin
        .get(&format!(
            "/_synapse/admin/v2/users/{}",
            enc("@nobody:localhost")
        ))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // PUT: 201 when it creates, 200 when it updates.
    let carol = format!("/_synapse/admin/v2/users/{}", enc("@carol:localhost"));
    let (status, created) = admin
        .put(
            &carol,
            json!({ "password": "carol-pw-1", "displayname": "Carol", "admin": false }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "@carol:localhost");
    assert_eq!(created["displayname"], "Carol");
    let (status, updated) = admin
        .put(&carol, json!({ "displayname": "Carol B", "admin": true }))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (updated["displayname"].as_str(), updated["admin"].as_bool()),
        (Some("Carol B"), Some(true))
    );
    let (_, flag) = admin
        .get(&format!(
            "/_synapse/admin/v1/users/{}/admin",
            enc("@carol:localhost")
        ))
        .await;
    assert_eq!(flag, json!({ "admin": true }));

    // reset_password answers {} and logs the devices out by default.
    let (status, session) = server
        .client()
        .post(
            &format!("{V3}/login"),
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" }, "password": "carol-pw-1" }),
        )
        .await;
    assert_eq!(status, 200);
    let mut carol_client = server.client();
    carol_client.token = session["access_token"].as_str().map(str::to_owned);
    let (status, body) = admin
        .post(
            &format!(
                "/_synapse/admin/v1/reset_password/{}",
                enc("@carol:localhost")
            ),
            json!({ "new_password": "carol-pw-2" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(
        carol_client.get(&format!("{V3}/account/whoami")).await.0,
        401
    );

    // deactivate: Synapse's answer; listed only with ?deactivated=true; login refused per spec.
    let (status, body) = admin
        .post(
            &format!("/_synapse/admin/v1/deactivate/{}", enc("@carol:localhost")),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({ "id_server_unbind_result": "success" }))
    );
    let (_, active) = admin.get("/_synapse/admin/v2/users?limit=100").await;
    assert!(!active.to_string().contains("@carol:localhost"));
    let (_, all) = admin
        .get("/_synapse/admin/v2/users?deactivated=true&limit=100")
        .await;
    let carol_row = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "@carol:localhost")
        .expect("listed with deactivated=true");
    assert_eq!(carol_row["deactivated"], true);
    let (status, body) = server
        .client()
        .post(
            &format!("{V3}/login"),
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" }, "password": "carol-pw-2" }),
        )
        .await;
    assert_error(status, &body, 403, "M_USER_DEACTIVATED");
    let (status, body) = admin
        .post(
            &format!("/_synapse/admin/v1/deactivate/{}", enc("@nobody:localhost")),
            json!({}),
        )
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // server_version answers without a token.
    let (status, version) = server
        .client()
        .get("/_synapse/admin/v1/server_version")
        .await;
    assert_eq!(status, 200);
    assert!(version["server_version"].is_string());
}

#[tokio::test]
async fn rooms_list_details_members_and_delete_answer_as_synapse() {
    let server = TestServer::start().await;
    let admin = admin_client(&server);
    let ana = server.user("ana").await;
    let bob = server.user("bob").await;
    let first = ana
        .create_room(json!({ "name": "Alpha", "room_alias_name": "alpha" }))
        .await;
    let second = ana
        .create_room(json!({ "name": "Beta", "preset": "public_chat" }))
        .await;
    assert_eq!(bob.join(&second).await.0, 200);

    let (status, page) = admin.get("/_synapse/admin/v1/rooms?limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["offset"], 0);
    assert_eq!(page["total_rooms"], 2);
    assert_eq!(page["next_batch"], 1, "next_batch is an integer");
    assert_eq!(page["rooms"][0]["name"], "Alpha", "ordered by name");
    assert_eq!(
        keys(&page["rooms"][0]),
        sorted(&[
            "room_id",
            "name",
            "canonical_alias",
            "joined_members",
            "joined_local_members",
            "version",
            "creator",
            "encryption",
            "federatable",
            "public",
            "join_rules",
            "guest_access",
            "history_visibility",
            "state_events",
            "room_type",
        ])
    );
    let (_, rest) = admin.get("/_synapse/admin/v1/rooms?from=1&limit=1").await;
    assert_eq!(rest["rooms"][0]["name"], "Beta");
    assert!(rest.get("next_batch").is_none());

    let (status, details) = admin
        .get(&format!("/_synapse/admin/v1/rooms/{}", enc(&first)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(details["canonical_alias"], "#alpha:localhost");
    assert_eq!(details["joined_local_devices"], 1);
    for field in [
        "topic",
        "avatar",
        "forgotten",
        "tombstoned",
        "replacement_room",
    ] {
        assert!(
            details.get(field).is_some(),
            "details have {field}: {details}"
        );
    }
    let (status, body) = admin
        .get("/_synapse/admin/v1/rooms/%21nope:localhost")
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    let (_, members) = admin
        .get(&format!(
            "/_synapse/admin/v1/rooms/{}/members",
            enc(&second)
        ))
        .await;
    assert_eq!(
        members,
        json!({ "members": ["@ana:localhost", "@bob:localhost"], "total": 2 })
    );

    // DELETE with a body and without one.
    let (status, deleted) = admin
        .delete(
            &format!("/_synapse/admin/v2/rooms/{}", enc(&second)),
            json!({ "block": true, "purge": true }),
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    let delete_id = deleted["delete_id"].as_str().expect("delete_id").to_owned();
    let (status, deleted) = admin
        .raw(
            reqwest::Method::DELETE,
            &format!("/_synapse/admin/v2/rooms/{}", enc(&first)),
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert!(deleted["delete_id"].is_string());

    let (_, status_body) = admin
        .get(&format!(
            "/_synapse/admin/v2/rooms/delete_status/{delete_id}"
        ))
        .await;
    assert_eq!(status_body["status"], "complete");
    assert_eq!(
        status_body["shutdown_room"]["kicked_users"],
        json!(["@ana:localhost", "@bob:localhost"])
    );
    let (_, by_room) = admin
        .get(&format!(
            "/_synapse/admin/v2/rooms/{}/delete_status",
            enc(&second)
        ))
        .await;
    assert_eq!(by_room["results"][0]["delete_id"], delete_id.as_str());

    let (_, page) = admin.get("/_synapse/admin/v1/rooms").await;
    assert_eq!(page["total_rooms"], 0, "{page}");
    for member in [&ana, &bob] {
        let (_, joined) = member.get(&format!("{V3}/joined_rooms")).await;
        assert_eq!(joined, json!({ "joined_rooms": [] }));
    }
}
