//! Two servers changing a room's state at the same time: another server's event that forks
//! from an older event is resolved against the current state with state resolution v2, so
//! Charla ends with the state every other server computes (Synapse's too), not with whatever
//! arrived last.

use serde_json::{Value, json};

use super::{fake::Scene, peer_at};
use crate::common::{Client, enc, registered};

/// The room's current state event of `kind` (state key "").
async fn state(client: &Client, room: &str, kind: &str) -> Value {
    let (status, content) = client
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/{kind}/",
            enc(room)
        ))
        .await;
    assert_eq!(status, 200, "{content}");
    content
}

/// The topic event `id` is in the room's timeline, setting `topic`.
async fn assert_topic_of(client: &Client, room: &str, id: &str, topic: &str) {
    let (status, seen) = client
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(room),
            enc(id)
        ))
        .await;
    assert_eq!(
        (status, &seen["content"]["topic"]),
        (200, &json!(topic)),
        "{seen}"
    );
}

#[tokio::test]
async fn concurrent_state_changes_resolve_as_every_server_resolves_them() {
    let Scene {
        charla,
        here,
        addr,
        fake,
        certs,
        data,
        port,
    } = Scene::start().await;
    let to = (addr, here.as_str());
    let mallory = fake.user("mallory");

    let alice = registered(&charla.base_url(), "alice").await;
    let bob = registered(&charla.base_url(), "bob").await;
    let bob_id = format!("@bob:{here}");
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    let joined = fake.join(to, &room, &mallory).await;
    let create = joined.state_id("m.room.create");

    let mut levels = state(&alice, &room, "m.room.power_levels").await;
    levels["users"][&mallory] = json!(100);
    levels["users"][&bob_id] = json!(50);
    let p1 = alice
        .set_state(&room, "m.room.power_levels", levels.clone())
        .await;
    let t0 = alice
        .set_state(&room, "m.room.topic", json!({"topic": "original"}))
        .await;
    let t1 = bob
        .set_state(&room, "m.room.topic", json!({"topic": "Bob's"}))
        .await;

    // Mallory's server had not seen Bob's topic when Mallory took Bob's power away.
    let mut demoted = levels.clone();
    demoted["users"][&bob_id] = json!(0);
    let depth = joined.depth + 10;
    let p2 = json!({
        "room_id": room, "sender": mallory, "type": "m.room.power_levels", "state_key": "",
        "content": demoted, "origin_server_ts": ruma::MilliSecondsSinceUnixEpoch::now(),
        "prev_events": [t0], "auth_events": [create, p1, joined.join_id], "depth": depth,
    });
    let (p2_id, p2) = fake.seal(&fake.key, p2);
    let results = fake.send_pdus(to, "fork-1", vec![p2]).await;
    assert_eq!(results[&p2_id], json!({}), "{results}");

    // The power levels come first; Bob's topic then fails them and the older topic stands,
    // as on Mallory's server. Arrival order would have kept Bob's.
    assert_eq!(state(&alice, &room, "m.room.power_levels").await, demoted);
    assert_eq!(
        state(&alice, &room, "m.room.topic").await,
        json!({"topic": "original"})
    );
    let (status, answer) = bob
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
                enc(&room)
            ),
            json!({"topic": "Bob again"}),
        )
        .await;
    assert_eq!(
        (status, &answer["errcode"]),
        (403, &json!("M_FORBIDDEN")),
        "Bob lost the power to: {answer}"
    );
    // Bob's topic is still part of the room's history.
    assert_topic_of(&alice, &room, &t1, "Bob's").await;

    // Alice sets the topic; Mallory's competing topic, forked from the power levels and
    // stamped earlier, loses to hers (resolution orders them by time), yet is in the timeline.
    alice
        .set_state(&room, "m.room.topic", json!({"topic": "Alice's"}))
        .await;
    let stale = ruma::MilliSecondsSinceUnixEpoch(
        ruma::UInt::new(u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get()) - 60_000).unwrap(),
    );
    let topic = json!({
        "room_id": room, "sender": mallory, "type": "m.room.topic", "state_key": "",
        "content": {"topic": "Mallory's"}, "origin_server_ts": stale,
        "prev_events": [p2_id], "auth_events": [create, p2_id, joined.join_id],
        "depth": depth + 1,
    });
    let (topic_id, topic) = fake.seal(&fake.key, topic);
    let results = fake.send_pdus(to, "fork-2", vec![topic]).await;
    assert_eq!(results[&topic_id], json!({}), "{results}");
    assert_eq!(
        state(&alice, &room, "m.room.topic").await,
        json!({"topic": "Alice's"})
    );
    assert_topic_of(&alice, &room, &topic_id, "Mallory's").await;

    // What was resolved is what a restarted server holds.
    charla.stop().await;
    let charla = peer_at(certs.path(), port, data.path(), "").await;
    let alice = Client {
        base: charla.base_url(),
        ..alice
    };
    assert_eq!(
        state(&alice, &room, "m.room.topic").await,
        json!({"topic": "Alice's"})
    );
    assert_eq!(state(&alice, &room, "m.room.power_levels").await, demoted);
    charla.stop().await;
}
