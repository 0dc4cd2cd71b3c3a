//! Knocking (room versions 7+, `join_rule: knock`): a user asks to be let in, the room's
//! members see the knock and answer with an invite. Locally, and from another server through
//! `make_knock`/`send_knock`, where the knocker's sync shows the room under `rooms.knock` with
//! the stripped state the room's server sent.

use serde_json::{Value, json};

use super::{Pair, pair, rooms::sync_until};
use crate::common::{assert_error, enc, registered};

/// The types of a room's knock state in the syncs seen.
fn knock_state(seen: &[Value], room: &str) -> Vec<String> {
    seen.iter()
        .flat_map(|s| {
            s["rooms"]["knock"][room]["knock_state"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|e| format!("{} {}", e["type"].as_str().unwrap(), e["content"]))
        .collect()
}

#[tokio::test]
async fn users_knock_here_and_from_another_server_and_are_let_in() {
    let Pair { a, b, _dirs } = pair("").await;
    let a_name = a.services.config.server_name.to_string();
    let alice = registered(&a.base_url(), "alice").await;
    let carol = registered(&a.base_url(), "carol").await;
    let bob = registered(&b.base_url(), "bob").await;
    let carol_id = format!("@carol:{a_name}");
    let bob_id = format!("@bob:{}", b.services.config.server_name);
    let room = alice
        .create_room(json!({
            "preset": "private_chat", "name": "Soporte VIP",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                                "content": { "join_rule": "knock" } }],
        }))
        .await;
    let closed = alice.create_room(json!({ "preset": "private_chat" })).await;

    // A room that is invite-only refuses a knock; a knock room takes it.
    let (status, body) = carol
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&closed)),
            json!({}),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = carol
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            json!({ "reason": "Tengo una cuenta premium" }),
        )
        .await;
    assert_eq!((status, &body["room_id"]), (200, &json!(room)), "{body}");
    let mut c_since = None;
    let seen = sync_until(&carol, &mut c_since, |s| !knock_state(s, &room).is_empty()).await;
    let state = knock_state(&seen, &room);
    assert!(
        state.contains(&r#"m.room.join_rules {"join_rule":"knock"}"#.to_owned()),
        "{state:?}"
    );
    assert!(state.iter().any(|e| e.contains("Soporte VIP")), "{state:?}");

    // Bob, on the other server, knocks through Alice's.
    let (status, body) = bob
        .post(
            &format!(
                "/_matrix/client/v3/knock/{}?via={}",
                enc(&room),
                enc(&a_name)
            ),
            json!({ "reason": "Soy cliente" }),
        )
        .await;
    assert_eq!((status, &body["room_id"]), (200, &json!(room)), "{body}");
    let mut b_since = None;
    let seen = sync_until(&bob, &mut b_since, |s| !knock_state(s, &room).is_empty()).await;
    let state = knock_state(&seen, &room);
    assert!(state.iter().any(|e| e.contains("Soporte VIP")), "{state:?}");
    assert!(
        state
            .iter()
            .any(|e| e.starts_with("m.room.member") && e.contains("knock")),
        "{state:?}"
    );

    // Alice sees both knocks, with their reasons, and lets both in.
    let (status, member) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&bob_id)
        ))
        .await;
    assert_eq!(status, 200, "{member}");
    assert_eq!(
        (&member["membership"], &member["reason"]),
        (&json!("knock"), &json!("Soy cliente"))
    );
    for user in [&carol_id, &bob_id] {
        let (status, body) = alice
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
                json!({ "user_id": user }),
            )
            .await;
        assert_eq!(status, 200, "{user}: {body}");
    }
    sync_until(&bob, &mut b_since, |s| {
        s.iter().any(|s| s["rooms"]["invite"][&room].is_object())
    })
    .await;
    for client in [&carol, &bob] {
        let (status, body) = client
            .post(
                &format!("/_matrix/client/v3/join/{}", enc(&room)),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for user in [&carol_id, &bob_id] {
        let (_, member) = alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(user)
            ))
            .await;
        assert_eq!(member["membership"], json!("join"), "{user}: {member}");
    }
    a.stop().await;
    b.stop().await;
}
