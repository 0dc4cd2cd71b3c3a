//! Profiles: display names and avatars, and the member events a change updates.

use serde_json::json;

use crate::common::{TestServer, V3, assert_error, enc};

#[tokio::test]
async fn profile_get_and_set() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let me = enc("@alice:localhost");

    // The display name starts as the localpart.
    let (status, body) = bob.get(&format!("{V3}/profile/{me}")).await;
    assert_eq!((status, body), (200, json!({ "displayname": "alice" })));

    let (status, body) = alice
        .put(
            &format!("{V3}/profile/{me}/displayname"),
            json!({ "displayname": "Alice Liddell" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = alice
        .put(
            &format!("{V3}/profile/{me}/avatar_url"),
            json!({ "avatar_url": "mxc://localhost/rabbit" }),
        )
        .await;
    assert_eq!((status, body), (200, json!({})));

    let (_, body) = bob.get(&format!("{V3}/profile/{me}/displayname")).await;
    assert_eq!(body, json!({ "displayname": "Alice Liddell" }));
    let (_, body) = bob.get(&format!("{V3}/profile/{me}/avatar_url")).await;
    assert_eq!(body, json!({ "avatar_url": "mxc://localhost/rabbit" }));
    let (_, body) = s.client().get(&format!("{V3}/profile/{me}")).await;
    assert_eq!(
        body,
        json!({ "displayname": "Alice Liddell", "avatar_url": "mxc://localhost/rabbit" })
    );

    // Someone else's profile cannot be changed.
    let (status, body) = bob
        .put(
            &format!("{V3}/profile/{me}/displayname"),
            json!({ "displayname": "Mallory" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = bob
        .put(
            &format!("{V3}/profile/{me}/avatar_url"),
            json!({ "avatar_url": "mxc://localhost/evil" }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (_, body) = bob.get(&format!("{V3}/profile/{me}")).await;
    assert_eq!(
        body,
        json!({ "displayname": "Alice Liddell", "avatar_url": "mxc://localhost/rabbit" })
    );

    let (status, body) = bob
        .get(&format!("{V3}/profile/{}", enc("@nobody:localhost")))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn displayname_change_updates_member_events() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let other = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    assert_eq!(bob.join(&other).await.0, 200);

    let (status, _) = alice
        .put(
            &format!("{V3}/profile/{}/displayname", enc("@alice:localhost")),
            json!({ "displayname": "Alice L." }),
        )
        .await;
    assert_eq!(status, 200);

    for r in [&room, &other] {
        let (status, body) = bob
            .get(&format!("{V3}/rooms/{}/members?membership=join", enc(r)))
            .await;
        assert_eq!(status, 200, "{body}");
        let alice_member = body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["state_key"] == "@alice:localhost")
            .expect("alice is a member")
            .clone();
        assert_eq!(
            alice_member["content"],
            json!({ "membership": "join", "displayname": "Alice L." })
        );
        assert_eq!(alice_member["sender"], "@alice:localhost");
        assert_eq!(
            alice_member["unsigned"]["prev_content"]["displayname"],
            "alice"
        );
        let (_, joined) = bob
            .get(&format!("{V3}/rooms/{}/joined_members", enc(r)))
            .await;
        assert_eq!(
            joined["joined"]["@alice:localhost"]["display_name"],
            "Alice L."
        );
        assert_eq!(joined["joined"]["@bob:localhost"]["display_name"], "bob");
    }
}
