//! Attack tests: the WhatsApp bridge on a bad day (issue #18, items 2 and 17).
//!
//! - Closed registration must not shut WhatsApp customers out: an appservice registers the
//!   users of its namespace whatever `registration.mode` says (as Synapse).
//! - A refusal an operator can fix (a registration whose namespace misses the puppets) keeps
//!   the acknowledged messages and delivers them, in order, once it is fixed; a message the
//!   homeserver can never take is set aside (kept, counted) without blocking anyone.
//! - `kill -9` of the real binary, again and again, during webhooks, agent sends and statuses:
//!   one portal room per customer, every acknowledged message once and in order, every agent
//!   message at WhatsApp, every final delivery state shown.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use whatsapp::sim::{SimConfig, SimServer, Simulator};

use crate::common::{Client, TestServer, V3, assert_error, enc};
use crate::whatsapp_bridge::{text, wait_for};

mod kill;

const BOT: &str = "@whatsappbot:localhost";

fn puppet(phone: &str) -> String {
    format!("@whatsapp_{phone}:localhost")
}

/// A client of the bridge's appservice token, acting as its bot: it is in every portal.
fn bot_client(base: &str, registration: &std::path::Path) -> Client {
    let registration = appservice::Registration::from_file(registration).unwrap();
    Client {
        http: reqwest::Client::new(),
        base: base.to_owned(),
        token: Some(registration.as_token),
    }
}

