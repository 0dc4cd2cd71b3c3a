//! A hostile server: a fake Matrix server run by the test (its own TLS key document, its own
//! signing key) that joins a Charla room properly, then sends what a hostile server would:
//! tampered, forged and unauthorized events, oversized transactions, requests for others'
//! users and rooms. Each is refused or neutralized, and nothing it should not change changes.

use ruma::{
    CanonicalJsonObject,
    room_version_rules::RoomVersionRules,
    signatures::{Ed25519KeyPair, reference_hash},
};
use serde_json::{Value, json};

use super::fake::Scene;
use crate::common::{enc, registered};

#[tokio::test]
async fn a_hostile_server_is_refused_and_changes_nothing_it_may_not() {
    let Scene {
        charla,
        here,
        addr,
        fake,
        ..
    } = Scene::start().await;
    let alice = registered(&charla.base_url(), "alice").await;
    let alice_id = alice.get("/_matrix/client/v3/account/whoami").await.1["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let private = alice.create_room(json!({ "preset": "private_chat" })).await;
    let mallory = fake.user("mallory");

    // A join for a user of another server, or into a private room, is refused.
    fake.refused(
        (addr, &here),
        (
            "GET",
            &format!(
                "/_matrix/federation/v1/make_join/{}/{}?ver=11",
                enc(&room),
                enc(&alice_id)
            ),
        ),
        None,
        (403, "M_FORBIDDEN"),
    )
    .await;
    fake.refused(
        (addr, &here),
        (
            "GET",
            &format!(
                "/_matrix/federation/v1/make_join/{}/{}?ver=11",
                enc(&private),
                enc(&mallory)
            ),
        ),
        None,
        (403, "M_FORBIDDEN"),
    )
    .await;
    // Without `ver=11` the room's version is not one the asker says it supports.
    fake.refused(
        (addr, &here),
        (
            "GET",
            &format!(
                "/_matrix/federation/v1/make_join/{}/{}",
                enc(&room),
                enc(&mallory)
            ),
        ),
        None,
        (400, "M_INCOMPATIBLE_ROOM_VERSION"),
    )
    .await;

    // Mallory joins the public room properly.
    let (status, template) = fake
        .call(
            addr,
            &here,
            "GET",
            &format!(
                "/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11",
                enc(&room),
                enc(&mallory)
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{template}");
    let mut join = template["event"].clone();
    join["origin_server_ts"] = json!(ruma::MilliSecondsSinceUnixEpoch::now());
    let (join_id, join) = fake.seal(&fake.key, join);
    // A send_join under another event id is refused.
    let (status, _) = fake
        .call(
            addr,
            &here,
            "PUT",
            &format!(
                "/_matrix/federation/v2/send_join/{}/{}",
                enc(&room),
                enc("$other")
            ),
            Some(join.clone()),
        )
        .await;
    assert_eq!(status, 400);
    let (status, answer) = fake
        .call(
            addr,
            &here,
            "PUT",
            &format!(
                "/_matrix/federation/v2/send_join/{}/{}",
                enc(&room),
                enc(&join_id)
            ),
            Some(join.clone()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
    let (status, _) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&mallory)
        ))
        .await;
    assert_eq!(status, 200, "Mallory is joined");

    // Events on top of the join.
    let mut depth = template["event"]["depth"].as_u64().unwrap();
    let power = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
            enc(&room)
        ))
        .await
        .1;
    let state_ids = |kind: &str| -> String {
        answer["state"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind)
            .map(|e| {
                let object: CanonicalJsonObject = serde_json::from_value(e.clone()).unwrap();
                format!(
                    "${}",
                    reference_hash(&object, &RoomVersionRules::V11).unwrap()
                )
            })
            .unwrap()
    };
    let auth_events = json!([
        state_ids("m.room.create"),
        state_ids("m.room.power_levels"),
        join_id
    ]);
    let mut event = |kind: &str, sender: &str, content: Value, state_key: Option<&str>| {
        depth += 1;
        let mut e = json!({
            "room_id": room, "sender": sender, "type": kind, "content": content,
            "origin_server_ts": ruma::MilliSecondsSinceUnixEpoch::now(),
            "prev_events": [join_id], "auth_events": auth_events, "depth": depth,
        });
        if let Some(key) = state_key {
            e["state_key"] = json!(key);
        }
        e
    };
    let good = event(
        "m.room.message",
        &mallory,
        json!({"msgtype": "m.text", "body": "hola"}),
        None,
    );
    let (good_id, good) = fake.seal(&fake.key, good);
    let tampered = event(
        "m.room.message",
        &mallory,
        json!({"msgtype": "m.text", "body": "original"}),
        None,
    );
    let (tampered_id, mut tampered) = fake.seal(&fake.key, tampered);
    tampered["content"]["body"] = json!("changed after signing");
    let other_key =
        Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "fake".to_owned()).unwrap();
    let forged = event(
        "m.room.message",
        &mallory,
        json!({"msgtype": "m.text", "body": "forged"}),
        None,
    );
    let (forged_id, forged) = fake.seal(&other_key, forged);
    let impersonated = event(
        "m.room.message",
        &alice_id,
        json!({"msgtype": "m.text", "body": "I am Alice"}),
        None,
    );
    let (impersonated_id, impersonated) = fake.seal(&fake.key, impersonated);
    let mut levels = power.clone();
    levels["users"][&mallory] = json!(100);
    let takeover = event("m.room.power_levels", &mallory, levels, Some(""));
    let (takeover_id, takeover) = fake.seal(&fake.key, takeover);
    // The deepest depth JSON allows: the room's next events must still be made.
    let mut deep = event(
        "m.room.message",
        &mallory,
        json!({"msgtype": "m.text", "body": "deep"}),
        None,
    );
    deep["depth"] = json!(9_007_199_254_740_991u64);
    let (_, deep) = fake.seal(&fake.key, deep);

    let txn = json!({
        "origin": fake.name,
        "origin_server_ts": ruma::MilliSecondsSinceUnixEpoch::now(),
        "pdus": [good, tampered, forged, impersonated, takeover, deep],
        "edus": [{ "edu_type": "m.typing", "content": { "room_id": room, "user_id": alice_id, "typing": true } }],
    });
    let (status, result) = fake
        .call(
            addr,
            &here,
            "PUT",
            "/_matrix/federation/v1/send/t1",
            Some(txn),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    let pdus = &result["pdus"];
    assert_eq!(pdus[&good_id], json!({}), "{result}");
    assert_eq!(pdus[&tampered_id], json!({}), "{result}");
    assert!(pdus[&forged_id]["error"].is_string(), "{result}");
    assert!(pdus[&impersonated_id]["error"].is_string(), "{result}");

    // What Alice sees: the good message, the tampered one emptied, nothing else.
    let event_of = |id: &str| format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id));
    let (status, seen) = alice.get(&event_of(&good_id)).await;
    assert_eq!(
        (status, &seen["content"]["body"]),
        (200, &json!("hola")),
        "{seen}"
    );
    let (status, seen) = alice.get(&event_of(&tampered_id)).await;
    assert_eq!(
        (status, &seen["content"]),
        (200, &json!({})),
        "kept redacted: {seen}"
    );
    for id in [&forged_id, &impersonated_id, &takeover_id] {
        let (status, seen) = alice.get(&event_of(id)).await;
        assert_eq!(status, 404, "{id}: {seen}");
    }
    let (_, now) = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
            enc(&room)
        ))
        .await;
    assert_eq!(now, power, "the power levels are unchanged");
    let after = alice.send_text(&room, "after", "still writable").await;
    assert!(after.starts_with('$'), "{after}");
    let sync = alice.sync(None, 0).await;
    let typing = &sync["rooms"]["join"][&room]["ephemeral"]["events"];
    assert!(
        !typing.to_string().contains(&alice_id),
        "no typing in Alice's name: {typing}"
    );

    // Oversized transactions and reads of a room the server is not in are refused.
    let many: Vec<Value> = (0..51).map(|_| json!({})).collect();
    fake.refused(
        (addr, &here),
        ("PUT", "/_matrix/federation/v1/send/t2"),
        Some(json!({ "origin": fake.name, "pdus": many, "edus": [] })),
        (400, "M_BAD_JSON"),
    )
    .await;
    fake.refused(
        (addr, &here),
        (
            "GET",
            &format!(
                "/_matrix/federation/v1/state_ids/{}?event_id={}",
                enc(&private),
                enc(&good_id)
            ),
        ),
        None,
        (403, "M_FORBIDDEN"),
    )
    .await;
    fake.refused(
        (addr, &here),
        (
            "POST",
            &format!(
                "/_matrix/federation/v1/get_missing_events/{}",
                enc(&private)
            ),
        ),
        Some(json!({ "latest_events": [good_id] })),
        (403, "M_FORBIDDEN"),
    )
    .await;
    charla.stop().await;
}
