//! History visibility for servers: a server whose user joins a room whose history is `joined`
//! gets what was said before the join redacted, by every read (`/backfill`, `/event`,
//! `/get_missing_events`), and what was said after whole.

use serde_json::{Value, json};

use super::fake::{Scene, event_id};
use crate::common::{enc, registered};

/// The PDU of `id` among `pdus`.
fn pdu<'a>(pdus: &'a Value, id: &str) -> &'a Value {
    pdus.as_array()
        .unwrap()
        .iter()
        .find(|p| event_id(p) == id)
        .unwrap_or_else(|| panic!("{id} in {pdus}"))
}

#[tokio::test]
async fn a_server_sees_only_the_history_its_users_may() {
    let Scene {
        charla,
        here,
        addr,
        fake,
        ..
    } = Scene::start().await;
    let alice = registered(&charla.base_url(), "alice").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    alice
        .set_state(
            &room,
            "m.room.history_visibility",
            json!({ "history_visibility": "joined" }),
        )
        .await;
    let before = alice.send_text(&room, "b", "before the join").await;
    fake.join((addr, &here), &room, &fake.user("mallory")).await;
    let after = alice.send_text(&room, "a", "after the join").await;

    let get = |uri: String| {
        let (fake, here) = (&fake, here.clone());
        async move { fake.call(addr, &here, "GET", &uri, None).await }
    };
    let (status, answer) = get(format!(
        "/_matrix/federation/v1/backfill/{}?v={}&limit=20",
        enc(&room),
        enc(&after)
    ))
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(pdu(&answer["pdus"], &before)["content"], json!({}));
    assert_eq!(
        pdu(&answer["pdus"], &after)["content"]["body"],
        json!("after the join")
    );
    let (status, answer) = get(format!("/_matrix/federation/v1/event/{}", enc(&before))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pdus"][0]["content"], json!({}), "{answer}");
    let (status, answer) = fake
        .call(
            addr,
            &here,
            "POST",
            &format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room)),
            Some(json!({ "latest_events": [after], "earliest_events": [], "limit": 20 })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(pdu(&answer["events"], &before)["content"], json!({}));

    // Opening the history later does not open what was said under `joined`; what is said
    // under `shared` is whole.
    alice
        .set_state(
            &room,
            "m.room.history_visibility",
            json!({ "history_visibility": "shared" }),
        )
        .await;
    let shared = alice.send_text(&room, "s", "shared now").await;
    let (_, answer) = get(format!(
        "/_matrix/federation/v1/backfill/{}?v={}&limit=20",
        enc(&room),
        enc(&shared)
    ))
    .await;
    assert_eq!(pdu(&answer["pdus"], &before)["content"], json!({}));
    assert_eq!(
        pdu(&answer["pdus"], &shared)["content"]["body"],
        json!("shared now")
    );
    charla.stop().await;
}
