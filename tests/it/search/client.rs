//! `POST /_matrix/client/v3/search` against the spec and Synapse's answers: exact result sets
//! for crafted corpora, orders, pages, groups, context, errors, edits and redactions.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{bodies, indexed, room_events, search, search_page};
use crate::common::{Client, TestServer, V3, assert_error, enc};

/// Alice's room with Bob in it, and a corpus sent in this order.
async fn corpus(s: &TestServer, texts: &[&str]) -> (Client, Client, String, Vec<String>) {
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    assert_eq!(bob.join(&room).await.0, 200);
    let mut ids = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        ids.push(alice.send_text(&room, &format!("c{i}"), text).await);
    }
    indexed(s).await;
    (alice, bob, room, ids)
}

fn event_ids(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["result"]["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn finds_words_without_accents_or_case() {
    let s = super::server().await;
    let (alice, _, room, ids) = corpus(&s, &["La BATERÍA está rota", "El cargador funciona"]).await;
    for term in ["bateria", "batería", "BATERIA", "Batería"] {
        let found = room_events(&alice, json!({ "search_term": term })).await;
        assert_eq!(bodies(&found), ["La BATERÍA está rota"], "{term}: {found}");
        assert_eq!(found["count"], 1);
        // The words as typed (as Synapse answers), then as the results wrote them.
        assert_eq!(found["highlights"], json!([term, "BATERÍA"]));
        let result = &found["results"][0];
        assert_eq!(result["result"]["event_id"], ids[0].as_str());
        assert_eq!(result["result"]["room_id"], room.as_str());
        assert_eq!(result["result"]["sender"], "@alice:localhost");
        assert!(result["rank"].as_f64().unwrap() > 0.0, "{result}");
        assert_eq!(result["context"], json!({}), "no context unless asked");
    }
    let none = room_events(&alice, json!({ "search_term": "teclado" })).await;
    assert_eq!(none["results"], json!([]));
    assert_eq!(none["count"], 0);
    assert_eq!(none["highlights"], json!(["teclado"]));
    assert!(none.get("next_batch").is_none());
}

#[tokio::test]
async fn stems_and_whole_tokens_find_what_agents_type() {
    let s = super::server().await;
    let texts = [
        "Las baterías llegaron dañadas",
        "My battery keeps running out",
        "Pedido ORD-2024-0042 sin entregar",
        "Escríbeme a ana.garcia@example.com por favor",
        "Mi teléfono es +34 600-123-456",
        "東京に行きます",
        "Genial 👍🏽 gracias",
    ];
    let (alice, ..) = corpus(&s, &texts).await;
    let cases: [(&str, &[usize]); 12] = [
        ("batería", &[0]),
        ("run", &[1]),
        ("runs", &[1]),
        ("ORD-2024-0042", &[2]),
        ("0042", &[2]),
        ("ana.garcia@example.com", &[3]),
        ("garcia", &[3]),
        ("600123456", &[4]),
        ("600-123-456", &[4]),
        ("東京", &[5]),
        ("👍", &[6]),
        ("bat", &[0, 1]),
    ];
    for (term, want) in cases {
        let found = room_events(&alice, json!({ "search_term": term, "order_by": "recent" })).await;
        let mut want: Vec<&str> = want.iter().map(|i| texts[*i]).collect();
        want.reverse();
        assert_eq!(bodies(&found), want, "{term}: {found}");
    }
    // Words are ANDed.
    let found = room_events(&alice, json!({ "search_term": "pedido entregar" })).await;
    assert_eq!(bodies(&found), [texts[2]]);
    let found = room_events(&alice, json!({ "search_term": "pedido battery" })).await;
    assert_eq!(found["count"], 0);
}

#[tokio::test]
async fn rank_puts_the_best_match_first_and_recent_the_newest() {
    let s = super::server().await;
    let texts = [
        "reembolso",
        "quiero un reembolso del reembolso, reembolso ya",
        "hola",
        "un reembolso por favor para el pedido de ayer que llegó mal",
    ];
    let (alice, ..) = corpus(&s, &texts).await;
    let ranked = room_events(&alice, json!({ "search_term": "reembolso" })).await;
    let got = bodies(&ranked);
    assert_eq!(got.len(), 3, "{ranked}");
    assert_eq!(
        got[2], texts[3],
        "the longest text with one mention ranks last: {ranked}"
    );
    let ranks: Vec<f64> = ranked["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_f64().unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    let recent = room_events(
        &alice,
        json!({ "search_term": "reembolso", "order_by": "recent" }),
    )
    .await;
    assert_eq!(bodies(&recent), [texts[3], texts[1], texts[0]]);
    assert_eq!(recent["count"], 3);
}

/// Follows `next_batch` to the end; every page's event ids.
async fn all_pages(c: &Client, criteria: Value) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut batch: Option<String> = None;
    loop {
        let (status, body) = search_page(c, criteria.clone(), batch.as_deref()).await;
        assert_eq!(status, 200, "{body}");
        let found = &body["search_categories"]["room_events"];
        assert_eq!(
            found["count"], 23,
            "count is the whole result set's on every page"
        );
        pages.push(event_ids(found));
        match found["next_batch"].as_str() {
            Some(next) => batch = Some(next.to_owned()),
            None => return pages,
        }
        assert!(pages.len() < 50, "pagination does not end");
    }
}

