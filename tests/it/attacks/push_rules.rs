//! Push rules (#18 item 5): one user's rule or display name must never stop push for
//! everyone. Patterns ruma would turn into an uncompilable regex are refused when set, and
//! push delivery goes on for the other users of the room.

use serde_json::json;

use crate::{
    common::{OUTBOUND_TO_LOOPBACK, TestServer, V3, assert_error, enc},
    push_gateway::{Gateway, direct_chat, set_pusher},
};

/// Far past what ruma's regex can compile: on the old code this rule panicked the push
/// consumer at the next message, and push stopped for every user until restart (and again
/// after it).
fn huge_pattern() -> String {
    "?".repeat(200_000)
}

#[tokio::test]
async fn a_pattern_that_would_panic_evaluation_is_refused_and_push_goes_on_for_everyone() {
    let s = TestServer::start_with(OUTBOUND_TO_LOOPBACK).await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = direct_chat(&s).await;
    set_pusher(&bob, "bob-phone", json!({ "url": gateway.url })).await;
    // Alice, who receives Bob's messages, tries to break evaluation with her own rules.
    set_pusher(&alice, "alice-phone", json!({ "url": gateway.url })).await;
    let (status, body) = alice
        .put(
            &format!("{V3}/pushrules/global/content/huge"),
            json!({ "pattern": huge_pattern(), "actions": ["notify"] }),
        )
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let (status, body) = alice
        .put(
            &format!("{V3}/pushrules/global/override/huge"),
            json!({ "conditions": [{ "kind": "event_match", "key": "content.body",
                                     "pattern": huge_pattern() }],
                    "actions": ["notify"] }),
        )
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    // Her display name is a pattern too (.m.rule.contains_display_name), in the room's member
    // event and in her profile.
    let (status, body) = alice
        .put(
            &format!(
                "{V3}/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc("@alice:localhost")
            ),
            json!({ "membership": "join", "displayname": "?".repeat(60_000) }),
        )
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let (status, body) = alice
        .put(
            &format!("{V3}/profile/{}/displayname", enc("@alice:localhost")),
            json!({ "displayname": "?".repeat(257) }),
        )
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    // Nothing was stored: her rules are the defaults plus nothing.
    let (status, body) = alice
        .get(&format!("{V3}/pushrules/global/content/huge"))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // Push goes on: Bob's message reaches Alice, Alice's reaches Bob.
    let from_bob = bob.send_text(&room, "b1", "are you there").await;
    let from_alice = alice.send_text(&room, "a1", "yes, here").await;
    let got = gateway.wait_for(2).await;
    let mut pushed: Vec<(String, String)> = got
        .iter()
        .map(|n| {
            let n = &n["notification"];
            (
                n["event_id"].as_str().unwrap().to_owned(),
                n["devices"][0]["pushkey"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pushed.sort();
    let mut want = vec![
        (from_bob, "alice-phone".to_owned()),
        (from_alice, "bob-phone".to_owned()),
    ];
    want.sort();
    assert_eq!(pushed, want);
}

#[tokio::test]
async fn a_user_cannot_pile_up_push_rules() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    for i in 0..256 {
        let (status, body) = alice
            .put(
                &format!(
                    "{V3}/pushrules/global/room/{}",
                    enc(&format!("!r{i}:localhost"))
                ),
                json!({ "actions": ["notify"] }),
            )
            .await;
        assert_eq!(status, 200, "rule {i}: {body}");
    }
    let (status, body) = alice
        .put(
            &format!("{V3}/pushrules/global/room/{}", enc("!one-more:localhost")),
            json!({ "actions": ["notify"] }),
        )
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    // Changing an existing one is still fine.
    let (status, body) = alice
        .put(
            &format!("{V3}/pushrules/global/room/{}", enc("!r0:localhost")),
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
