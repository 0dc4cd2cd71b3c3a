//! The support API's full text: `q` on the conversation listing with every other filter, and
//! `GET /api/support/v1/search`, for staff within what each sees.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{admin, indexed};
use crate::admin::AdminCli;
use crate::common::{Client, assert_error, enc};
use crate::support::{API, Desk, desk, list};

/// Three conversations the boss opened with buyer and seller; the buyer wrote in each.
/// The third is bob's, the others wait in the queue (agents see their own and the queue).
async fn conversations(d: &Desk) -> (Client, [String; 3]) {
    let buyer = d.s.user("buyer").await;
    d.s.user("seller").await;
    let mut rooms = Vec::new();
    for (name, labels, text) in [
        ("Ana Pérez", json!(["vip"]), "mi batería está rota"),
        ("Luis Gómez", json!([]), "la pantalla parpadea"),
        (
            "Marta Ruiz",
            json!(["refund"]),
            "batería hinchada, quiero un reembolso",
        ),
    ] {
        let (status, conv) = d
            .boss
            .post(
                &format!("{API}/conversations"),
                json!({
                    "participants": ["@buyer:localhost", "@seller:localhost"],
                    "labels": labels,
                    "contact": { "name": name, "phone": "+34 600 000 000" },
                }),
            )
            .await;
        assert_eq!(status, 200, "{conv}");
        let room = conv["room_id"].as_str().unwrap().to_owned();
        assert_eq!(buyer.join(&room).await.0, 200);
        buyer
            .send_text(&room, &format!("t{}", rooms.len()), text)
            .await;
        rooms.push(room);
    }
    let (status, body) = d
        .boss
        .post(
            &format!("{API}/conversations/{}/assign", enc(&rooms[2])),
            json!({ "user_id": "@bob:localhost" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    indexed(&d.s).await;
    (buyer, rooms.try_into().unwrap())
}

async fn found(c: &Client, query: &str) -> Value {
    let (status, body) = c.get(&format!("{API}/search?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn rooms_of(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn q_narrows_the_listing_with_every_other_filter() {
    let d = desk().await;
    let (_, [r0, r1, r2]) = conversations(&d).await;
    // Most recently active first, as the listing always is.
    assert_eq!(list(&d.boss, "q=bateria").await, [r2.as_str(), r0.as_str()]);
    assert_eq!(list(&d.boss, "q=BATERÍA&label=refund").await, [r2.as_str()]);
    assert_eq!(
        list(&d.boss, "q=bateria&assignee=none").await,
        [r0.as_str()]
    );
    assert_eq!(list(&d.boss, "q=pantalla&status=open").await, [r1.as_str()]);
    assert_eq!(
        list(&d.boss, "q=pantalla&status=closed").await,
        Vec::<String>::new()
    );
    // The conversation's own document: its contact and labels.
    assert_eq!(list(&d.boss, "q=perez").await, [r0.as_str()]);
    assert_eq!(list(&d.boss, "q=vip").await, [r0.as_str()]);
    // Agents: their own and the queue.
    assert_eq!(list(&d.ana, "q=bateria").await, [r0.as_str()]);
    assert_eq!(list(&d.bob, "q=bateria").await, [r2.as_str(), r0.as_str()]);
    // A label set later is found, the conversation's document follows the desk's changes.
    let (status, body) = d
        .boss
        .patch(
            &format!("{API}/conversations/{}", enc(&r1)),
            json!({ "add_labels": ["garantia"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    indexed(&d.s).await;
    assert_eq!(list(&d.boss, "q=garantia").await, [r1.as_str()]);
    let (status, body) = d
        .boss
        .patch(
            &format!("{API}/conversations/{}", enc(&r1)),
            json!({ "remove_labels": ["garantia"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    indexed(&d.s).await;
    assert_eq!(list(&d.boss, "q=garantia").await, Vec::<String>::new());
    // Bad input.
    let (status, body) = d.boss.get(&format!("{API}/conversations?q=")).await;
    assert_error(status, &body, 400, "M_INVALID_PARAM");
    assert_eq!(body["field"], "q");
}

#[tokio::test]
async fn search_finds_messages_with_their_conversation_within_what_staff_see() {
    let d = desk().await;
    let (buyer, [r0, _, r2]) = conversations(&d).await;
    let body = found(&d.boss, "q=bateria").await;
    assert_eq!(rooms_of(&body), [r2.as_str(), r0.as_str()], "newest first");
    let first = &body["results"][0];
    assert_eq!(first["body"], "batería hinchada, quiero un reembolso");
    assert_eq!(first["sender"], "@buyer:localhost");
    assert!(first["event_id"].as_str().unwrap().starts_with('$'));
    assert!(first["origin_server_ts"].is_u64());
    assert_eq!(first["conversation"]["room_id"], r2.as_str());
    assert_eq!(first["conversation"]["assignee"], "@bob:localhost");
    assert_eq!(first["conversation"]["status"], "open");
    assert_eq!(first["conversation"]["contact"]["name"], "Marta Ruiz");
    assert_eq!(body["next"], Value::Null);
    // Filters of the listing apply to the conversations.
    assert_eq!(
        rooms_of(&found(&d.boss, "q=bateria&label=vip").await),
        [r0.as_str()]
    );
    // Agents: ana sees the queue, not bob's conversation.
    assert_eq!(rooms_of(&found(&d.ana, "q=bateria").await), [r0.as_str()]);
    assert_eq!(rooms_of(&found(&d.bob, "q=hinchada").await), [r2.as_str()]);
    assert_eq!(
        rooms_of(&found(&d.ana, "q=hinchada").await),
        Vec::<String>::new()
    );
    let (status, body) = d
        .ana
        .get(&format!("{API}/search?q=bateria&assignee=@bob:localhost"))
        .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    // Customers are not staff.
    let (status, body) = buyer.get(&format!("{API}/search?q=bateria")).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
    for query in [
        "",
        "q=",
        "q=x&order=sideways",
        "q=x&from=nonsense",
        "q=x&limit=0",
    ] {
        let (status, body) = d.boss.get(&format!("{API}/search?{query}")).await;
        assert_error(status, &body, 400, "M_INVALID_PARAM");
    }
}

#[tokio::test]
async fn search_pages_follow_next_to_the_end() {
    let d = desk().await;
    let (buyer, [r0, ..]) = conversations(&d).await;
    for i in 0..7 {
        buyer
            .send_text(&r0, &format!("more{i}"), &format!("batería número {i}"))
            .await;
    }
    indexed(&d.s).await;
    for order in ["recent", "rank"] {
        let mut seen = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let query = match &from {
                Some(token) => format!("q=bateria&limit=3&order={order}&from={token}"),
                None => format!("q=bateria&limit=3&order={order}"),
            };
            let body = found(&d.boss, &query).await;
            for r in body["results"].as_array().unwrap() {
                seen.push(r["event_id"].as_str().unwrap().to_owned());
            }
            match body["next"].as_str() {
                Some(next) => from = Some(next.to_owned()),
                None => break,
            }
            assert!(seen.len() < 30, "pages never end");
        }
        assert_eq!(seen.len(), 9, "{order}: {seen:?}");
        assert_eq!(
            seen.iter().collect::<HashSet<_>>().len(),
            9,
            "{order}: a repeat"
        );
    }
}

#[tokio::test]
async fn a_deleted_room_leaves_the_index() {
    let d = desk().await;
    let (_, [r0, _, r2]) = conversations(&d).await;
    let before = admin(&d.s).get("/_charla/admin/v1/search").await.1["documents"]
        .as_u64()
        .unwrap();
    let cli = AdminCli::of(&d.s);
    cli.run(&["room", "delete", &r2, "--json"]).await.json();
    // The room's documents go with the indexer's next commit.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, now) = admin(&d.s).get("/_charla/admin/v1/search").await;
        if now["documents"].as_u64().unwrap() < before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    indexed(&d.s).await;
    assert_eq!(rooms_of(&found(&d.boss, "q=bateria").await), [r0.as_str()]);
    assert_eq!(list(&d.boss, "q=hinchada").await, Vec::<String>::new());
}