#[tokio::test]
async fn next_batch_pages_never_repeat_or_skip_in_either_order() {
    let s = super::server().await;
    let texts: Vec<String> = (0..23)
        .map(|i| format!("ticket {i} {}", "urgente ".repeat(i % 4 + 1)))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (alice, _, _, ids) = corpus(&s, &refs).await;
    for order in ["recent", "rank"] {
        let criteria =
            json!({ "search_term": "urgente", "order_by": order, "filter": { "limit": 5 } });
        let pages = all_pages(&alice, criteria.clone()).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            [5, 5, 5, 5, 3],
            "{order}"
        );
        let flat: Vec<String> = pages.concat();
        let distinct: HashSet<&String> = flat.iter().collect();
        assert_eq!(distinct.len(), 23, "{order}: a hit repeated");
        assert_eq!(distinct, ids.iter().collect(), "{order}: a hit skipped");
        // One page of everything gives the same order.
        let whole = room_events(
            &alice,
            json!({ "search_term": "urgente", "order_by": order, "filter": { "limit": 50 } }),
        )
        .await;
        assert_eq!(event_ids(&whole), flat, "{order}");
        if order == "recent" {
            let mut newest_first = ids.clone();
            newest_first.reverse();
            assert_eq!(flat, newest_first);
        }
    }
    // Messages arriving between pages do not shift the recent order's later pages.
    let first = room_events(
        &alice,
        json!({ "search_term": "urgente", "order_by": "recent", "filter": { "limit": 5 } }),
    )
    .await;
    let room = first["results"][0]["result"]["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.send_text(&room, "late", "urgente otra vez").await;
    indexed(&s).await;
    let (_, second) = search_page(
        &alice,
        json!({ "search_term": "urgente", "order_by": "recent", "filter": { "limit": 5 } }),
        first["next_batch"].as_str(),
    )
    .await;
    let second = &second["search_categories"]["room_events"];
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(event_ids(second), newest_first[5..10]);
}

