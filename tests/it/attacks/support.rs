//! Attack tests: the support desk (issue #18 items 6, 7, 15 and the first part of 16).
//!
//! A customer forging the desk's state, a customer's room the bot cannot run, an agent reaching
//! another agent's tickets, a private note reaching the customer, a customer opening
//! conversations at will. Each test failed on 9492ef4.

use crate::{
    common::{Client, TestServer, V3, assert_error, enc},
    support::{
        API, BOT, Desk, GREETING, HOURS, bot_says, desk, eventually, replay_from_start,
        set_presence,
    },
};
use serde_json::{Value, json};

async fn conversation(c: &Client, room: &str) -> (u16, Value) {
    c.get(&format!("{API}/conversations/{}", enc(room))).await
}

async fn state(c: &Client, room: &str, kind: &str, key: &str) -> (u16, Value) {
    c.get(&format!(
        "{V3}/rooms/{}/state/{kind}/{}",
        enc(room),
        enc(key)
    ))
    .await
}

/// Every event of the room `c` may read, oldest first.
async fn timeline(c: &Client, room: &str) -> Vec<Value> {
    let path = format!("{V3}/rooms/{}/messages?dir=b&limit=500", enc(room));
    let (st, body) = c.get(&path).await;
    assert_eq!(st, 200, "{body}");
    let mut events = body["chunk"].as_array().unwrap().clone();
    events.reverse();
    events
}

async fn wait_bot_says(c: &Client, room: &str, text: &str) -> Vec<String> {
    eventually(text, || async {
        let said = bodies(bot_says(c, room).await);
        said.iter().any(|b| b.contains(text)).then_some(said)
    })
    .await
}

fn bodies(said: Vec<(String, bool)>) -> Vec<String> {
    said.into_iter().map(|(body, _)| body).collect()
}

async fn put_state(c: &Client, room: &str, kind: &str, content: Value) -> (u16, Value) {
    c.put(&format!("{V3}/rooms/{}/state/{kind}/", enc(room)), content)
        .await
}

async fn invite(c: &Client, room: &str, user: &str) -> (u16, Value) {
    let path = format!("{V3}/rooms/{}/invite", enc(room));
    c.post(&path, json!({ "user_id": user })).await
}

