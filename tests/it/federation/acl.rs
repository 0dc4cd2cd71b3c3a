//! Server ACLs (`m.room.server_acl`): once a room denies a server, its events, typing notices
//! and joins are refused, and it may not read the room.

use std::time::Duration;

use serde_json::json;

use super::{
    Pair, pair,
    rooms::{bodies, join_via, sync_until},
};
use crate::common::{enc, registered};

#[tokio::test]
async fn a_server_the_room_denies_is_refused() {
    let Pair { a, b, _dirs } = pair("").await;
    let a_name = a.services.config.server_name.to_string();
    let alice = registered(&a.base_url(), "alice").await;
    let bob = registered(&b.base_url(), "bob").await;
    let carol = registered(&b.base_url(), "carol").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    join_via(&bob, &room, &a_name).await;
    bob.send_text(&room, "b1", "before the ban").await;
    let mut since = None;
    sync_until(&alice, &mut since, |s| {
        bodies(s, &room).contains(&"before the ban".to_owned())
    })
    .await;

    // Both test servers are 127.0.0.1 with a port: denying the host denies B (A's own events
    // are not subject to its rooms' ACLs).
    let (status, body) = alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.server_acl/",
                enc(&room)
            ),
            json!({ "allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    bob.send_text(&room, "b2", "after the ban").await;
    // A new user of B joins on B (which follows the room), but A refuses that join.
    let (status, body) = carol
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let carol_id = carol.get("/_matrix/client/v3/account/whoami").await.1["user_id"].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, messages) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(&room)
        ))
        .await;
    assert_eq!(status, 200);
    let texts: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(texts, ["before the ban"], "{messages}");
    let (status, _) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(carol_id.as_str().unwrap())
        ))
        .await;
    assert_eq!(status, 404, "A has no membership of Carol");

    // A room B does not follow: the join through A is refused at make_join.
    let closed = alice
        .create_room(json!({
            "preset": "public_chat",
            "initial_state": [{ "type": "m.room.server_acl", "state_key": "",
                "content": { "allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": true } }],
        }))
        .await;
    let (status, body) = carol
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&closed),
                enc(&a_name)
            ),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, &body["errcode"]),
        (403, &json!("M_FORBIDDEN")),
        "{body}"
    );
}
