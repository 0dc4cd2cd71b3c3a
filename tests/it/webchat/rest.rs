//! The seed's six endpoints: exact bodies, every validation and error code, and what agents
//! see of it in the room.

use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Customer, FAQ_ANSWER, GREETING, SHOP, ana_joins, ana_reads, eventually, is_iso, is_uuid,
    room_messages, room_of, site, site_with, token,
};
use crate::common::{V3, assert_error, enc};

fn user_msg(text: &str) -> (String, String) {
    ("user".into(), text.into())
}

fn support_msg(text: &str) -> (String, String) {
    ("support".into(), text.into())
}

#[tokio::test]
async fn a_session_opens_pending_with_the_greeting_and_only_one_at_a_time() {
    let site = site().await;
    let ana = Customer::new(&site.s, token("cust-1", "Ana Cliente"));

    let a = ana.get("/api/chat/session/active").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        json!({ "success": true, "data": null, "message": "Sesión obtenida exitosamente" })
    );

    let a = ana.post("/api/chat/session", json!({})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["success"], true);
    assert_eq!(a.body["message"], "Sesión creada exitosamente");
    let session = &a.body["data"];
    assert!(is_uuid(&session["id"]), "{session}");
    assert_eq!(session["userId"], "cust-1");
    assert_eq!(session["status"], "pending");
    assert!(
        is_iso(&session["createdAt"]) && is_iso(&session["lastMessageAt"]),
        "{session}"
    );
    let messages = session["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{session}");
    assert_eq!(messages[0]["sender"], "support");
    assert_eq!(messages[0]["message"], GREETING);
    assert_eq!(messages[0]["sessionId"], session["id"]);
    assert_eq!(messages[0]["isRead"], false);
    let id = session["id"].as_str().unwrap();

    let again = ana.post("/api/chat/session", json!({})).await;
    assert_eq!(again.status, 409);
    assert_eq!(
        again.body,
        json!({ "success": false, "message": "Ya tienes una sesión de chat activa" })
    );

    let a = ana.get("/api/chat/session/active").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["data"]["id"], id);
    assert_eq!(a.body["data"]["status"], "pending");

    // Agents see a web conversation with the customer as contact, in a room where the
    // customer is the web user with the token's name.
    let room = room_of(&site, "cust-1").await;
    let (st, conv) = site
        .boss
        .get(&format!("/api/support/v1/conversations/{}", enc(&room)))
        .await;
    assert_eq!(st, 200, "{conv}");
    assert_eq!(conv["channel"], "web");
    assert_eq!(conv["contact"]["name"], "Ana Cliente");
    let (st, profile) = site
        .ana
        .get(&format!("{V3}/profile/{}", enc("@web_cust-1:localhost")))
        .await;
    assert_eq!(st, 200, "{profile}");
    assert_eq!(profile["displayname"], "Ana Cliente");
}