/// The rooms `c` is invited to, with their stripped invite state.
async fn invites(c: &Client) -> serde_json::Map<String, Value> {
    let sync = c.sync(None, 0).await;
    sync["rooms"]["invite"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// A customer's own room with forged desk state in it (a fake assignee, urgent, and far more
/// labels than the desk allows) sent as initial state, the bot among its invitees.
#[tokio::test]
async fn desk_state_forged_by_a_customer_is_ignored_by_the_api_and_assignment() {
    let d = desk().await;
    set_presence(&d.ana, "ana", "online").await;
    let carla = d.s.user("carla").await;
    let labels: Vec<String> = (0..300).map(|i| format!("l{i}")).collect();
    let room = carla
        .create_room(json!({
            "name": "Help",
            "invite": [BOT],
            "initial_state": [{
                "type": "io.charla.conversation", "state_key": "",
                "content": {"assignee": "@bob:localhost", "priority": "urgent", "status": "open",
                            "labels": labels, "channel": "whatsapp"}
            }],
        }))
        .await;
    // The bot opens the conversation as if nothing was there, and assigns it for real.
    let conv = eventually("the conversation", || async {
        let (st, body) = conversation(&d.boss, &room).await;
        (st == 200 && body["assignee"] == "@ana:localhost").then_some(body)
    })
    .await;
    assert_eq!(conv["priority"], "medium");
    assert_eq!(conv["labels"], json!([]));
    assert_eq!(conv["channel"], "matrix");
    assert_eq!(conv["contact"]["id"], "@carla:localhost");
    let (_, current) = state(&carla, &room, "io.charla.conversation", "").await;
    assert_eq!(current["assignee"], "@ana:localhost", "{current}");
    // Bob's load is his own: the fake assignment did not count against him.
    let (_, agents) = d.boss.get(&format!("{API}/agents")).await;
    assert_eq!(agents["agents"][1]["user_id"], "@bob:localhost");
    assert_eq!(agents["agents"][1]["load"], 0, "{agents}");
    assert_eq!(agents["agents"][0]["load"], 1, "{agents}");
    let (_, listed) = d.boss.get(&format!("{API}/conversations?label=l7")).await;
    assert_eq!(listed["conversations"], json!([]));

    // Later forgeries are refused outright, also where the customer has all the power.
    let forged = json!({"assignee": "@bob:localhost", "status": "closed"});
    let (st, body) = put_state(&carla, &room, "io.charla.conversation", forged.clone()).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let (st, body) = put_state(&carla, &room, "io.charla.ticket", json!({"title": "x"})).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let dm = carla
        .create_room(json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [BOT]}))
        .await;
    eventually("the direct chat's conversation", || async {
        (conversation(&d.boss, &dm).await.0 == 200).then_some(())
    })
    .await;
    let (st, body) = put_state(&carla, &dm, "io.charla.conversation", forged).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let (_, conv) = conversation(&d.boss, &room).await;
    assert_eq!(
        (&conv["assignee"], &conv["status"]),
        (&json!("@ana:localhost"), &json!("open"))
    );

    // Staff bound labels too: no more than the desk keeps.
    let many: Vec<String> = (0..21).map(|i| format!("tag{i}")).collect();
    let path = format!("{API}/conversations/{}", enc(&room));
    let (st, body) = d.boss.patch(&path, json!({ "labels": many })).await;
    assert_error(st, &body, 400, "M_INVALID_PARAM");
    assert_eq!(body["field"], "labels");
    let (st, body) = d
        .boss
        .patch(&path, json!({ "labels": ["x".repeat(65)] }))
        .await;
    assert_error(st, &body, 400, "M_INVALID_PARAM");
}

