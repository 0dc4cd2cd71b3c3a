//! Filters and account data: stored filters, global and per-room account data.

use serde_json::json;

use crate::common::{TestServer, V3, assert_error, enc};

#[tokio::test]
async fn filters_round_trip_and_are_private() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let filter = json!({
        "event_fields": ["type", "content.body"],
        "event_format": "federation",
        "presence": { "not_types": ["*"] },
        "account_data": { "types": ["m.direct"] },
        "room": {
            "rooms": ["!a:localhost"],
            "include_leave": true,
            "timeline": { "limit": 5, "types": ["m.room.message"], "not_senders": ["@spam:localhost"] },
            "state": { "lazy_load_members": true },
        },
    });
    let me = enc("@alice:localhost");
    let (status, body) = alice
        .post(&format!("{V3}/user/{me}/filter"), filter.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["filter_id"].as_str().expect("filter_id").to_owned();
    let (status, got) = alice
        .get(&format!("{V3}/user/{me}/filter/{}", enc(&id)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, filter);

    // Bob can neither read Alice's filter nor create one in her name.
    let (status, body) = bob
        .get(&format!("{V3}/user/{me}/filter/{}", enc(&id)))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = bob.post(&format!("{V3}/user/{me}/filter"), json!({})).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    // Filter ids are per user: Bob's own lookup of the id finds nothing.
    let (status, body) = bob
        .get(&format!(
            "{V3}/user/{}/filter/{}",
            enc("@bob:localhost"),
            enc(&id)
        ))
        .await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice.get(&format!("{V3}/user/{me}/filter/nosuch")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");

    // A stored filter applies to /sync by id.
    let room = alice.create_room(json!({})).await;
    for i in 0..3 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let (status, body) = alice
        .post(
            &format!("{V3}/user/{me}/filter"),
            json!({ "room": { "timeline": { "limit": 2 } } }),
        )
        .await;
    assert_eq!(status, 200);
    let id = body["filter_id"].as_str().unwrap();
    let (status, sync) = alice.get(&format!("{V3}/sync?filter={}", enc(id))).await;
    assert_eq!(status, 200);
    let timeline = &sync["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["events"].as_array().unwrap().len(), 2);
    assert_eq!(timeline["limited"], true);
}

#[tokio::test]
async fn account_data_global_and_per_room() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({})).await;
    let me = enc("@alice:localhost");
    let global_path = |kind: &str| format!("{V3}/user/{me}/account_data/{kind}");
    let room_path = |kind: &str| format!("{V3}/user/{me}/rooms/{}/account_data/{kind}", enc(&room));

    let global = json!({ "theme": "dark", "nested": { "list": [1, 2, { "x": null }] } });
    let per_room = json!({ "tags": { "u.work": { "order": 0.5 } } });
    let (status, body) = alice
        .put(&global_path("org.example.settings"), global.clone())
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = alice
        .put(&room_path("org.example.room"), per_room.clone())
        .await;
    assert_eq!((status, body), (200, json!({})));

    let (status, got) = alice.get(&global_path("org.example.settings")).await;
    assert_eq!((status, got), (200, global.clone()));
    let (status, got) = alice.get(&room_path("org.example.room")).await;
    assert_eq!((status, got), (200, per_room.clone()));
    // Global and room data are separate namespaces.
    let (status, body) = alice.get(&global_path("org.example.room")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice.get(&room_path("org.example.settings")).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // Private to the user.
    let (status, body) = bob.get(&global_path("org.example.settings")).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = bob
        .put(&global_path("org.example.settings"), json!({}))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = bob.get(&room_path("org.example.room")).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");

    // Initial sync carries both.
    let sync = alice.sync(None, 0).await;
    let global_events = sync["account_data"]["events"].as_array().unwrap();
    assert!(
        global_events.contains(&json!({ "type": "org.example.settings", "content": global })),
        "{global_events:?}"
    );
    assert_eq!(
        sync["rooms"]["join"][&room]["account_data"]["events"],
        json!([{ "type": "org.example.room", "content": per_room }])
    );
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // A later incremental sync has only what changed: one new global entry.
    let (status, _) = alice
        .put(&global_path("org.example.other"), json!({ "n": 1 }))
        .await;
    assert_eq!(status, 200);
    let sync = alice.sync(Some(&since), 0).await;
    assert_eq!(
        sync["account_data"]["events"],
        json!([{ "type": "org.example.other", "content": { "n": 1 } }])
    );
    assert!(
        sync["rooms"]["join"].get(&room).is_none(),
        "nothing changed in the room: {sync}"
    );
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // Then only a room entry changes: it comes alone, in the room.
    let changed = json!({ "tags": {} });
    let (status, _) = alice
        .put(&room_path("org.example.room"), changed.clone())
        .await;
    assert_eq!(status, 200);
    let sync = alice.sync(Some(&since), 0).await;
    assert!(
        sync["account_data"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{sync}"
    );
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(
        joined["account_data"]["events"],
        json!([{ "type": "org.example.room", "content": changed }])
    );
    assert!(
        joined["timeline"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{joined}"
    );

    // An incremental sync with nothing new is empty of account data.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let sync = alice.sync(Some(&since), 0).await;
    assert!(
        sync["account_data"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{sync}"
    );
    assert!(
        sync["rooms"]["join"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{sync}"
    );
}

#[tokio::test]
async fn room_account_data_for_unknown_room_is_refused() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let path = format!(
        "{V3}/user/{}/rooms/{}/account_data/org.example.x",
        enc("@alice:localhost"),
        enc("!nosuch:localhost")
    );
    let (status, body) = alice.put(&path, json!({ "a": 1 })).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice
        .put(
            &format!(
                "{V3}/user/{}/rooms/not-a-room-id/account_data/org.example.x",
                enc("@alice:localhost")
            ),
            json!({ "a": 1 }),
        )
        .await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
}