#[tokio::test]
async fn messages_go_both_ways_in_order_with_read_marks_and_activation() {
    let site = site().await;
    let carla = Customer::new(&site.s, token("cust-2", "Carla"));
    let session = carla.open().await;
    let id = session["id"].as_str().unwrap();

    let sent = carla.say("Hola, necesito ayuda").await;
    assert!(is_uuid(&sent["id"]));
    assert_eq!(sent["sessionId"], id);
    assert_eq!(sent["message"], "Hola, necesito ayuda");
    assert_eq!(sent["sender"], "user");
    assert!(is_iso(&sent["timestamp"]));
    assert_eq!(sent["isRead"], false);

    // The agent reads it in the room, from the customer's web user.
    let room = room_of(&site, "cust-2").await;
    ana_joins(&site, &room).await;
    let events = room_messages(&site, &room).await;
    let from_carla = events
        .iter()
        .find(|e| e["content"]["body"] == "Hola, necesito ayuda")
        .expect("the customer's message is in the room");
    assert_eq!(from_carla["sender"], "@web_cust-2:localhost");

    // Still pending: the bot's greeting does not activate a session, an agent's answer does.
    assert_eq!(
        carla.get("/api/chat/session/active").await.body["data"]["status"],
        "pending"
    );
    site.ana.send_text(&room, "t1", "Claro, ¿qué pasó?").await;
    // Agents' commands and notes for agents never reach the customer.
    site.ana.send_text(&room, "t2", "!label vip").await;
    site.ana
        .send_message(
            &room,
            "t3",
            json!({ "msgtype": "m.notice", "body": "interno", "io.charla.internal": true }),
        )
        .await;
    let status = eventually(|| async {
        let s = carla.get("/api/chat/session/active").await.body["data"]["status"].clone();
        (s == "active").then_some(s)
    })
    .await;
    assert_eq!(status, "active");
    assert_eq!(
        carla.transcript(id).await,
        vec![
            support_msg(GREETING),
            user_msg("Hola, necesito ayuda"),
            support_msg("Claro, ¿qué pasó?"),
        ]
    );

    // The FAQ answer comes back as support's.
    carla.say("¿Cuál es el horario?").await;
    eventually(|| async {
        let t = carla.transcript(id).await;
        (t.last() == Some(&support_msg(FAQ_ANSWER))).then_some(())
    })
    .await;

    // An agent's read receipt marks the customer's messages read.
    let before = carla.messages(id).await;
    assert!(before.iter().all(|m| m["isRead"] == false), "{before:?}");
    let customer_event = room_messages(&site, &room)
        .await
        .into_iter()
        .rfind(|e| e["sender"] == "@web_cust-2:localhost")
        .unwrap();
    ana_reads(&site, &room, customer_event["event_id"].as_str().unwrap()).await;
    let after = carla.messages(id).await;
    for m in &after {
        let want = m["sender"] == "user";
        assert_eq!(m["isRead"], want, "{m}");
    }

    // The customer marks support's messages read: agents see the web user's receipt.
    let a = carla
        .patch(&format!("/api/chat/session/{id}/mark-read"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        json!({ "success": true, "message": "Mensajes marcados como leídos" })
    );
    assert!(carla.messages(id).await.iter().all(|m| m["isRead"] == true));
    let sync = site.ana.sync(None, 0).await;
    let receipts = &sync["rooms"]["join"][&room]["ephemeral"]["events"];
    let read_by_carla = receipts.as_array().unwrap().iter().any(|e| {
        e["type"] == "m.receipt" && e["content"].to_string().contains("@web_cust-2:localhost")
    });
    assert!(read_by_carla, "{receipts}");

    // lastMessageAt follows the newest message.
    let active = carla.get("/api/chat/session/active").await.body["data"].clone();
    let newest = after.last().unwrap()["timestamp"].clone();
    assert!(
        active["lastMessageAt"].as_str() >= newest.as_str(),
        "{active}"
    );
}

#[tokio::test]
async fn validations_and_errors_answer_the_seeds_bodies_and_change_nothing() {
    let site = site().await;
    let dani = Customer::new(&site.s, token("cust-3", "Dani"));

    // No session to write to.
    let a = dani
        .post("/api/chat/message", json!({ "message": "hola" }))
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(
        a.body,
        json!({ "success": false, "message": "Sesión de chat no encontrada" })
    );
    let id = dani.open().await["id"].as_str().unwrap().to_owned();

    let empty = json!({
        "success": false,
        "message": ["El mensaje no puede estar vacío"],
        "errors": { "message": ["El mensaje no puede estar vacío"] },
    });
    for body in [
        json!({ "message": "" }),
        json!({ "message": "   \n" }),
        json!({}),
    ] {
        let a = dani.post("/api/chat/message", body).await;
        assert_eq!(a.status, 400);
        assert_eq!(a.body, empty);
    }
    // 500 characters, not bytes: 500 two-byte letters pass, 501 do not.
    dani.say(&"ñ".repeat(500)).await;
    let a = dani
        .post("/api/chat/message", json!({ "message": "ñ".repeat(501) }))
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body["errors"]["message"],
        json!(["El mensaje no puede tener más de 500 caracteres"])
    );
    let a = dani
        .post("/api/chat/message", json!({ "message": 42 }))
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body["errors"]["message"],
        json!(["El mensaje debe ser texto"])
    );
    let a = dani
        .call(
            Method::POST,
            "/api/chat/message",
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["success"], false);
    let a = dani
        .call(Method::POST, "/api/chat/message", Some(vec![b' '; 20_000]))
        .await;
    assert_eq!(a.status, 413);
    assert_eq!(a.body["success"], false);
    // Only the valid message reached the room.
    assert_eq!(
        dani.transcript(&id).await,
        vec![support_msg(GREETING), user_msg(&"ñ".repeat(500))]
    );

    // Without a token, or with a bad one: 401, before anything is read.
    let invalid = json!({ "success": false, "message": "Token inválido o expirado" });
    let nobody = reqwest::Client::new();
    let r = nobody
        .get(site.s.url("/api/chat/session/active"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap(), invalid);
    let forged = Customer::new(&site.s, "abc.def.ghi".into());
    let a = forged.get("/api/chat/session/active").await;
    assert_eq!((a.status, a.body), (401, invalid));

    // Another customer's session: 403 on every door; a session that does not exist: 404.
    let eve = Customer::new(&site.s, token("cust-eve", "Eve"));
    let forbidden = json!({
        "success": false,
        "message": "No tienes permisos para acceder a esta sesión de chat",
    });
    for a in [
        eve.get(&format!("/api/chat/session/{id}/messages")).await,
        eve.patch(&format!("/api/chat/session/{id}/close")).await,
        eve.patch(&format!("/api/chat/session/{id}/mark-read"))
            .await,
    ] {
        assert_eq!((a.status, &a.body), (403, &forbidden));
    }
    for path in [
        "/api/chat/session/00000000-0000-4000-8000-000000000000/messages",
        "/api/chat/session/not-a-uuid/messages",
    ] {
        let a = eve.get(path).await;
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(a.body["message"], "Sesión de chat no encontrada");
    }
    // Eve's attempts changed nothing.
    assert_eq!(
        dani.get("/api/chat/session/active").await.body["data"]["status"],
        "pending"
    );
}