/// README's first session in Element: create a room, invite the bot. The customer owns that
/// room, so the bot opens a desk-owned one for them instead of asking them for power.
#[tokio::test]
async fn a_customers_invite_opens_a_desk_room_the_customer_cannot_rule() {
    let d = desk().await;
    set_presence(&d.ana, "ana", "online").await;
    let carla = d.s.user("carla").await;
    let origin = carla.create_room(json!({"name": "Soporte"})).await;
    let (st, body) = invite(&carla, &origin, BOT).await;
    assert_eq!(st, 200, "{body}");

    // The customer is invited to a direct chat with the bot.
    let (room, invite_state) = eventually("the desk room's invite", || async {
        invites(&carla).await.into_iter().next()
    })
    .await;
    let own_invite = invite_state["invite_state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@carla:localhost")
        .cloned()
        .expect("the invite event is in the invite state");
    assert_eq!(own_invite["sender"], BOT);
    assert_eq!(own_invite["content"]["is_direct"], true, "{own_invite}");
    // The original room says where the conversation went, and is not a conversation itself.
    let said = wait_bot_says(&carla, &origin, &room).await;
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(!said[0].contains("power level"), "{said:?}");
    assert_error(
        conversation(&d.boss, &origin).await.0,
        &conversation(&d.boss, &origin).await.1,
        404,
        "M_NOT_FOUND",
    );

    assert_eq!(carla.join(&room).await.0, 200);
    let (st, levels) = state(&carla, &room, "m.room.power_levels", "").await;
    assert_eq!(st, 200, "{levels}");
    assert_eq!(
        levels["users"],
        json!({BOT: 100, "@ana:localhost": 50, "@bob:localhost": 50, "@boss:localhost": 50})
    );
    assert_eq!(levels["events_default"], 0);
    assert_eq!(levels["users_default"], 0);
    assert_eq!(levels["invite"], 50);
    assert_eq!(levels["redact"], 50);
    assert!(levels["state_default"].as_i64().unwrap() >= 50, "{levels}");
    // The desk's conversation, assigned, with the customer as contact.
    let conv = eventually("assignment", || async {
        let (st, body) = conversation(&d.boss, &room).await;
        (st == 200 && body["assignee"] == "@ana:localhost").then_some(body)
    })
    .await;
    assert_eq!(conv["contact"]["id"], "@carla:localhost");
    assert_eq!(conv["channel"], "matrix");
    let (st, body) = d.ana.join(&room).await;
    assert_eq!(st, 200, "ana was invited: {body}");

    // The customer talks, and cannot rule.
    let asked = carla.send_text(&room, "c1", "¿Cuál es el horario?").await;
    wait_bot_says(&carla, &room, HOURS).await;
    let forged = json!({"assignee": "@bob:localhost"});
    let (st, body) = put_state(&carla, &room, "io.charla.conversation", forged).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let (st, body) = put_state(&carla, &room, "m.room.name", json!({"name": "mine"})).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let (st, body) = invite(&carla, &room, "@bob:localhost").await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let reaction =
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": asked, "key": "👍"}});
    let (st, body) = carla
        .put(
            &format!("{V3}/rooms/{}/send/m.reaction/r1", enc(&room)),
            reaction,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let greeting = timeline(&carla, &room)
        .await
        .into_iter()
        .find(|e| e["content"]["body"] == GREETING)
        .expect("greeted");
    let redact = |event: String, txn: &'static str| {
        let carla = carla.clone();
        let room = room.clone();
        async move {
            let path = format!("{V3}/rooms/{}/redact/{}/{txn}", enc(&room), enc(&event));
            carla.put(&path, json!({})).await
        }
    };
    let (st, body) = redact(greeting["event_id"].as_str().unwrap().to_owned(), "x1").await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let (st, body) = redact(asked.clone(), "x2").await;
    assert_eq!(st, 200, "the customer redacts their own message: {body}");

    // A replay of the whole stream (the bot restarting from an old cursor) opens nothing new.
    let Desk { s, .. } = d;
    let s = replay_from_start(s).await;
    let mut carla = carla;
    carla.base = s.server.base_url();
    carla.send_text(&room, "c2", "¿Cuál es el horario?").await;
    eventually("the bot caught up", || async {
        let said = bodies(bot_says(&carla, &room).await);
        (said.iter().filter(|b| *b == HOURS).count() == 2).then_some(())
    })
    .await;
    assert_eq!(invites(&carla).await.len(), 0, "no second desk room");
    let (_, joined) = carla.get(&format!("{V3}/joined_rooms")).await;
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 2);
    assert_eq!(bodies(bot_says(&carla, &origin).await), said);
}

