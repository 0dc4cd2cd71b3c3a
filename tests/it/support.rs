//! The support desk end to end: a real server, real clients over HTTP, the support bot.
//!
//! Effects of the bot are asynchronous (it is a stream consumer), so tests wait for them by
//! polling with a generous deadline; they never assert how long anything took.

use std::time::Duration;

use crate::common::{Client, TestServer, V3, assert_error, enc};
use serde_json::{Value, json};

pub(crate) const BOT: &str = "@support:localhost";
pub(crate) const API: &str = "/api/support/v1";
pub(crate) const HOURS: &str = "Atendemos de lunes a viernes de 9 a 18 h.";
pub(crate) const GREETING: &str = "Hola, ¿en qué podemos ayudarte?";

const DESK: &str = r#"
[support]
admins = ["@boss:localhost"]
greeting = "Hola, ¿en qué podemos ayudarte?"
customer_conversations_per_hour = 1
customer_conversation_burst = 2
[[support.agents]]
user = "@ana:localhost"
capacity = 1
[[support.agents]]
user = "@bob:localhost"
capacity = 5
[[support.faq]]
questions = ["¿Cuál es el horario?", "What are your opening hours?"]
answer = "Atendemos de lunes a viernes de 9 a 18 h."
[[support.faq]]
questions = ["¿Dónde está mi pedido?", "Where is my order?"]
keywords = ["tracking"]
answer = "Puedes seguir tu pedido en /orders."
[[support.templates]]
name = "thanks"
text = "Gracias {contact.name}, te atendió {agent.name}. {ticket}"
"#;

/// A server with the desk above: boss is an admin, ana (capacity 1) and bob (5) are agents; a
/// customer may open 2 conversations at once, then 1 an hour.
pub(crate) struct Desk {
    pub(crate) s: TestServer,
    pub(crate) boss: Client,
    pub(crate) ana: Client,
    pub(crate) bob: Client,
}

pub(crate) async fn desk() -> Desk {
    let s = TestServer::start_with(DESK).await;
    let boss = s.user("boss").await;
    let ana = s.user("ana").await;
    let bob = s.user("bob").await;
    Desk { s, boss, ana, bob }
}

/// Rewinds the bot's durable cursor to the beginning, as if it had crashed before saving any
/// progress, and restarts the server: the bot replays every event.
pub(crate) async fn replay_from_start(s: TestServer) -> TestServer {
    let mut batch = charla::storage::Batch::new();
    batch.put(
        charla::storage::Table::SupportState,
        b"bot_cursor".to_vec(),
        0u64.to_be_bytes().to_vec(),
    );
    s.server.services.store.write_durable(batch).await.unwrap();
    s.restart().await
}

pub(crate) async fn set_presence(c: &Client, name: &str, presence: &str) {
    let (st, body) = c
        .put(
            &format!("{V3}/presence/{}/status", enc(&c.user_id(name))),
            json!({ "presence": presence }),
        )
        .await;
    assert_eq!(st, 200, "{body}");
}

/// Polls `check` until it returns `Some`, for at most 15 s.
/// The bot invites the agent right after the assignment's state event: join once invited.
async fn join_when_invited(agent: &Client, room: &str) {
    eventually("the agent's invite", || async {
        (agent.join(room).await.0 == 200).then_some(())
    })
    .await;
}

pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A customer opens a conversation by inviting the bot; returns the room once it is indexed.
async fn open_conversation(d: &Desk, customer: &Client) -> String {
    let room = customer
        .create_room(json!({ "invite": [BOT], "name": "Help" }))
        .await;
    eventually("the conversation", || conversation(&d.boss, &room, None)).await;
    room
}

/// The conversation as the API shows it to `c`, when `check` (a field, a value) holds.
async fn conversation(c: &Client, room: &str, check: Option<(&str, Value)>) -> Option<Value> {
    let (st, body) = c.get(&format!("{API}/conversations/{}", enc(room))).await;
    (st == 200 && check.is_none_or(|(k, v)| body[k] == v)).then_some(body)
}

/// The room's `m.room.message` events, oldest first, as `c` sees them.
pub(crate) async fn messages(c: &Client, room: &str) -> Vec<Value> {
    let (st, body) = c
        .get(&format!(
            "{V3}/rooms/{}/messages?dir=b&limit=200",
            enc(room)
        ))
        .await;
    assert_eq!(st, 200, "{body}");
    let mut v: Vec<Value> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .cloned()
        .collect();
    v.reverse();
    v
}