#[tokio::test]
async fn the_eleventh_message_in_a_minute_is_refused_with_retry_after() {
    let site = site().await;
    let fede = Customer::new(&site.s, token("cust-4", "Fede"));
    fede.open().await;
    for n in 0..10 {
        fede.say(&format!("mensaje {n}")).await;
    }
    let a = fede
        .post("/api/chat/message", json!({ "message": "uno más" }))
        .await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["success"], false);
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another customer is not affected.
    let gina = Customer::new(&site.s, token("cust-5", "Gina"));
    gina.open().await;
    gina.say("hola").await;
}

#[tokio::test]
async fn a_closed_session_stays_readable_and_a_new_one_can_start() {
    let site = site().await;
    let hugo = Customer::new(&site.s, token("cust-6", "Hugo"));
    let first = hugo.open().await["id"].as_str().unwrap().to_owned();
    hugo.say("primera").await;
    let room = room_of(&site, "cust-6").await;

    let a = hugo
        .patch(&format!("/api/chat/session/{first}/close"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        json!({ "success": true, "message": "Sesión cerrada exitosamente" })
    );
    // The conversation is closed for the agents too.
    let (_, conv) = site
        .boss
        .get(&format!("/api/support/v1/conversations/{}", enc(&room)))
        .await;
    assert_eq!(conv["status"], "closed", "{conv}");
    assert_eq!(
        hugo.get("/api/chat/session/active").await.body["data"],
        Value::Null
    );
    assert_eq!(
        hugo.post("/api/chat/message", json!({ "message": "¿hola?" }))
            .await
            .status,
        404
    );
    // Every message and state change is in the audit log, as the customer's, through the web
    // chat.
    let (st, audit) = site.boss.get("/api/support/v1/audit?limit=50").await;
    assert_eq!(st, 200, "{audit}");
    let mine: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "@web_cust-6:localhost")
        .map(|e| {
            assert_eq!(e["via"], "webchat", "{e}");
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for action in [
        "webchat.session.create",
        "webchat.message",
        "webchat.session.close",
    ] {
        assert!(
            mine.contains(&(action.to_owned(), first.clone())),
            "{action} missing: {mine:?}"
        );
    }
    assert!(
        mine.iter()
            .any(|(a, t)| a == "conversation.close" && *t == room),
        "{mine:?}"
    );

    // History: the closed session's messages stay readable.
    assert_eq!(
        hugo.transcript(&first).await,
        vec![support_msg(GREETING), user_msg("primera")]
    );

    // A new session; an agent closes it with `!close`: closed for the customer too.
    let second = hugo.open().await["id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let room2 = eventually(|| async {
        let (_, body) = site
            .boss
            .get("/api/support/v1/conversations?channel=web")
            .await;
        body["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["contact"]["id"] == "cust-6" && c["room_id"] != room.as_str())
            .map(|c| c["room_id"].as_str().unwrap().to_owned())
    })
    .await;
    ana_joins(&site, &room2).await;
    site.ana.send_text(&room2, "c1", "!close").await;
    eventually(|| async {
        let a = hugo.get("/api/chat/session/active").await;
        a.body["data"].is_null().then_some(())
    })
    .await;
    let history = hugo.get("/api/chat/sessions").await;
    assert_eq!(history.status, 200);
    let list = history.body["data"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], second.as_str());
    assert_eq!(list[0]["status"], "closed");
    assert_eq!(list[1]["id"], first.as_str());
    assert_eq!(list[1]["status"], "closed");
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_session_loses_nothing() {
    let site = site().await;
    let ines = Customer::new(&site.s, token("cust-7", "Inés"));
    let id = ines.open().await["id"].as_str().unwrap().to_owned();
    ines.say("antes del reinicio").await;
    let s = site.s.restart().await;
    let ines = Customer::new(&s, ines.token.clone());
    let a = ines.get("/api/chat/session/active").await;
    assert_eq!(a.body["data"]["id"], id.as_str());
    ines.say("después del reinicio").await;
    assert_eq!(
        ines.transcript(&id).await,
        vec![
            support_msg(GREETING),
            user_msg("antes del reinicio"),
            user_msg("después del reinicio"),
        ]
    );
}

#[tokio::test]
async fn pages_of_other_origins_are_refused_and_allowed_ones_get_cors() {
    let site = site().await;
    let mut jose = Customer::new(&site.s, token("cust-8", "José"));
    jose.origin = Some("https://evil.example.com");
    let a = jose.post("/api/chat/session", json!({})).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.body["success"], false);
    jose.origin = Some(SHOP);
    let a = jose.get("/api/chat/session/active").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["access-control-allow-origin"], SHOP);

    // A preflight from another origin gets no CORS grant; the Matrix API still answers any.
    let http = reqwest::Client::new();
    let preflight = |path: &str, origin: &str| {
        http.request(Method::OPTIONS, site.s.url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
    };
    let r = preflight("/api/chat/message", "https://evil.example.com")
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = preflight("/api/chat/message", SHOP).await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], SHOP);
    let r = preflight(&format!("{V3}/login"), "https://any.example.org")
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://any.example.org"
    );
}