/// Two agents, each with their conversation and its ticket: neither reaches the other's.
#[tokio::test]
async fn an_agent_cannot_list_read_escalate_or_resolve_another_agents_tickets() {
    let d = desk().await;
    let _carla = d.s.user("carla").await;
    let dani = d.s.user("dani").await;
    let mut rooms = Vec::new();
    for (customer, agent) in [
        ("@carla:localhost", "@ana:localhost"),
        ("@dani:localhost", "@bob:localhost"),
    ] {
        let (st, conv) = d
            .boss
            .post(
                &format!("{API}/conversations"),
                json!({ "participants": [customer] }),
            )
            .await;
        assert_eq!(st, 200, "{conv}");
        let room = conv["room_id"].as_str().unwrap().to_owned();
        let path = format!("{API}/conversations/{}/assign", enc(&room));
        let (st, body) = d.boss.post(&path, json!({ "user_id": agent })).await;
        assert_eq!(st, 200, "{body}");
        rooms.push(room);
    }
    assert_eq!(dani.join(&rooms[1]).await.0, 200);
    let mut numbers = Vec::new();
    for (room, title) in rooms.iter().zip(["Pantalla rota", "Reembolso"]) {
        let body = json!({ "room_id": room, "title": title });
        let (st, t) = d.boss.post(&format!("{API}/tickets"), body).await;
        assert_eq!(st, 200, "{t}");
        numbers.push(t["number"].as_u64().unwrap());
    }
    let (anas, bobs) = (numbers[0], numbers[1]);
    let listed = |c: &Client| {
        let c = c.clone();
        async move {
            let (st, body) = c.get(&format!("{API}/tickets")).await;
            assert_eq!(st, 200, "{body}");
            body["tickets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["number"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&d.ana).await, vec![anas]);
    assert_eq!(listed(&d.bob).await, vec![bobs]);
    assert_eq!(listed(&d.boss).await, vec![bobs, anas]);
    let (st, body) = d
        .ana
        .get(&format!("{API}/tickets?room_id={}", enc(&rooms[1])))
        .await;
    assert_eq!((st, &body["tickets"]), (200, &json!([])), "{body}");

    let (st, body) = d.ana.get(&format!("{API}/tickets/{bobs}")).await;
    assert_error(st, &body, 404, "M_NOT_FOUND");
    let (st, body) = d.ana.get(&format!("{API}/tickets/{anas}")).await;
    assert_eq!(st, 200, "{body}");
    let resolve = json!({ "status": "resolved" });
    let (st, body) = d
        .ana
        .patch(&format!("{API}/tickets/{bobs}"), resolve.clone())
        .await;
    assert_error(st, &body, 404, "M_NOT_FOUND");
    let body = json!({ "room_id": rooms[1], "title": "Mío" });
    let (st, body) = d.ana.post(&format!("{API}/tickets"), body).await;
    assert_error(st, &body, 404, "M_NOT_FOUND");
    // Nothing changed: the ticket is open, the customer heard nothing, no ticket was added.
    let (_, t) = d.boss.get(&format!("{API}/tickets/{bobs}")).await;
    assert_eq!(t["status"], "open");
    assert_eq!(listed(&d.boss).await, vec![bobs, anas]);
    let said = bodies(bot_says(&dani, &rooms[1]).await);
    assert!(!said.iter().any(|b| b.contains("resolved")), "{said:?}");
    // Its own agent may.
    let (st, body) = d.bob.patch(&format!("{API}/tickets/{bobs}"), resolve).await;
    assert_eq!((st, &body["status"]), (200, &json!("resolved")), "{body}");
}

/// A conversation the customer reads, an agent who keeps notes on it: through the old `!note`,
/// the notes room the bot links, and the support API. The customer sees none of them.
#[tokio::test]
async fn a_customer_never_sees_a_private_note() {
    let d = desk().await;
    set_presence(&d.ana, "ana", "online").await;
    let carla = d.s.user("carla").await;
    let room = carla
        .create_room(json!({ "invite": [BOT], "name": "Help" }))
        .await;
    eventually("assignment", || async {
        let (st, body) = conversation(&d.boss, &room).await;
        (st == 200 && body["assignee"] == "@ana:localhost").then_some(())
    })
    .await;
    eventually("ana's invite", || async {
        (d.ana.join(&room).await.0 == 200).then_some(())
    })
    .await;
    carla.send_text(&room, "c1", "Hola").await;

    // A note typed into the conversation never reaches it.
    let path = format!("{V3}/rooms/{}/send/m.room.message/n1", enc(&room));
    let note = json!({"msgtype": "m.text", "body": "!note secret-one: she is a reseller"});
    let (st, body) = d.ana.put(&path, note).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    // `!note` links the conversation's staff-only notes room, where notes are written.
    d.ana.send_text(&room, "n2", "!note").await;
    let notes_room = eventually("the notes room", || async {
        timeline(&d.ana, &room).await.into_iter().find_map(|e| {
            e["content"]["io.charla.notes_room"]
                .as_str()
                .map(str::to_owned)
        })
    })
    .await;
    assert_eq!(d.ana.join(&notes_room).await.0, 200);
    d.ana
        .send_text(&notes_room, "n3", "secret-two: refund approved")
        .await;
    let notes = format!("{API}/conversations/{}/notes", enc(&room));
    let (st, written) = d
        .ana
        .post(&notes, json!({"text": "secret-three: call back at 5"}))
        .await;
    assert_eq!(st, 200, "{written}");
    assert_eq!(written["author"], "@ana:localhost");
    let (st, listed) = d.ana.get(&notes).await;
    assert_eq!(st, 200, "{listed}");
    let seen: Vec<(&str, &str)> = listed["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["author"].as_str().unwrap(), n["body"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("@ana:localhost", "secret-three: call back at 5"),
            ("@ana:localhost", "secret-two: refund approved"),
        ]
    );
    let (st, body) = d.bob.get(&notes).await;
    assert_error(st, &body, 404, "M_NOT_FOUND");
    let (st, body) = carla.get(&notes).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    // The next assignee is let into the notes too.
    let assign = format!("{API}/conversations/{}/assign", enc(&room));
    let (st, body) = d
        .boss
        .post(&assign, json!({"user_id": "@bob:localhost"}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert!(invites(&d.bob).await.contains_key(&notes_room));
    let (st, body) = d.bob.get(&notes).await;
    assert_eq!((st, body["notes"].as_array().map(Vec::len)), (200, Some(2)));

    // The customer: sync, history, context, the API's history, the notes room.
    let marker = carla.send_text(&room, "c2", "¿Sigue ahí?").await;
    let sync = carla.sync(None, 0).await;
    assert!(sync["rooms"]["join"][&room].is_object());
    assert!(!sync.to_string().contains("secret"), "{sync}");
    let history = timeline(&carla, &room).await;
    assert!(!Value::Array(history).to_string().contains("secret"));
    let (st, context) = carla
        .get(&format!(
            "{V3}/rooms/{}/context/{}?limit=100",
            enc(&room),
            enc(&marker)
        ))
        .await;
    assert_eq!(st, 200, "{context}");
    assert!(!context.to_string().contains("secret"), "{context}");
    let (st, api) = conversation(&carla, &room).await;
    assert_eq!(st, 200, "{api}");
    assert!(!api.to_string().contains("secret"));
    let (st, body) = carla.join(&notes_room).await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    let (st, body) = carla
        .get(&format!("{V3}/rooms/{}/messages?dir=b", enc(&notes_room)))
        .await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
}

/// A customer may open a conversation for themselves with the desk, now and then, and nothing
/// more: not for others, not with their own priority, labels or contact.
#[tokio::test]
async fn a_customer_cannot_open_an_urgent_conversation_with_fifty_invitees() {
    let d = desk().await;
    let carla = d.s.user("carla").await;
    let mut participants = vec![json!("@carla:localhost")];
    for i in 0..49 {
        let name = format!("guest{i}");
        d.s.user(&name).await;
        participants.push(json!(format!("@{name}:localhost")));
    }
    let create = format!("{API}/conversations");
    let (st, body) = carla
        .post(
            &create,
            json!({
                "participants": participants, "priority": "urgent", "labels": ["vip"],
                "contact": {"name": "CEO", "organisation": "ACME"},
            }),
        )
        .await;
    assert_error(st, &body, 403, "M_FORBIDDEN");
    assert_eq!(body["field"], "participants");
    for (field, value) in [
        ("priority", json!("urgent")),
        ("labels", json!(["vip"])),
        ("contact", json!({"name": "CEO"})),
        ("channel", json!("whatsapp")),
    ] {
        let (st, body) = carla.post(&create, json!({ field: value })).await;
        assert_error(st, &body, 403, "M_FORBIDDEN");
        assert_eq!(body["field"], field);
    }
    let (_, listed) = d.boss.get(&create).await;
    assert_eq!(listed["conversations"], json!([]), "nothing was opened");

    // Their own conversation with the desk: the desk decides the rest.
    let (st, conv) = carla.post(&create, json!({})).await;
    assert_eq!(st, 200, "{conv}");
    assert_eq!(conv["priority"], "medium");
    assert_eq!(conv["labels"], json!([]));
    assert_eq!(conv["contact"]["id"], "@carla:localhost");
    let room = conv["room_id"].as_str().unwrap();
    let own = invites(&carla).await;
    assert_eq!(own.len(), 1, "{own:?}");
    assert!(own.contains_key(room));
    // Rate limited per user (burst 2 in this desk's config); staff are not.
    let (st, _) = carla
        .post(&create, json!({ "participants": ["@carla:localhost"] }))
        .await;
    assert_eq!(st, 200);
    let (st, body) = carla.post(&create, json!({})).await;
    assert_error(st, &body, 429, "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
    for _ in 0..3 {
        let (st, body) = d
            .boss
            .post(&create, json!({ "participants": ["@carla:localhost"] }))
            .await;
        assert_eq!(st, 200, "{body}");
    }
}

mod whatsapp_notes {
    //! The same for a WhatsApp customer: nothing of a note reaches the simulator.

    use super::*;
    use whatsapp::sim::{SimConfig, Simulator};

    const CUSTOMER: &str = "34600111222";

    #[tokio::test]
    async fn a_note_never_reaches_whatsapp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_addr = listener.local_addr().unwrap();
        let sim = Simulator::new(SimConfig::default());
        let _sim_server = sim.serve(listener).unwrap();
        let c = sim.config();
        let extra = format!(
            "[bridges.whatsapp]\nenabled = true\napi_base = \"http://{sim_addr}/v21.0\"\n\
             phone_number_id = \"{}\"\naccess_token = \"{}\"\napp_secret = \"{}\"\n\
             verify_token = \"verify-me\"\ninvite = [\"@agent:localhost\", \"{BOT}\"]\n\
             [support]\ngreeting = \"\"\nadmins = [\"@agent:localhost\"]\n",
            c.phone_number_id, c.access_token, c.app_secret
        );
        let s = TestServer::start_with(&extra).await;
        sim.set_webhook_url(&s.url("/bridges/whatsapp/webhook"));
        let agent = s.user("agent").await;
        let text = json!({"type": "text", "text": {"body": "Hola"}});
        let (_, webhook) = sim
            .customer_says(CUSTOMER, "María", None, false, text)
            .await
            .unwrap();
        assert_eq!(webhook.status, 200);
        let bridge = s.server.whatsapp.as_ref().unwrap().bridge().clone();
        let room = eventually("the portal", || async {
            let portal = bridge.store().portal(CUSTOMER).unwrap()?;
            (agent.join(portal.room_id.as_str()).await.0 == 200).then(|| portal.room_id.to_string())
        })
        .await;
        eventually("the desk's conversation", || async {
            (conversation(&agent, &room).await.0 == 200).then_some(())
        })
        .await;

        let path = format!("{V3}/rooms/{}/send/m.room.message/n1", enc(&room));
        let note = json!({"msgtype": "m.text", "body": "!note secret-one"});
        let (st, body) = agent.put(&path, note).await;
        assert_error(st, &body, 403, "M_FORBIDDEN");
        agent.send_text(&room, "n2", "!note").await;
        let notes_room = eventually("the notes room", || async {
            timeline(&agent, &room).await.into_iter().find_map(|e| {
                e["content"]["io.charla.notes_room"]
                    .as_str()
                    .map(str::to_owned)
            })
        })
        .await;
        assert_eq!(agent.join(&notes_room).await.0, 200);
        agent.send_text(&notes_room, "n3", "secret-two").await;
        let notes = format!("{API}/conversations/{}/notes", enc(&room));
        let (st, body) = agent.post(&notes, json!({"text": "secret-three"})).await;
        assert_eq!(st, 200, "{body}");
        // An answer after the notes: once it is at WhatsApp, so would they be.
        agent.send_text(&room, "a1", "visible answer").await;
        let sent = eventually("the answer at WhatsApp", || async {
            let sent = sim.sent();
            sent.iter()
                .any(|r| r.body["text"]["body"] == "visible answer")
                .then_some(sent)
        })
        .await;
        let all = serde_json::to_string(&sent.iter().map(|r| &r.body).collect::<Vec<_>>()).unwrap();
        assert!(!all.contains("secret"), "{all}");
        assert!(!all.contains("notes"), "{all}");
        assert_eq!(sent.len(), 1, "{all}");
    }
}