/// The bot's messages: (body, internal).
pub(crate) async fn bot_says(c: &Client, room: &str) -> Vec<(String, bool)> {
    messages(c, room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == BOT)
        .map(|e| {
            (
                e["content"]["body"].as_str().unwrap().to_owned(),
                e["content"]["io.charla.internal"] == true,
            )
        })
        .collect()
}

async fn wait_bot_says(c: &Client, room: &str, n: usize) -> Vec<(String, bool)> {
    eventually("the bot's messages", || async {
        let said = bot_says(c, room).await;
        (said.len() >= n).then_some(said)
    })
    .await
}

async fn conversation_state(c: &Client, room: &str) -> Value {
    let (st, body) = c
        .get(&format!(
            "{V3}/rooms/{}/state/io.charla.conversation/",
            enc(room)
        ))
        .await;
    assert_eq!(st, 200, "{body}");
    body
}

async fn membership(c: &Client, room: &str, user: &str) -> Option<String> {
    let (st, body) = c
        .get(&format!(
            "{V3}/rooms/{}/state/m.room.member/{}",
            enc(room),
            enc(user)
        ))
        .await;
    (st == 200).then(|| body["membership"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn new_conversation_goes_to_the_only_online_agent() {
    let d = desk().await;
    set_presence(&d.ana, "ana", "online").await;
    let carla = d.s.user("carla").await;
    let room = open_conversation(&d, &carla).await;
    let conv = eventually("assignment", || {
        conversation(&d.boss, &room, Some(("assignee", json!("@ana:localhost"))))
    })
    .await;
    assert_eq!(conv["status"], "open");
    assert_eq!(conv["channel"], "matrix");
    assert_eq!(conv["contact"]["id"], "@carla:localhost");
    // The customer's client sees the same state, sent by the bot.
    let state = conversation_state(&carla, &room).await;
    assert_eq!(state["assignee"], "@ana:localhost");
    assert_eq!(state["priority"], "medium");
    assert_eq!(state["labels"], json!([]));
    assert_eq!(
        membership(&carla, &room, "@ana:localhost").await.as_deref(),
        Some("invite")
    );
    assert_eq!(membership(&carla, &room, "@bob:localhost").await, None);
    let said = wait_bot_says(&carla, &room, 2).await;
    // Assigned with the conversation's first state event, then greeted.
    assert_eq!(
        said,
        vec![
            ("Conversation assigned to @ana:localhost.".to_owned(), true),
            (GREETING.to_owned(), false),
        ]
    );
}

#[tokio::test]
async fn the_queue_drains_when_an_agent_comes_online_and_capacity_holds() {
    let d = desk().await;
    let carla = d.s.user("carla").await;
    let dani = d.s.user("dani").await;
    let room1 = open_conversation(&d, &carla).await;
    wait_bot_says(&carla, &room1, 1).await;
    assert_eq!(
        conversation(&d.boss, &room1, None).await.unwrap()["assignee"],
        Value::Null
    );
    // Ana (capacity 1) comes online: the waiting conversation goes to her.
    set_presence(&d.ana, "ana", "online").await;
    eventually("queue drained", || {
        conversation(&d.boss, &room1, Some(("assignee", json!("@ana:localhost"))))
    })
    .await;
    // A second conversation does not fit ana's capacity: it waits for bob.
    let room2 = open_conversation(&d, &dani).await;
    dani.send_text(&room2, "t1", "cual es el horario").await;
    wait_bot_says(&dani, &room2, 2).await;
    assert_eq!(
        conversation(&d.boss, &room2, None).await.unwrap()["assignee"],
        Value::Null
    );
    let (_, agents) = d.boss.get(&format!("{API}/agents")).await;
    assert_eq!(
        agents["agents"],
        json!([
            {"user_id": "@ana:localhost", "capacity": 1, "presence": "online", "load": 1, "available": false},
            {"user_id": "@bob:localhost", "capacity": 5, "presence": "offline", "load": 0, "available": false},
        ])
    );
    set_presence(&d.bob, "bob", "online").await;
    eventually("second conversation to bob", || {
        conversation(&d.boss, &room2, Some(("assignee", json!("@bob:localhost"))))
    })
    .await;
    assert_eq!(
        conversation(&d.boss, &room1, None).await.unwrap()["assignee"],
        "@ana:localhost"
    );
}

/// The bot handles rooms concurrently; assignment is still decided one at a time, so ten
/// conversations opened together fill exactly the agents' free capacity (ana 1, bob 5) and
/// every room hears the bot in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_opened_together_fill_capacity_exactly() {
    let d = desk().await;
    set_presence(&d.ana, "ana", "online").await;
    set_presence(&d.bob, "bob", "online").await;
    let mut customers = Vec::new();
    for i in 0..10 {
        customers.push(d.s.user(&format!("customer{i}")).await);
    }
    let rooms = futures_util::future::join_all(
        customers
            .iter()
            .map(|c| c.create_room(json!({ "invite": [BOT], "name": "Help" }))),
    )
    .await;
    let mut assignees = Vec::new();
    for (customer, room) in customers.iter().zip(&rooms) {
        // Greeted last: everything the bot does for a new conversation is done.
        let said = eventually("the greeting", || async {
            let said = bot_says(customer, room).await;
            said.iter()
                .any(|(body, _)| body == GREETING)
                .then_some(said)
        })
        .await;
        let assignee = conversation(&d.boss, room, None).await.unwrap()["assignee"].clone();
        let expected: Vec<(String, bool)> = match assignee.as_str() {
            Some(agent) => vec![
                (format!("Conversation assigned to {agent}."), true),
                (GREETING.to_owned(), false),
            ],
            None => vec![(GREETING.to_owned(), false)],
        };
        assert_eq!(said, expected, "{room}");
        assignees.push(assignee);
    }
    let count = |who: Value| assignees.iter().filter(|a| **a == who).count();
    assert_eq!(count(json!("@ana:localhost")), 1, "{assignees:?}");
    assert_eq!(count(json!("@bob:localhost")), 5, "{assignees:?}");
    assert_eq!(count(Value::Null), 4, "{assignees:?}");
}

#[tokio::test]
async fn faq_answers_matching_questions_and_nothing_else() {
    let d = desk().await;
    let carla = d.s.user("carla").await;
    let room = open_conversation(&d, &carla).await;
    carla.send_text(&room, "t1", "¿CUÁL es el horario?").await;
    wait_bot_says(&carla, &room, 2).await;
    carla
        .send_text(&room, "t2", "My parcel arrived broken")
        .await;
    carla
        .send_text(&room, "t3", "Do you have a tracking number for me?")
        .await;
    let said = wait_bot_says(&carla, &room, 3).await;
    assert_eq!(
        said,
        vec![
            (GREETING.to_owned(), false),
            (HOURS.to_owned(), false),
            ("Puedes seguir tu pedido en /orders.".to_owned(), false),
        ]
    );
}

#[tokio::test]
async fn agent_commands_change_the_conversation_and_others_are_refused() {
    let d = desk().await;
    set_presence(&d.ana, "ana", "online").await;
    let carla = d.s.user("carla").await;
    let (st, _) = carla
        .put(
            &format!("{V3}/profile/{}/displayname", enc("@carla:localhost")),
            json!({"displayname": "Carla"}),
        )
        .await;
    assert_eq!(st, 200);
    let room = open_conversation(&d, &carla).await;
    eventually("assignment", || {
        conversation(&d.boss, &room, Some(("assignee", json!("@ana:localhost"))))
    })
    .await;
    join_when_invited(&d.ana, &room).await;
    carla.send_text(&room, "c1", "!close").await;
    d.ana.send_text(&room, "a1", "!label add vip").await;
    d.ana.send_text(&room, "a2", "!priority urgent").await;
    d.ana.send_text(&room, "a3", "!status pending").await;
    d.ana.send_text(&room, "a4", "!note").await;
    d.ana.send_text(&room, "a5", "!template thanks").await;
    d.ana.send_text(&room, "a6", "!priority whenever").await;
    let mut said = wait_bot_says(&carla, &room, 9).await;
    // `!note` links the notes room (its id differs in every run).
    let (link, internal) = said.remove(6);
    assert!(internal);
    assert!(
        link.starts_with(
            "Private notes on this conversation are kept in a staff-only room, never here"
        ),
        "{link}"
    );
    assert_eq!(
        said[2..].to_vec(),
        vec![
            (
                "Sorry @carla:localhost, only support agents can use commands.".to_owned(),
                true
            ),
            ("Labels: vip.".to_owned(), true),
            ("Priority: urgent.".to_owned(), true),
            ("Status: pending.".to_owned(), true),
            ("Gracias Carla, te atendió ana. ".to_owned(), false),
            (
                "!priority: usage: !priority low|medium|high|urgent".to_owned(),
                true
            ),
        ]
    );
    let state = conversation_state(&carla, &room).await;
    assert_eq!(state["status"], "pending");
    assert_eq!(state["labels"], json!(["vip"]));
    assert_eq!(state["priority"], "urgent");
    // Commands were audited with who asked.
    let (_, audit) = d.boss.get(&format!("{API}/audit")).await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("conversation.status", "@ana:localhost"),
            ("conversation.priority", "@ana:localhost"),
            ("conversation.labels", "@ana:localhost"),
        ]
    );
    let (st, body) = d.ana.get(&format!("{API}/audit")).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn tickets_are_numbered_in_order_and_listed() {
    let d = desk().await;
    set_presence(&d.ana, "ana", "online").await;
    let carla = d.s.user("carla").await;
    let room = open_conversation(&d, &carla).await;
    eventually("assignment", || {
        conversation(&d.boss, &room, Some(("assignee", json!("@ana:localhost"))))
    })
    .await;
    join_when_invited(&d.ana, &room).await;
    d.ana.send_text(&room, "a1", "!ticket Pantalla rota").await;
    d.ana.send_text(&room, "a2", "!ticket Reembolso").await;
    let said = wait_bot_says(&carla, &room, 4).await;
    assert_eq!(
        said[2],
        ("Ticket #1 created: Pantalla rota".to_owned(), true)
    );
    assert_eq!(said[3], ("Ticket #2 created: Reembolso".to_owned(), true));
    let (st, list) = d.ana.get(&format!("{API}/tickets")).await;
    assert_eq!(st, 200);
    let tickets = list["tickets"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str, &str)> = tickets
        .iter()
        .map(|t| {
            (
                t["number"].as_u64().unwrap(),
                t["title"].as_str().unwrap(),
                t["status"].as_str().unwrap(),
                t["room_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, "Reembolso", "open", room.as_str()),
            (1, "Pantalla rota", "open", room.as_str())
        ]
    );
    assert_eq!(tickets[0]["assignee"], "@ana:localhost");
    assert_eq!(tickets[0]["created_by"], "@ana:localhost");
    // Mirrored as room state.
    let (st, mirror) = carla
        .get(&format!(
            "{V3}/rooms/{}/state/io.charla.ticket/1",
            enc(&room)
        ))
        .await;
    assert_eq!(st, 200);
    assert_eq!(mirror["title"], "Pantalla rota");
    // Resolving ticket 1 through the API tells the customer.
    let (st, t) = d
        .ana
        .patch(&format!("{API}/tickets/1"), json!({"status": "resolved"}))
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["status"], "resolved");
    let said = bot_says(&carla, &room).await;
    assert_eq!(
        said[4..].to_vec(),
        vec![
            (
                "Ticket #1 is now resolved (medium priority): Pantalla rota".to_owned(),
                true
            ),
            ("Your request #1 has been resolved.".to_owned(), false),
        ]
    );
    let (_, one) = d.ana.get(&format!("{API}/tickets/1")).await;
    assert_eq!(one["status"], "resolved");
    let (_, open) = d.ana.get(&format!("{API}/tickets?status=open")).await;
    assert_eq!(open["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(open["tickets"][0]["number"], 2);
    let (st, body) = d
        .ana
        .patch(&format!("{API}/tickets/1"), json!({"status": "done"}))
        .await;
    assert_error(st, &body, 400, "M_INVALID_PARAM");
    assert_eq!(body["field"], "status");
    let (st, body) = carla.get(&format!("{API}/tickets")).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let (st, body) = d.ana.get(&format!("{API}/tickets/99")).await;
    assert_error(st, &body, 404, "M_NOT_FOUND");
}

/// The room ids of a listing, in order.
/// The room ids a conversation listing answers, in its order.
pub(crate) async fn list(c: &Client, query: &str) -> Vec<String> {
    let (st, body) = c.get(&format!("{API}/conversations?{query}")).await;
    assert_eq!(st, 200, "{query}: {body}");
    body["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn filters_return_exactly_the_right_conversations() {
    let d = desk().await;
    let buyer = d.s.user("buyer").await;
    let seller = d.s.user("seller").await;
    let mut rooms = Vec::new();
    // Buyer/seller chats are opened by the desk (customers open only their own).
    for (product, order, labels, priority) in [
        ("p1", "o1", json!(["vip"]), "high"),
        ("p1", "o2", json!([]), "low"),
        ("p2", "o3", json!(["vip", "refund"]), "high"),
    ] {
        let (st, conv) = d
            .boss
            .post(
                &format!("{API}/conversations"),
                json!({
                    "participants": ["@buyer:localhost", "@seller:localhost"],
                    "product_id": product, "order_id": order, "labels": labels,
                    "priority": priority, "contact": {"name": "Buyer", "organisation": "ACME"},
                }),
            )
            .await;
        assert_eq!(st, 200, "{conv}");
        assert_eq!(conv["product_id"], product);
        assert_eq!(conv["status"], "open");
        rooms.push(conv["room_id"].as_str().unwrap().to_owned());
    }
    // Bob takes the third through the API.
    let (st, body) = d
        .boss
        .post(
            &format!("{API}/conversations/{}/assign", enc(&rooms[2])),
            json!({"user_id": "@bob:localhost"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["assignee"], "@bob:localhost");
    let (st, body) = d
        .boss
        .patch(
            &format!("{API}/conversations/{}", enc(&rooms[1])),
            json!({"status": "closed"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "closed");
    assert!(body["resolved_ts"].is_u64());
    let (r0, r1, r2) = (&rooms[0], &rooms[1], &rooms[2]);
    assert_eq!(
        list(&d.boss, "product_id=p1").await,
        vec![r1.clone(), r0.clone()]
    );
    assert_eq!(list(&d.boss, "order_id=o3").await, vec![r2.clone()]);
    assert_eq!(
        list(&d.boss, "label=vip").await,
        vec![r2.clone(), r0.clone()]
    );
    assert_eq!(list(&d.boss, "label=refund").await, vec![r2.clone()]);
    assert_eq!(
        list(&d.boss, "priority=high&status=open").await,
        vec![r2.clone(), r0.clone()]
    );
    assert_eq!(list(&d.boss, "status=closed").await, vec![r1.clone()]);
    assert_eq!(
        list(&d.boss, "assignee=none").await,
        vec![r1.clone(), r0.clone()]
    );
    assert_eq!(
        list(&d.boss, "assignee=@bob:localhost").await,
        vec![r2.clone()]
    );
    assert_eq!(
        list(&d.boss, "organisation=ACME&channel=matrix")
            .await
            .len(),
        3
    );
    assert_eq!(
        list(&d.boss, "channel=whatsapp").await,
        Vec::<String>::new()
    );
    // Pages of one follow the full listing's order. The support bot's own messages move a
    // conversation's activity while it catches up, so a page that raced one is read again.
    let mut paged = false;
    for _ in 0..50 {
        let all = list(&d.boss, "").await;
        let (_, page1) = d.boss.get(&format!("{API}/conversations?limit=1")).await;
        let next = page1["next"].as_str().unwrap();
        let (_, page2) = d
            .boss
            .get(&format!("{API}/conversations?limit=1&from={}", enc(next)))
            .await;
        let pages = [
            page1["conversations"][0]["room_id"]
                .as_str()
                .unwrap_or_default(),
            page2["conversations"][0]["room_id"]
                .as_str()
                .unwrap_or_default(),
        ];
        if pages == [all[0].as_str(), all[1].as_str()] && all == list(&d.boss, "").await {
            paged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(paged, "pages of one never matched the listing");
    // Ana sees the queue but not bob's conversation; bob sees his and the queue (in an order
    // the bot's catching up may still move: compared as sets).
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(list(&d.ana, "").await),
        sorted(vec![r1.clone(), r0.clone()])
    );
    assert_eq!(
        sorted(list(&d.bob, "").await),
        sorted(vec![r1.clone(), r2.clone(), r0.clone()])
    );
    let (st, body) = d
        .ana
        .get(&format!("{API}/conversations?assignee=@bob:localhost"))
        .await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let (st, body) = d.ana.get(&format!("{API}/conversations/{}", enc(r2))).await;
    assert_error(st, &body, 404, "M_NOT_FOUND");
    // Participants read their own conversation with its history, but not the list.
    let (st, body) = seller
        .get(&format!("{API}/conversations/{}", enc(r0)))
        .await;
    assert_eq!(st, 404, "seller is only invited: {body}");
    assert_eq!(seller.join(r0).await.0, 200);
    let (st, body) = seller
        .get(&format!("{API}/conversations/{}", enc(r0)))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["history"][0]["type"], "m.room.create");
    let (st, body) = seller.get(&format!("{API}/conversations")).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    // Bad input names the field and changes nothing.
    let (st, body) = d
        .boss
        .get(&format!("{API}/conversations?status=solved"))
        .await;
    assert_error(st, &body, 400, "M_INVALID_PARAM");
    assert_eq!(body["field"], "status");
    let (st, body) = d
        .boss
        .patch(
            &format!("{API}/conversations/{}", enc(r0)),
            json!({"priority": "high", "labels": [""]}),
        )
        .await;
    assert_error(st, &body, 400, "M_INVALID_PARAM");
    assert_eq!(body["field"], "labels");
    assert_eq!(
        conversation_state(&seller, r0).await["labels"],
        json!(["vip"])
    );
    let (st, body) = d
        .boss
        .post(
            &format!("{API}/conversations/{}/assign", enc(r0)),
            json!({"user_id": "@buyer:localhost"}),
        )
        .await;
    assert_error(st, &body, 400, "M_INVALID_PARAM");
    assert_eq!(body["field"], "user_id");
    let (st, body) = buyer
        .post(
            &format!("{API}/conversations"),
            json!({"participants": ["@seller:localhost"]}),
        )
        .await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let (st, body) = d.s.client().get(&format!("{API}/conversations")).await;
    assert_error(st, &body, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn metrics_match_a_scripted_conversation() {
    let d = desk().await;
    set_presence(&d.ana, "ana", "online").await;
    let carla = d.s.user("carla").await;
    let room = open_conversation(&d, &carla).await;
    eventually("assignment", || {
        conversation(&d.boss, &room, Some(("assignee", json!("@ana:localhost"))))
    })
    .await;
    join_when_invited(&d.ana, &room).await;
    carla
        .send_text(&room, "c1", "Hola, tengo un problema")
        .await;
    eventually("first customer message", || async {
        let s = conversation_state(&carla, &room).await;
        s["first_customer_message_ts"].is_u64().then_some(())
    })
    .await;
    d.ana.send_text(&room, "a1", "Hola Carla, dime").await;
    d.ana.send_text(&room, "a2", "!close").await;
    let state = eventually("closed", || async {
        let s = conversation_state(&carla, &room).await;
        (s["status"] == "closed" && s["first_agent_response_ts"].is_u64()).then_some(s)
    })
    .await;
    let msgs = messages(&carla, &room).await;
    let ts_of = |body: &str| {
        msgs.iter().find(|m| m["content"]["body"] == body).unwrap()["origin_server_ts"]
            .as_u64()
            .unwrap()
    };
    let customer_ts = ts_of("Hola, tengo un problema");
    let agent_ts = ts_of("Hola Carla, dime");
    assert_eq!(state["first_customer_message_ts"], customer_ts);
    assert_eq!(state["first_agent_response_ts"], agent_ts);
    let resolved = state["resolved_ts"].as_u64().unwrap();
    // Every message counts: the customer's, the agent's, commands and the bot's.
    let msgs = eventually("close answer", || async {
        let m = messages(&carla, &room).await;
        (m.last().unwrap()["content"]["body"] == "Status: closed.").then_some(m)
    })
    .await;
    let expected_messages = msgs.len() as u64;
    eventually("every message counted", || {
        conversation(
            &d.boss,
            &room,
            Some(("message_count", json!(expected_messages))),
        )
    })
    .await;
    let (st, m) = d.boss.get(&format!("{API}/metrics")).await;
    assert_eq!(st, 200, "{m}");
    let overall = &m["overall"];
    assert_eq!(overall["conversations"], 1);
    assert_eq!(overall["responded"], 1);
    assert_eq!(overall["avg_first_response_ms"], agent_ts - customer_ts);
    assert_eq!(overall["resolved"], 1);
    assert_eq!(overall["avg_resolution_ms"], resolved - customer_ts);
    assert_eq!(overall["messages"], expected_messages);
    assert_eq!(m["per_agent"]["@ana:localhost"], *overall);
    assert_eq!(m["conversations_per_day"].as_object().unwrap().len(), 1);
    // A range before the conversation is empty.
    let (_, m) = d.boss.get(&format!("{API}/metrics?from=0&to=1000")).await;
    assert_eq!(m["overall"]["conversations"], 0);
    let (st, body) = d.boss.get(&format!("{API}/metrics?from=x")).await;
    assert_error(st, &body, 400, "M_INVALID_PARAM");
    assert_eq!(body["field"], "from");
}

#[tokio::test]
async fn the_openapi_description_is_served() {
    let d = desk().await;
    let (st, body) = d.s.client().get(&format!("{API}/openapi.json")).await;
    assert_eq!(st, 200);
    assert_eq!(body["openapi"], "3.1.0");
    for path in [
        "/conversations",
        "/conversations/{room_id}",
        "/tickets",
        "/tickets/{number}",
        "/agents",
        "/metrics",
        "/audit",
    ] {
        assert!(body["paths"][path].is_object(), "{path} documented");
    }
}

#[tokio::test]
async fn a_replayed_stream_never_answers_twice() {
    let d = desk().await;
    set_presence(&d.ana, "ana", "online").await;
    let carla = d.s.user("carla").await;
    let room = open_conversation(&d, &carla).await;
    carla
        .send_text(&room, "c1", "What are your opening hours?")
        .await;
    join_when_invited(&d.ana, &room).await;
    d.ana.send_text(&room, "a1", "!ticket Consulta").await;
    let before = wait_bot_says(&carla, &room, 4).await;
    let counted = eventually("messages counted", || async {
        let c = conversation(&d.boss, &room, None).await?;
        (c["message_count"] == 6).then_some(c)
    })
    .await;
    let Desk { s, boss, .. } = d;
    let s = replay_from_start(s).await;
    let mut boss = boss;
    boss.base = s.server.base_url();
    let mut carla = carla;
    carla.base = s.server.base_url();
    // A new message after the replay proves the bot caught up.
    carla.send_text(&room, "c2", "¿Cuál es el horario?").await;
    let after = wait_bot_says(&carla, &room, 5).await;
    assert_eq!(after[..4], before[..]);
    assert_eq!(after[4], (HOURS.to_owned(), false));
    assert_eq!(after.len(), 5);
    let (_, tickets) = boss.get(&format!("{API}/tickets")).await;
    assert_eq!(tickets["tickets"].as_array().unwrap().len(), 1);
    let c = eventually("the new message counted", || async {
        let c = conversation(&boss, &room, None).await?;
        (c["message_count"] == 8).then_some(c)
    })
    .await;
    assert_eq!(
        c["first_customer_message_ts"],
        counted["first_customer_message_ts"]
    );
}

/// Element's direct chat (`trusted_private_chat`) gives the bot the power to run the
/// conversation there; an encrypted one (Element X encrypts direct chats) it cannot read, so
/// the customer gets a desk room instead.
#[tokio::test]
async fn a_direct_chat_is_the_conversation_unless_it_is_encrypted() {
    let d = desk().await;
    let carla = d.s.user("carla").await;
    let dm = carla
        .create_room(json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [BOT]}))
        .await;
    let conv = eventually("the conversation", || conversation(&d.boss, &dm, None)).await;
    assert_eq!(conv["contact"]["id"], "@carla:localhost");
    assert_eq!(
        wait_bot_says(&carla, &dm, 1).await,
        vec![(GREETING.to_owned(), false)]
    );

    let encrypted = carla
        .create_room(json!({
            "preset": "trusted_private_chat", "is_direct": true, "invite": [BOT],
            "initial_state": [{"type": "m.room.encryption", "state_key": "",
                               "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        }))
        .await;
    let desk_room = eventually("the desk room's invite", || async {
        let sync = carla.sync(None, 0).await;
        sync["rooms"]["invite"]
            .as_object()
            .and_then(|rooms| rooms.keys().next().cloned())
    })
    .await;
    let said = wait_bot_says(&carla, &encrypted, 1).await;
    assert!(said[0].0.contains(&desk_room), "{said:?}");
    assert_eq!(
        membership(&carla, &encrypted, BOT).await.as_deref(),
        Some("leave")
    );
    let (st, _) = d
        .boss
        .get(&format!("{API}/conversations/{}", enc(&encrypted)))
        .await;
    assert_eq!(st, 404);
    let conv = eventually("the desk room's conversation", || {
        conversation(&d.boss, &desk_room, None)
    })
    .await;
    assert_eq!(conv["contact"]["id"], "@carla:localhost");
}