/// The texts `sender` posted in `room`, oldest first.
async fn texts_from(client: &Client, room: &str, sender: &str) -> Vec<String> {
    let mut texts = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("{V3}/rooms/{}/messages?dir=b&limit=500", enc(room));
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        let (status, page) = client.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let chunk = page["chunk"].as_array().unwrap();
        for event in chunk {
            if event["type"] == "m.room.message" && event["sender"] == sender {
                texts.push(
                    event["content"]["body"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    texts.reverse();
    texts
}

/// The portal rooms the bridge bot is in, by the customer their `m.bridge` state names.
async fn portals_by_customer(bot: &Client) -> BTreeMap<String, Vec<String>> {
    try_portals(bot, &BTreeMap::new())
        .await
        .expect("the server answers")
}

/// Like [`portals_by_customer`], leaving out the rooms in `known`; `None` once the server is
/// gone.
async fn try_portals(
    bot: &Client,
    known: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, Vec<String>>> {
    let (status, joined) = call(
        bot,
        reqwest::Method::GET,
        &format!("{V3}/joined_rooms"),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{joined}");
    let mut portals: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for room in joined["joined_rooms"].as_array().unwrap() {
        let room = room.as_str().unwrap();
        if known.contains_key(room) {
            continue;
        }
        let path = format!("{V3}/rooms/{}/state", enc(room));
        let (status, state) = call(bot, reqwest::Method::GET, &path, None).await?;
        assert_eq!(status, 200, "{state}");
        for event in state.as_array().unwrap() {
            if event["type"] == "m.bridge" {
                let customer = event["content"]["channel"]["id"].as_str().unwrap();
                portals
                    .entry(customer.to_owned())
                    .or_default()
                    .push(room.to_owned());
            }
        }
    }
    Some(portals)
}

/// A request that may meet a killed server: `None` without an answer.
async fn call(
    client: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut request = client
        .http
        .request(method, format!("{}{path}", client.base));
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.ok()?;
    let status = answer.status().as_u16();
    let body = answer.json().await.unwrap_or(Value::Null);
    Some((status, body))
}

/// A Charla with the bridge in process and the simulator, configured by `bridge` (keys of
/// `[bridges.whatsapp]`) and `tables` (more TOML tables).
async fn bridged(bridge: &str, tables: &str) -> (TestServer, Simulator, SimServer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_addr = listener.local_addr().unwrap();
    let sim = Simulator::new(SimConfig {
        status_delay_ms: 5,
        ..SimConfig::default()
    });
    let sim_server = sim.serve(listener).unwrap();
    let s = TestServer::start_with(&bridge_config(
        &sim,
        &format!("http://{sim_addr}/v21.0"),
        bridge,
        tables,
    ))
    .await;
    sim.set_webhook_url(&s.url("/bridges/whatsapp/webhook"));
    (s, sim, sim_server)
}

fn bridge_config(sim: &Simulator, api_base: &str, bridge: &str, tables: &str) -> String {
    let c = sim.config();
    format!(
        "[bridges.whatsapp]\nenabled = true\napi_base = \"{api_base}\"\n\
         phone_number_id = \"{}\"\naccess_token = \"{}\"\napp_secret = \"{}\"\n\
         verify_token = \"verify-me\"\nmax_retry_secs = 1\nacceptance_wait_ms = 60000\n{bridge}\n{tables}\n",
        c.phone_number_id, c.access_token, c.app_secret
    )
}

/// A customer's text through a signed webhook, acknowledged.
async fn customer_says(sim: &Simulator, phone: &str, body: &str) -> String {
    let (wamid, hook) = sim
        .customer_says(phone, "María", None, false, text(body))
        .await
        .unwrap();
    assert_eq!(hook.status, 200, "webhook refused");
    wamid
}

/// The room of the customer's portal, once the bridge saved it.
async fn portal_room(bridge: &whatsapp::Bridge, phone: &str) -> String {
    wait_for("the portal", || async {
        bridge
            .store()
            .portal(phone)
            .unwrap()
            .map(|p| p.room_id.to_string())
    })
    .await
}

/// The portal's customer texts, once `want` arrived.
async fn wait_texts(bot: &Client, room: &str, phone: &str, want: &[&str]) {
    let sender = puppet(phone);
    wait_for("the customer's messages", || async {
        let texts = texts_from(bot, room, &sender).await;
        (texts == want).then_some(())
    })
    .await;
}

/// The appservice branch of `/register` comes before the registration mode, as in Synapse:
/// with `mode = "closed"` people cannot sign up, and an appservice still registers the users
/// of its namespace, exclusive or not, and nothing outside it or in another's exclusive one.
#[tokio::test]
async fn closed_registration_still_lets_appservices_register_their_users() {
    let dir = tempfile::tempdir().unwrap();
    let registration = |id: &str, token: &str, users: &str| {
        let file = dir.path().join(format!("{id}.yaml"));
        std::fs::write(
            &file,
            format!(
                "id: {id}\nurl: null\nas_token: {token}\nhs_token: hs-{token}\n\
                 sender_localpart: {id}bot\nnamespaces:\n  users:\n{users}"
            ),
        )
        .unwrap();
        file
    };
    let bridge = registration(
        "bridge",
        "as-bridge",
        "    - exclusive: true\n      regex: '@whatsapp_.*:localhost'\n    \
         - exclusive: false\n      regex: '@shared_.*:localhost'\n",
    );
    let other = registration(
        "other",
        "as-other",
        "    - exclusive: true\n      regex: '@shared_vip_.*:localhost'\n",
    );
    let s = TestServer::start_with(&format!(
        "[registration]\nmode = \"closed\"\n[appservice]\nregistrations = [{bridge:?}, {other:?}]\n"
    ))
    .await;
    let register = |token: Option<&str>, body: Value| {
        let mut c = s.client();
        c.token = token.map(str::to_owned);
        async move { c.post(&format!("{V3}/register"), body).await }
    };
    let as_user = |username: &str, inhibit_login: bool| {
        json!({"type": "m.login.application_service", "username": username,
               "inhibit_login": inhibit_login})
    };

    // People: still closed.
    let (status, body) = register(
        None,
        json!({"username": "alice", "password": "pw-pw-pw", "auth": {"type": "m.login.dummy"}}),
    )
    .await;
    assert_error(status, &body, 403, "M_FORBIDDEN");

    // The appservice's exclusive namespace, without a session.
    let (status, body) = register(Some("as-bridge"), as_user("whatsapp_34600111222", true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@whatsapp_34600111222:localhost");
    assert!(body.get("access_token").is_none(), "{body}");
    // With a session unless inhibit_login.
    let (status, body) = register(Some("as-bridge"), as_user("whatsapp_2", false)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["access_token"].is_string() && body["device_id"].is_string(),
        "{body}"
    );
    // Its non-exclusive namespace too.
    let (status, body) = register(Some("as-bridge"), as_user("shared_1", true)).await;
    assert_eq!(status, 200, "{body}");
    // Not twice, not outside its namespace, not in another appservice's exclusive one.
    let (status, body) = register(Some("as-bridge"), as_user("whatsapp_2", true)).await;
    assert_error(status, &body, 400, "M_USER_IN_USE");
    let (status, body) = register(Some("as-bridge"), as_user("mallory", true)).await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");
    let (status, body) = register(Some("as-bridge"), as_user("shared_vip_1", true)).await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");
    let (status, body) = register(Some("as-other"), as_user("shared_vip_1", true)).await;
    assert_eq!(status, 200, "{body}");
}

/// The bug as a customer met it: with registration closed, the puppet's registration was
/// refused, the inbox took the 403 for final and dropped messages Meta had its 200 for.
#[tokio::test]
async fn with_registration_closed_customers_messages_still_arrive() {
    let (s, sim, _sim_server) = bridged("", "[registration]\nmode = \"closed\"\n").await;
    let phone = "34600111222";
    customer_says(&sim, phone, "Hola").await;
    customer_says(&sim, phone, "¿Hay alguien?").await;
    let bridge = s.server.whatsapp.as_ref().unwrap().bridge().clone();
    let room = portal_room(&bridge, phone).await;
    let bot = bot_client(
        &s.server.base_url(),
        &s.data_path().join("bridges/whatsapp/registration.yaml"),
    );
    wait_texts(&bot, &room, phone, &["Hola", "¿Hay alguien?"]).await;
}

/// A refusal an operator can fix: the bridge's registration file names a users namespace that
/// misses the puppets (`M_EXCLUSIVE` on their registration). The acknowledged messages are
/// kept (held, counted in the backlog) and arrive, in order and once, after the operator fixes
/// the file and restarts.
#[tokio::test]
async fn messages_refused_for_a_fixable_reason_are_kept_and_arrive_after_the_fix() {
    let file = tempfile::tempdir().unwrap();
    let registration = file.path().join("registration.yaml");
    let write = |users: &str| {
        std::fs::write(
            &registration,
            format!(
                "id: whatsapp\nurl: null\nas_token: as-wa\nhs_token: hs-wa\n\
                 sender_localpart: whatsappbot\nrate_limited: false\nreceive_ephemeral: true\n\
                 namespaces:\n  users:\n    - exclusive: true\n      regex: '{users}'\n"
            ),
        )
        .unwrap()
    };
    // A typo: `whatsap_` for `whatsapp_`.
    write("@whatsap_.*:localhost");
    let (s, sim, _sim_server) = bridged(&format!("registration = {registration:?}"), "").await;
    let phone = "34600111222";
    for body in ["uno", "dos", "tres"] {
        customer_says(&sim, phone, body).await;
    }
    let bridge = s.server.whatsapp.as_ref().unwrap().bridge().clone();
    // Refused and held, not dropped: the gauges say so.
    let backlog = wait_for("the messages to be held", || async {
        let backlog = bridge.backlog();
        (backlog.held == 3).then_some(backlog)
    })
    .await;
    assert_eq!(backlog.held_customers, 1);
    assert_eq!(backlog.inbox_waiting, 0);
    assert_eq!(backlog.dead_letters, 0);
    assert!(
        backlog
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("M_EXCLUSIVE"),
        "{backlog:?}"
    );
    assert!(bridge.store().portal(phone).unwrap().is_none());
    drop(bridge);

    // The operator fixes the namespace and restarts.
    write("@whatsapp_.*:localhost");
    let s = s.restart().await;
    sim.set_webhook_url(&s.url("/bridges/whatsapp/webhook"));
    let bridge = s.server.whatsapp.as_ref().unwrap().bridge().clone();
    let room = portal_room(&bridge, phone).await;
    let bot = bot_client(&s.server.base_url(), &registration);
    wait_texts(&bot, &room, phone, &["uno", "dos", "tres"]).await;
    // Later messages follow them.
    customer_says(&sim, phone, "cuatro").await;
    wait_texts(&bot, &room, phone, &["uno", "dos", "tres", "cuatro"]).await;
    let backlog = bridge.backlog();
    assert_eq!(
        (backlog.held, backlog.held_customers),
        (0, 0),
        "{backlog:?}"
    );
}

/// A message the homeserver can never take (an event over 64 KiB: 413 `M_TOO_LARGE`) is tried
/// a few times, then set aside in the dead-letter table with the refusal; meanwhile other
/// customers go on, and its customer's next message arrives after it. The agents are told.
#[tokio::test]
async fn a_message_the_homeserver_cannot_take_is_set_aside_without_blocking_anyone() {
    let (s, sim, _sim_server) = bridged("", "").await;
    let (poisoned, other) = ("34600111222", "34600333444");
    let huge = "a".repeat(70_000);
    let wamid = customer_says(&sim, poisoned, &huge).await;
    customer_says(&sim, poisoned, "después").await;
    customer_says(&sim, other, "Hola").await;
    let bridge = s.server.whatsapp.as_ref().unwrap().bridge().clone();
    let bot = bot_client(
        &s.server.base_url(),
        &s.data_path().join("bridges/whatsapp/registration.yaml"),
    );
    let other_room = portal_room(&bridge, other).await;
    wait_texts(&bot, &other_room, other, &["Hola"]).await;

    let room = portal_room(&bridge, poisoned).await;
    wait_texts(&bot, &room, poisoned, &["después"]).await;
    let letters = bridge.store().dead_letters().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].item.wamid(), wamid);
    assert_eq!(letters[0].portal, poisoned);
    assert_eq!(letters[0].attempts, whatsapp::backlog::DEAD_LETTER_AFTER);
    assert!(
        letters[0].error.contains("M_TOO_LARGE"),
        "{}",
        letters[0].error
    );
    let backlog = bridge.backlog();
    assert_eq!((backlog.dead_letters, backlog.held), (1, 0), "{backlog:?}");
    let told = texts_from(&bot, &room, BOT).await;
    assert!(
        told.iter()
            .any(|t| t.starts_with("A message from the customer cannot be shown here")),
        "{told:?}"
    );
}

/// The crash this guards against, made on purpose: the homeserver kept only the beginning of
/// a new portal's `createRoom` (its events are written one by one): the `m.bridge` state, no
/// conversation state, no name, no invite for the puppet; and the bridge's intent has no room
/// in it. The customer's message goes to that room, completed; no second room is created.
#[tokio::test]
async fn a_portal_room_cut_short_by_a_crash_is_found_completed_and_used() {
    let (s, sim, _sim_server) = bridged("", "").await;
    let phone = "34600111222";
    let bridge = s.server.whatsapp.as_ref().unwrap().bridge().clone();
    let state_key = format!(
        "io.charla.whatsapp://whatsapp/{}/{phone}",
        sim.config().phone_number_id
    );
    let options = appservice::CreateRoom {
        initial_state: vec![appservice::InitialState::new(
            "m.bridge",
            state_key,
            &json!({"channel": {"id": phone}}),
        )],
        ..Default::default()
    };
    let cut_short = bridge.bot().create_room(&options).await.unwrap();
    let intent = whatsapp::store::PortalIntent {
        room_id: None,
        since_ms: 1,
    };
    let ticket = bridge.store().record_portal_intent(phone, &intent).unwrap();
    bridge.store().durable(ticket).await.unwrap();

    customer_says(&sim, phone, "Hola").await;
    let portal = wait_for("the portal", || async {
        bridge.store().portal(phone).unwrap()
    })
    .await;
    assert_eq!(portal.room_id, cut_short);
    let bot = bot_client(
        &s.server.base_url(),
        &s.data_path().join("bridges/whatsapp/registration.yaml"),
    );
    wait_texts(&bot, cut_short.as_str(), phone, &["Hola"]).await;
    let portals = portals_by_customer(&bot).await;
    assert_eq!(portals[phone], vec![cut_short.to_string()]);
    assert!(bridge.store().portal_intent(phone).unwrap().is_none());
    // Completed as the bridge creates portals.
    let room = enc(cut_short.as_str());
    let (_, name) = bot
        .get(&format!("{V3}/rooms/{room}/state/m.room.name/"))
        .await;
    assert_eq!(name["name"], "María");
    let (status, conversation) = bot
        .get(&format!("{V3}/rooms/{room}/state/io.charla.conversation/"))
        .await;
    assert_eq!(status, 200, "{conversation}");
    assert_eq!(conversation["channel"], "whatsapp");
    assert_eq!(conversation["contact"]["id"], phone);
}
