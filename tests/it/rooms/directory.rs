//! Aliases, the canonical alias, and the public room directory.

use super::*;

#[tokio::test]
async fn alias_create_get_delete() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    let other = alice.create_room(json!({})).await;
    let alias = enc("#soporte:localhost");
    let path = format!("{V3}/directory/room/{alias}");

    let (status, body) = alice.put(&path, json!({ "room_id": room })).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = bob.get(&path).await;
    assert_eq!(
        (status, body),
        (200, json!({ "room_id": room, "servers": ["localhost"] }))
    );
    let (status, body) = alice.put(&path, json!({ "room_id": other })).await;
    assert_error(status, &body, 409, "M_UNKNOWN");
    assert_eq!(bob.get(&path).await.1["room_id"], room.as_str());
    let (_, aliases) = alice.get(&room_path(&room, "aliases")).await;
    assert_eq!(aliases, json!({ "aliases": ["#soporte:localhost"] }));

    // An alias on another server is refused.
    let (status, body) = alice
        .put(
            &format!("{V3}/directory/room/{}", enc("#x:elsewhere.org")),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Bob, joined without power, cannot delete Alice's alias.
    assert_eq!(bob.join(&room).await.0, 200);
    let (status, body) = bob.delete(&path, json!({})).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    let (status, body) = alice.delete(&path, json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = bob.get(&path).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    let (status, body) = alice.delete(&path, json!({})).await;
    assert_error(status, &body, 404, "M_NOT_FOUND");
    // Freed: it can point elsewhere now.
    let (status, _) = alice.put(&path, json!({ "room_id": other })).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn public_room_directory_pagination_and_search() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let names = [
        "Ventas",
        "Soporte técnico",
        "Facturación",
        "Soporte VIP",
        "General",
    ];
    let mut all = Vec::new();
    for name in names {
        all.push(
            alice
                .create_room(json!({ "visibility": "public", "name": name, "topic": format!("Sala {name}") }))
                .await,
        );
    }
    all.sort();

    // GET with limit and since.
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("{V3}/publicRooms?limit=2");
        if let Some(t) = &since {
            path.push_str(&format!("&since={}", enc(t)));
        }
        let (status, page) = s.client().get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let chunk = page["chunk"].as_array().unwrap();
        assert!(chunk.len() <= 2);
        assert_eq!(page["total_room_count_estimate"], 5);
        if pages > 1 {
            assert!(page["prev_batch"].is_string(), "{page}");
        }
        seen.extend(
            chunk
                .iter()
                .map(|r| r["room_id"].as_str().unwrap().to_owned()),
        );
        match page["next_batch"].as_str() {
            Some(n) => since = Some(n.to_owned()),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, all, "every room exactly once");

    // POST with a search term, paginated as well.
    let (status, page) = alice
        .post(
            &format!("{V3}/publicRooms"),
            json!({ "limit": 1, "filter": { "generic_search_term": "soporte" } }),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let first = page["chunk"].as_array().unwrap().clone();
    assert_eq!(first.len(), 1);
    let next = page["next_batch"]
        .as_str()
        .expect("a second match")
        .to_owned();
    let (_, page) = alice
        .post(
            &format!("{V3}/publicRooms"),
            json!({ "limit": 1, "since": next, "filter": { "generic_search_term": "soporte" } }),
        )
        .await;
    let second = page["chunk"].as_array().unwrap().clone();
    assert_eq!(second.len(), 1);
    assert!(page.get("next_batch").is_none(), "{page}");
    let mut found: Vec<&str> = first
        .iter()
        .chain(second.iter())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    found.sort();
    assert_eq!(found, vec!["Soporte VIP", "Soporte técnico"]);
    // The topic is searched too.
    let (_, page) = alice
        .post(
            &format!("{V3}/publicRooms"),
            json!({ "filter": { "generic_search_term": "sala general" } }),
        )
        .await;
    let names: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["General"]);
    let (_, page) = alice
        .post(
            &format!("{V3}/publicRooms"),
            json!({ "filter": { "generic_search_term": "nothing matches" } }),
        )
        .await;
    assert_eq!(page["chunk"], json!([]));

    // Unpublishing removes a room.
    let (status, _) = alice
        .put(
            &format!("{V3}/directory/list/room/{}", enc(&all[0])),
            json!({ "visibility": "private" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, page) = s.client().get(&format!("{V3}/publicRooms")).await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn canonical_alias_must_point_to_the_room() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let other = alice
        .create_room(json!({ "room_alias_name": "other" }))
        .await;
    let path = format!("{V3}/rooms/{}/state/m.room.canonical_alias", enc(&room));
    // Unknown alias, and an alias of another room: refused, and nothing changes.
    let (status, body) = alice
        .put(&path, json!({ "alias": "#nowhere:localhost" }))
        .await;
    assert_error(status, &body, 400, "M_BAD_ALIAS");
    let (status, body) = alice
        .put(&path, json!({ "alias": "#other:localhost" }))
        .await;
    assert_error(status, &body, 400, "M_BAD_ALIAS");
    assert_eq!(alice.get(&path).await.0, 404);
    // An alias of this room is accepted.
    let (status, _) = alice
        .put(
            &format!("{V3}/directory/room/{}", enc("#mine:localhost")),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = alice
        .put(&path, json!({ "alias": "#mine:localhost" }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        alice.get(&path).await.1,
        json!({ "alias": "#mine:localhost" })
    );
    assert_ne!(room, other);
}
