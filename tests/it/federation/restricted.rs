//! Restricted rooms: members of an allowed room (a space) join without an invite, a member
//! with the power to invite vouching for the join (`join_authorised_via_users_server`), here
//! and from another server, whose join this server signs; anyone else is refused.

use serde_json::json;

use super::{Pair, pair};
use crate::common::{assert_error, enc, registered};

#[tokio::test]
async fn members_of_an_allowed_room_join_a_restricted_room_here_and_from_afar() {
    let Pair { a, b, _dirs } = pair("").await;
    let a_name = a.services.config.server_name.to_string();
    let alice = registered(&a.base_url(), "alice").await;
    let carol = registered(&a.base_url(), "carol").await;
    let dave = registered(&a.base_url(), "dave").await;
    let bob = registered(&b.base_url(), "bob").await;
    let space = alice
        .create_room(json!({ "preset": "public_chat", "name": "Clientes" }))
        .await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat", "name": "Soporte de clientes",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": {
                "join_rule": "restricted",
                "allow": [{ "type": "m.room_membership", "room_id": space }],
            }}],
        }))
        .await;
    let join = |room: &str| {
        format!(
            "/_matrix/client/v3/join/{}?server_name={}",
            enc(room),
            enc(&a_name)
        )
    };

    // Not in the space: refused, here and from afar.
    let (status, body) = dave.post(&join(&room), json!({})).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = bob.post(&join(&room), json!({})).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");

    // In the space: let in, Alice vouching.
    for (client, user) in [
        (&carol, format!("@carol:{a_name}")),
        (&bob, format!("@bob:{}", b.services.config.server_name)),
    ] {
        let (status, body) = client.post(&join(&space), json!({})).await;
        assert_eq!(status, 200, "{user} joins the space: {body}");
        let (status, body) = client.post(&join(&room), json!({})).await;
        assert_eq!(status, 200, "{user} joins the room: {body}");
        let (status, member) = alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(&user)
            ))
            .await;
        assert_eq!(status, 200, "{member}");
        assert_eq!(member["membership"], json!("join"), "{member}");
        assert_eq!(
            member["join_authorised_via_users_server"],
            json!(format!("@alice:{a_name}")),
            "{member}"
        );
    }
    // Bob's server has the room too, and Bob speaks in it.
    let id = bob.send_text(&room, "r1", "hola").await;
    assert!(id.starts_with('$'), "{id}");
    a.stop().await;
    b.stop().await;
}