#[tokio::test]
async fn nobody_registers_a_web_customers_user_id() {
    let site = site_with("").await;
    let (status, body) = site
        .s
        .client()
        .post(
            &format!("{V3}/register"),
            json!({ "username": "web_cust-9", "password": "secret-pw",
                    "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");
}

#[tokio::test]
async fn the_widget_and_its_demo_are_served() {
    let site = site().await;
    let http = reqwest::Client::new();
    for (path, kind, marker) in [
        ("/widget/charla.js", "text/javascript", "CharlaChat"),
        ("/widget/charla.css", "text/css", "charla-"),
        ("/widget/", "text/html", "charla.js"),
    ] {
        let r = http.get(site.s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(r.text().await.unwrap().contains(marker), "{path}");
    }
}

#[tokio::test]
async fn an_agents_edit_changes_the_text_the_customer_sees_under_the_same_id() {
    let site = site().await;
    let olga = Customer::new(&site.s, token("cust-edit", "Olga"));
    let id = olga.open().await["id"].as_str().unwrap().to_owned();
    let room = room_of(&site, "cust-edit").await;
    ana_joins(&site, &room).await;
    let typo = site.ana.send_text(&room, "e1", "Hola, Olgaa").await;
    let before = eventually(|| async {
        let messages = olga.messages(&id).await;
        messages.into_iter().find(|m| m["message"] == "Hola, Olgaa")
    })
    .await;
    let edit = json!({
        "msgtype": "m.text",
        "body": "* Hola, Olga",
        "m.new_content": { "msgtype": "m.text", "body": "Hola, Olga" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": typo },
    });
    site.ana.send_message(&room, "e2", edit).await;
    let messages = olga.messages(&id).await;
    let after = messages.iter().find(|m| m["id"] == before["id"]).unwrap();
    assert_eq!(after["message"], "Hola, Olga");
    assert_eq!(after["timestamp"], before["timestamp"]);
    assert_eq!(
        messages.iter().filter(|m| m["sender"] == "support").count(),
        2,
        "the greeting and the edited answer, no extra message: {messages:?}"
    );
}