#[tokio::test]
async fn keys_and_filters_narrow_the_search() {
    let s = super::server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let one = alice
        .create_room(json!({ "preset": "public_chat", "name": "Devoluciones", "topic": "devoluciones y garantía" }))
        .await;
    let two = alice.create_room(json!({ "preset": "public_chat" })).await;
    for room in [&one, &two] {
        assert_eq!(bob.join(room).await.0, 200);
    }
    alice
        .send_text(&one, "a1", "devoluciones de alice en uno")
        .await;
    bob.send_text(&one, "b1", "devoluciones de bob en uno")
        .await;
    alice
        .send_text(&two, "a2", "devoluciones de alice en dos")
        .await;
    indexed(&s).await;
    let term = |extra: Value| {
        let mut c = json!({ "search_term": "devoluciones", "order_by": "recent" });
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let found = room_events(&bob, term(json!({}))).await;
    assert_eq!(
        found["count"], 5,
        "three messages, a name and a topic: {found}"
    );
    let found = room_events(&bob, term(json!({ "keys": ["content.name"] }))).await;
    assert_eq!(found["count"], 1);
    assert_eq!(found["results"][0]["result"]["type"], "m.room.name");
    let found = room_events(&bob, term(json!({ "keys": ["content.topic"] }))).await;
    assert_eq!(
        found["results"][0]["result"]["content"]["topic"],
        "devoluciones y garantía"
    );
    let found = room_events(&bob, term(json!({ "keys": ["content.body"] }))).await;
    assert_eq!(
        bodies(&found),
        [
            "devoluciones de alice en dos",
            "devoluciones de bob en uno",
            "devoluciones de alice en uno"
        ]
    );
    let found = room_events(
        &bob,
        term(json!({ "keys": ["content.body"], "filter": { "rooms": [two] } })),
    )
    .await;
    assert_eq!(bodies(&found), ["devoluciones de alice en dos"]);
    let found = room_events(
        &bob,
        term(json!({ "keys": ["content.body"], "filter": { "not_rooms": [two] } })),
    )
    .await;
    assert_eq!(
        bodies(&found),
        ["devoluciones de bob en uno", "devoluciones de alice en uno"]
    );
    let found = room_events(
        &bob,
        term(json!({ "filter": { "senders": ["@bob:localhost"] } })),
    )
    .await;
    assert_eq!(bodies(&found), ["devoluciones de bob en uno"]);
    let found = room_events(
        &bob,
        term(json!({ "keys": ["content.body"], "filter": { "not_senders": ["@bob:localhost"] } })),
    )
    .await;
    assert_eq!(
        bodies(&found),
        [
            "devoluciones de alice en dos",
            "devoluciones de alice en uno"
        ]
    );
    let found = room_events(
        &bob,
        term(json!({ "filter": { "types": ["m.room.message"] } })),
    )
    .await;
    assert_eq!(found["count"], 3);
    let found = room_events(
        &bob,
        term(json!({ "filter": { "not_types": ["m.room.*"] } })),
    )
    .await;
    assert_eq!(found["count"], 0);
}

#[tokio::test]
async fn groups_context_profiles_and_state_come_as_synapse_gives_them() {
    let s = super::server().await;
    let (alice, bob, room, ids) = corpus(&s, &["antes", "el envío llegó tarde", "después"]).await;
    let (status, _) = bob
        .put(
            &format!("{V3}/profile/@bob:localhost/displayname"),
            json!({ "displayname": "Roberto" }),
        )
        .await;
    assert_eq!(status, 200);
    let reply = bob.send_text(&room, "r", "otro envío perdido").await;
    indexed(&s).await;
    let found = room_events(
        &alice,
        json!({
            "search_term": "envío",
            "order_by": "recent",
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
            "include_state": true,
        }),
    )
    .await;
    assert_eq!(event_ids(&found), [reply.as_str(), ids[1].as_str()]);
    let older = &found["results"][1]["context"];
    assert_eq!(older["events_before"][0]["content"]["body"], "antes");
    assert_eq!(older["events_after"][0]["content"]["body"], "después");
    assert!(
        older["start"].is_string() && older["end"].is_string(),
        "{older}"
    );
    assert_eq!(
        older["profile_info"]["@alice:localhost"],
        json!({ "displayname": "alice", "avatar_url": null })
    );
    let newest = &found["results"][0]["context"];
    assert_eq!(
        newest["profile_info"]["@bob:localhost"]["displayname"],
        "Roberto"
    );
    assert_eq!(newest["events_after"], json!([]));
    let groups = &found["groups"];
    assert_eq!(
        groups["room_id"][room.as_str()]["results"],
        json!([reply, ids[1]])
    );
    assert_eq!(groups["room_id"][room.as_str()]["order"], 1);
    assert_eq!(
        groups["sender"]["@bob:localhost"]["results"],
        json!([reply])
    );
    assert_eq!(
        groups["sender"]["@alice:localhost"]["results"],
        json!([ids[1]])
    );
    let state = found["state"][room.as_str()].as_array().expect("state");
    assert!(
        state.iter().any(|e| e["type"] == "m.room.create"),
        "the room's current state: {state:?}"
    );
    assert!(state.iter().all(|e| e["state_key"].is_string()));
}

#[tokio::test]
async fn a_group_token_pages_within_its_group() {
    let s = super::server().await;
    let alice = s.user("alice").await;
    let one = alice.create_room(json!({})).await;
    let two = alice.create_room(json!({})).await;
    let mut in_one = Vec::new();
    for i in 0..4 {
        in_one.push(
            alice
                .send_text(&one, &format!("o{i}"), "factura pendiente")
                .await,
        );
        alice
            .send_text(&two, &format!("t{i}"), "factura pagada")
            .await;
    }
    indexed(&s).await;
    let criteria = json!({
        "search_term": "factura",
        "order_by": "recent",
        "filter": { "limit": 3 },
        "groupings": { "group_by": [{ "key": "room_id" }] },
    });
    let first = room_events(&alice, criteria.clone()).await;
    let token = first["groups"]["room_id"][one.as_str()]["next_batch"]
        .as_str()
        .expect("a group with more has its own next_batch")
        .to_owned();
    let (status, body) = search_page(&alice, criteria, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let page = &body["search_categories"]["room_events"];
    let rooms: HashSet<&str> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, HashSet::from([one.as_str()]), "{page}");
}

#[tokio::test]
async fn edits_and_redactions_change_what_is_found() {
    let s = super::server().await;
    let (alice, bob, room, ids) = corpus(&s, &["el paquete llegó roto", "otro mensaje"]).await;
    let edit_id = alice
        .send_message(
            &room,
            "e1",
            json!({
                "msgtype": "m.text",
                "body": "* el paquete llegó abollado",
                "m.new_content": { "msgtype": "m.text", "body": "el paquete llegó abollado" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": ids[0] },
            }),
        )
        .await;
    // An edit by someone else is not a valid replacement: it changes nothing.
    bob.send_message(
        &room,
        "e2",
        json!({
            "msgtype": "m.text",
            "body": "* spam",
            "m.new_content": { "msgtype": "m.text", "body": "spam" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": ids[0] },
        }),
    )
    .await;
    indexed(&s).await;
    let found = room_events(&alice, json!({ "search_term": "abollado" })).await;
    assert_eq!(
        event_ids(&found),
        [ids[0].as_str()],
        "the new text finds the original event"
    );
    assert_eq!(found["highlights"], json!(["abollado"]));
    assert_eq!(
        room_events(&alice, json!({ "search_term": "roto" })).await["count"],
        0
    );
    assert_eq!(
        room_events(&alice, json!({ "search_term": "spam" })).await["count"],
        0
    );

    // Redacting the edit brings the original text back.
    let (status, body) = alice
        .put(
            &format!("{V3}/rooms/{}/redact/{}/x1", enc(&room), enc(&edit_id)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    indexed(&s).await;
    let found = room_events(&alice, json!({ "search_term": "roto" })).await;
    assert_eq!(event_ids(&found), [ids[0].as_str()]);
    assert_eq!(
        room_events(&alice, json!({ "search_term": "abollado" })).await["count"],
        0
    );

    // Redacting the message removes it.
    let (status, _) = alice
        .put(
            &format!("{V3}/rooms/{}/redact/{}/x2", enc(&room), enc(&ids[0])),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    indexed(&s).await;
    assert_eq!(
        room_events(&alice, json!({ "search_term": "paquete" })).await["count"],
        0
    );
}

#[tokio::test]
async fn encrypted_rooms_answer_nothing_and_no_error() {
    let s = super::server().await;
    let alice = s.user("alice").await;
    let room = alice
        .create_room(json!({
            "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
        }))
        .await;
    let (status, _) = alice
        .put(
            &format!("{V3}/rooms/{}/send/m.room.encrypted/t1", enc(&room)),
            json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnB4ZmFjdHVyYQ", "sender_key": "k", "session_id": "s", "device_id": "D" }),
        )
        .await;
    assert_eq!(status, 200);
    indexed(&s).await;
    for term in ["factura", "AwgAEnB4ZmFjdHVyYQ", "megolm"] {
        let found = room_events(&alice, json!({ "search_term": term })).await;
        assert_eq!(found["count"], 0, "{term}: {found}");
        assert_eq!(found["results"], json!([]));
    }
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_right_code() {
    let s = super::server().await;
    let alice = s.user("alice").await;
    // A key the server does not know matches nothing, as in Synapse.
    let found = room_events(
        &alice,
        json!({ "search_term": "x", "keys": ["content.foo"] }),
    )
    .await;
    assert_eq!(found["count"], 0);
    let (status, body) = search(
        &alice,
        json!({ "search_term": "x", "order_by": "nonsense" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = search(
        &alice,
        json!({ "search_term": "x", "groupings": { "group_by": [{ "key": "foo" }] } }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = search_page(&alice, json!({ "search_term": "x" }), Some("garbage")).await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let (status, body) = search(&alice, json!({ "search_term": "x".repeat(2000) })).await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    let (status, body) = search(&alice, json!({})).await;
    assert_error(status, &body, 400, "M_BAD_JSON");
    // No category: refused, as Synapse does.
    let (status, body) = alice
        .post(&format!("{V3}/search"), json!({ "search_categories": {} }))
        .await;
    assert_error(status, &body, 400, "M_UNKNOWN");
    let (status, body) = s
        .client()
        .post(&format!("{V3}/search"), json!({ "search_categories": {} }))
        .await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN");
    // An empty search term finds nothing.
    let found = room_events(&alice, json!({ "search_term": "" })).await;
    assert_eq!(found["count"], 0);
}

#[tokio::test]
async fn exclusions_or_and_phrases_work_as_in_synapse() {
    let s = super::server().await;
    let texts = [
        "My battery died",
        "The battery is fine",
        "Out of coffee",
        "died the battery did",
    ];
    let (alice, ..) = corpus(&s, &texts).await;
    let recent = |term: &str| json!({ "search_term": term, "order_by": "recent" });
    let found = room_events(&alice, recent("battery -died")).await;
    assert_eq!(bodies(&found), [texts[1]]);
    let found = room_events(&alice, recent("coffee -battery")).await;
    assert_eq!(bodies(&found), [texts[2]]);
    let found = room_events(&alice, recent("coffee OR fine")).await;
    assert_eq!(bodies(&found), [texts[2], texts[1]]);
    let found = room_events(&alice, recent("\"battery died\"")).await;
    assert_eq!(bodies(&found), [texts[0]], "word order counts in a phrase");
    let found = room_events(&alice, recent("-battery")).await;
    assert_eq!(found["count"], 0, "only exclusions find nothing");
}

#[tokio::test]
async fn contains_url_keeps_files_or_leaves_them_out() {
    let s = super::server().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let text = alice.send_text(&room, "t", "factura de marzo").await;
    let file = alice
        .send_message(
            &room,
            "f",
            json!({ "msgtype": "m.file", "body": "factura-marzo.pdf", "url": "mxc://localhost/abc" }),
        )
        .await;
    indexed(&s).await;
    let with = |wanted: bool| json!({ "search_term": "factura", "order_by": "recent", "filter": { "contains_url": wanted } });
    assert_eq!(
        event_ids(&room_events(&alice, with(true)).await),
        [file.as_str()]
    );
    assert_eq!(
        event_ids(&room_events(&alice, with(false)).await),
        [text.as_str()]
    );
}

#[tokio::test]
async fn rank_pages_hold_while_new_messages_arrive() {
    let s = super::server().await;
    let texts: Vec<String> = (0..12)
        .map(|i| format!("garantía {}", "extendida ".repeat(i % 5)))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (alice, _, room, ids) = corpus(&s, &refs).await;
    let criteria = json!({ "search_term": "garantía", "filter": { "limit": 4 } });
    let whole = room_events(
        &alice,
        json!({ "search_term": "garantía", "filter": { "limit": 50 } }),
    )
    .await;
    let mut seen = Vec::new();
    let mut batch: Option<String> = None;
    for page in 0..3 {
        let (status, body) = search_page(&alice, criteria.clone(), batch.as_deref()).await;
        assert_eq!(status, 200, "{body}");
        let found = &body["search_categories"]["room_events"];
        seen.extend(event_ids(found));
        batch = found["next_batch"].as_str().map(str::to_owned);
        // Better matches than anything so far arrive between the pages.
        alice
            .send_text(&room, &format!("new{page}"), "garantía garantía garantía")
            .await;
        indexed(&s).await;
    }
    assert_eq!(batch, None, "three pages of four");
    assert_eq!(
        seen,
        event_ids(&whole),
        "the pages are the first answer's order"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>(), ids.iter().collect());
}

#[tokio::test]
async fn searches_are_rate_limited_per_user() {
    let s = TestServer::start_with("[limits]\nsearch_per_second = 0.01\nsearch_burst = 3\n").await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    for _ in 0..3 {
        assert_eq!(search(&alice, json!({ "search_term": "x" })).await.0, 200);
    }
    let (status, body) = search(&alice, json!({ "search_term": "x" })).await;
    assert_error(status, &body, 429, "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
    // Another user has a budget of their own.
    assert_eq!(search(&bob, json!({ "search_term": "x" })).await.0, 200);
}
