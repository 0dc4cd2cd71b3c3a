//! The WhatsApp bridge end to end: a real Charla running the bridge in process (talking to it
//! only through the Application Service API) and the Cloud API simulator, over loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{Client, TestServer, V3, enc, metrics::scrape};
use serde_json::{Value, json};
use whatsapp::Bridge;
use whatsapp::sim::{Fault, SimConfig, SimServer, Simulator};

const CUSTOMER: &str = "34600111222";
const PUPPET: &str = "@whatsapp_34600111222:localhost";
const BOT: &str = "@whatsappbot:localhost";

struct Rig {
    s: TestServer,
    sim: Simulator,
    sim_server: Option<SimServer>,
    sim_addr: SocketAddr,
    agent: Client,
}

impl Rig {
    /// WhatsApp sends `sent` and `delivered` 5 ms after each message; the bridge waits a
    /// minute for `sent` before it shows an acceptance on its own, so `sent` always overtakes.
    async fn start() -> Self {
        let sim = SimConfig {
            status_delay_ms: 5,
            ..SimConfig::default()
        };
        Self::start_with(sim, 60_000).await
    }

    async fn start_with(sim: SimConfig, acceptance_wait_ms: u64) -> Self {
        Self::start_configured(sim, acceptance_wait_ms, false).await
    }

    /// With `support_desk` the support bot is invited to every portal too, as in the shipped
    /// `config.toml`, so each portal is a conversation of the desk (the bot greets nobody), and
    /// the agent is a desk admin.
    async fn start_configured(sim: SimConfig, acceptance_wait_ms: u64, support_desk: bool) -> Self {
        let (invite, desk) = if support_desk {
            (
                r#"["@agent:localhost", "@support:localhost"]"#,
                "[support]\ngreeting = \"\"\nadmins = [\"@agent:localhost\"]\n",
            )
        } else {
            (r#"["@agent:localhost"]"#, "")
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_addr = listener.local_addr().unwrap();
        let sim = Simulator::new(sim);
        let sim_server = sim.serve(listener).unwrap();
        let c = sim.config();
        let extra = format!(
            "[bridges.whatsapp]\nenabled = true\napi_base = \"http://{sim_addr}/v21.0\"\n\
             phone_number_id = \"{}\"\naccess_token = \"{}\"\napp_secret = \"{}\"\n\
             verify_token = \"verify-me\"\ninvite = {invite}\n\
             bot_templates = [\"greeting\"]\nmax_retry_secs = 1\n\
             acceptance_wait_ms = {acceptance_wait_ms}\n{desk}\
             [metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
            c.phone_number_id, c.access_token, c.app_secret
        );
        let s = TestServer::start_with(&extra).await;
        sim.set_webhook_url(&s.url("/bridges/whatsapp/webhook"));
        let agent = s.user("agent").await;
        Rig {
            s,
            sim,
            sim_server: Some(sim_server),
            sim_addr,
            agent,
        }
    }

    /// A rig whose WhatsApp sends no status on its own (the test sends them), with the portal
    /// of a customer who wrote "Hola"; returns the portal room too.
    async fn with_manual_statuses(acceptance_wait_ms: u64) -> (Self, String) {
        let sim = SimConfig {
            auto_statuses: false,
            ..SimConfig::default()
        };
        let rig = Self::start_with(sim, acceptance_wait_ms).await;
        rig.customer(text("Hola")).await;
        let room = rig.portal().await;
        rig.event_with_body(&room, "Hola").await;
        (rig, room)
    }

    fn bridge(&self) -> &Arc<Bridge> {
        self.s
            .server
            .whatsapp
            .as_ref()
            .expect("bridge runs")
            .bridge()
    }

    /// A customer's message through a signed webhook; returns its wamid.
    async fn customer(&self, message: Value) -> String {
        let (wamid, webhook) = self
            .sim
            .customer_says(CUSTOMER, "María", None, false, message)
            .await
            .unwrap();
        assert_eq!(webhook.status, 200, "webhook refused");
        wamid
    }

    /// The customer's portal, once it exists, joined by the agent.
    async fn portal(&self) -> String {
        let room = wait_for("the portal", || async {
            self.bridge()
                .store()
                .portal(CUSTOMER)
                .unwrap()
                .map(|p| p.room_id.to_string())
        })
        .await;
        wait_for("the agent's join", || async {
            (self.agent.join(&room).await.0 == 200).then_some(())
        })
        .await;
        room
    }

    /// Every event of the room, oldest first.
    async fn events(&self, room: &str) -> Vec<Value> {
        let (status, page) = self
            .agent
            .get(&format!(
                "{V3}/rooms/{}/messages?dir=b&limit=200",
                enc(room)
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        let mut events = page["chunk"].as_array().unwrap().clone();
        events.reverse();
        events
    }

    /// The room's event whose content has `body`, once it is there.
    async fn event_with_body(&self, room: &str, body: &str) -> Value {
        wait_for(body, || async {
            self.events(room)
                .await
                .into_iter()
                .find(|e| e["content"]["body"] == body)
        })
        .await
    }

    async fn send(&self, room: &str, txn: &str, content: Value) -> String {
        let path = format!("{V3}/rooms/{}/send/m.room.message/{txn}", enc(room));
        let (status, body) = self.agent.put(&path, content).await;
        assert_eq!(status, 200, "{body}");
        body["event_id"].as_str().unwrap().to_owned()
    }

    async fn sent_bodies(&self, count: usize) -> Vec<Value> {
        wait_for("messages at the simulator", || async {
            let sent = self.sim.sent();
            (sent.len() >= count).then(|| sent.into_iter().map(|r| r.body).collect())
        })
        .await
    }

    /// The `com.beeper.message_send_status` events about `event_id`, oldest first, as
    /// `[status, delivered_to_users]`; each is from the bridge bot.
    async fn send_statuses(&self, room: &str, event_id: &str) -> Vec<String> {
        self.events(room)
            .await
            .into_iter()
            .filter(|e| {
                e["type"] == "com.beeper.message_send_status"
                    && e["content"]["m.relates_to"]["event_id"] == event_id
            })
            .map(|e| {
                assert_eq!(e["sender"], BOT);
                json!([e["content"]["status"], e["content"]["delivered_to_users"]]).to_string()
            })
            .collect()
    }

    /// An agent's text that WhatsApp refuses for good with `code`; its event id and the
    /// failure the bridge recorded.
    async fn send_refused(
        &self,
        room: &str,
        txn: &str,
        body: &str,
        code: i64,
    ) -> (String, whatsapp::store::Delivery) {
        self.sim.set_fault(Fault::Error { code, count: 1 });
        let event = self
            .send(room, txn, json!({"msgtype": "m.text", "body": body}))
            .await;
        let failed = self.delivery_status(&event, "failed").await;
        assert_eq!(failed.error_code, Some(code));
        (event, failed)
    }

    async fn delivery_status(&self, event_id: &str, status: &str) -> whatsapp::store::Delivery {
        wait_for(status, || async {
            self.bridge()
                .delivery(event_id)
                .filter(|d| d.status == status)
        })
        .await
    }
}

/// Polls until `check` gives a value; fails the test after a generous deadline.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(crate) fn text(body: &str) -> Value {
    json!({"type": "text", "text": {"body": body}})
}

fn text_to_customer(body: &str) -> Value {
    json!({
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
        "type": "text", "text": {"preview_url": false, "body": body}
    })
}

#[tokio::test]
async fn customer_messages_reach_the_portal_with_the_right_puppet_and_content() {
    let rig = Rig::start().await;
    let hola = rig.customer(text("Hola, necesito ayuda")).await;
    let room = rig.portal().await;

    let first = rig.event_with_body(&room, "Hola, necesito ayuda").await;
    assert_eq!(first["sender"], PUPPET);
    assert_eq!(first["type"], "m.room.message");
    assert_eq!(
        first["content"],
        json!({"msgtype": "m.text", "body": "Hola, necesito ayuda"})
    );

    let (status, conversation) = rig
        .agent
        .get(&format!(
            "{V3}/rooms/{}/state/io.charla.conversation/",
            enc(&room)
        ))
        .await;
    assert_eq!(status, 200, "{conversation}");
    assert_eq!(
        conversation,
        json!({
            "status": "open", "priority": "medium", "labels": [], "assignee": null,
            "channel": "whatsapp",
            "contact": {"name": "María", "phone": "+34600111222", "id": CUSTOMER, "organisation": null},
            "product_id": null, "order_id": null, "first_customer_message_ts": null,
            "first_agent_response_ts": null, "resolved_ts": null
        })
    );
    let key = format!(
        "io.charla.whatsapp://whatsapp/{}/{CUSTOMER}",
        rig.sim.config().phone_number_id
    );
    let (status, bridge) = rig
        .agent
        .get(&format!(
            "{V3}/rooms/{}/state/m.bridge/{}",
            enc(&room),
            enc(&key)
        ))
        .await;
    assert_eq!(status, 200, "{bridge}");
    assert_eq!(bridge["bridgebot"], BOT);
    assert_eq!(
        bridge["channel"],
        json!({"id": CUSTOMER, "displayname": "María"})
    );
    let (_, name) = rig
        .agent
        .get(&format!("{V3}/profile/{}/displayname", enc(PUPPET)))
        .await;
    assert_eq!(name, json!({"displayname": "María"}));

    // An image: the bytes in Charla's media repository are WhatsApp's bytes.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let media_id = rig
        .sim
        .store_media(bytes.clone().into(), "image/jpeg", None);
    rig.customer(json!({"type": "image", "image": {"id": media_id, "caption": "Foto del router"}}))
        .await;
    let image = rig.event_with_body(&room, "Foto del router").await;
    assert_eq!(image["sender"], PUPPET);
    let content = &image["content"];
    assert_eq!(content["msgtype"], "m.image");
    assert_eq!(content["filename"], "image.jpg");
    assert_eq!(
        content["info"],
        json!({"mimetype": "image/jpeg", "size": 5000})
    );
    let mxc = content["url"]
        .as_str()
        .unwrap()
        .strip_prefix("mxc://")
        .unwrap()
        .to_owned();
    let downloaded = reqwest::Client::new()
        .get(
            rig.s
                .url(&format!("/_matrix/client/v1/media/download/{mxc}")),
        )
        .bearer_auth(rig.agent.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(downloaded.status(), 200);
    assert_eq!(downloaded.bytes().await.unwrap().as_ref(), bytes.as_slice());

    // A location.
    rig.customer(json!({"type": "location", "location": {
        "latitude": 40.4168, "longitude": -3.7038, "name": "Oficina", "address": "Gran Vía 1, Madrid"}}))
        .await;
    let location = rig
        .event_with_body(&room, "Oficina, Gran Vía 1, Madrid")
        .await;
    assert_eq!(location["sender"], PUPPET);
    assert_eq!(
        location["content"],
        json!({"msgtype": "m.location", "body": "Oficina, Gran Vía 1, Madrid", "geo_uri": "geo:40.4168,-3.7038"})
    );

    // A reply to the first message becomes a Matrix reply.
    rig.customer(json!({"type": "text", "text": {"body": "Eso que dije"},
                        "context": {"from": CUSTOMER, "id": hola}}))
        .await;
    let reply = rig.event_with_body(&room, "Eso que dije").await;
    assert_eq!(
        reply["content"]["m.relates_to"],
        json!({"m.in_reply_to": {"event_id": first["event_id"]}})
    );

    // All of it, in order, from the puppet only.
    let from_customer: Vec<Value> = rig
        .events(&room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| json!([e["sender"], e["content"]["body"]]))
        .collect();
    assert_eq!(
        from_customer,
        vec![
            json!([PUPPET, "Hola, necesito ayuda"]),
            json!([PUPPET, "Foto del router"]),
            json!([PUPPET, "Oficina, Gran Vía 1, Madrid"]),
            json!([PUPPET, "Eso que dije"]),
        ]
    );
}

#[tokio::test]
async fn agent_replies_reach_whatsapp_and_statuses_come_back() {
    let rig = Rig::start().await;
    let hola = rig.customer(text("Hola")).await;
    let room = rig.portal().await;
    let customer_event = rig.event_with_body(&room, "Hola").await["event_id"].clone();

    // Commands, notes and internal messages stay in Matrix.
    rig.send(
        &room,
        "n1",
        json!({"msgtype": "m.text", "body": "!note cliente VIP"}),
    )
    .await;
    rig.send(
        &room,
        "n2",
        json!({"msgtype": "m.notice", "body": "sugerencia", "io.charla.internal": true}),
    )
    .await;
    let answer = rig
        .send(
            &room,
            "a1",
            json!({"msgtype": "m.text", "body": "Buenos días, ¿en qué puedo ayudar?"}),
        )
        .await;
    let sent = rig.sent_bodies(1).await;
    assert_eq!(
        sent,
        vec![text_to_customer("Buenos días, ¿en qué puedo ayudar?")]
    );

    // A reply carries the customer's wamid as context.
    rig.send(
        &room,
        "a2",
        json!({"msgtype": "m.text", "body": "> <@whatsapp_34600111222:localhost> Hola\n\nClaro",
        "m.relates_to": {"m.in_reply_to": {"event_id": customer_event}}}),
    )
    .await;
    let sent = rig.sent_bodies(2).await;
    let mut expected = text_to_customer("Claro");
    expected["context"] = json!({"message_id": hola});
    assert_eq!(sent[1], expected);

    // sent + delivered come on their own; read when the customer reads.
    let delivered = rig.delivery_status(&answer, "delivered").await;
    let wamid = delivered.wamid.clone().unwrap();
    assert_eq!(wamid, rig.sim.sent()[0].wamid);
    assert_eq!(rig.sim.send_status(&wamid, "read").await.unwrap(), 200);
    rig.delivery_status(&answer, "read").await;
    let sync = rig.agent.sync(None, 0).await;
    let receipts = sync["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .cloned()
        .unwrap();
    let readers = &receipts["content"][&answer]["m.read"];
    assert!(readers[PUPPET]["ts"].is_u64(), "{receipts}");
    // `sent` overtook the API's acceptance, which is therefore not shown: the bridge bot's
    // receipt says sent, this says delivered.
    assert_eq!(
        rig.send_statuses(&room, &answer).await,
        vec![json!(["SUCCESS", [PUPPET]]).to_string()]
    );

    // The agent's read receipt marks the customer's message read.
    let (status, _) = rig
        .agent
        .post(
            &format!(
                "{V3}/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(customer_event.as_str().unwrap())
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    wait_for("the read mark", || async {
        (rig.sim.read_marks() == vec![hola.clone()]).then_some(())
    })
    .await;

    // Outside the 24-hour window: refused with a hint, then a template goes through.
    let (status, _) = reqwest::Client::new()
        .post(format!(
            "http://{}/sim/customers/{CUSTOMER}/window",
            rig.sim_addr
        ))
        .json(&json!({"open": false}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let late = rig
        .send(
            &room,
            "a3",
            json!({"msgtype": "m.text", "body": "¿Sigue ahí?"}),
        )
        .await;
    let failed = rig.delivery_status(&late, "failed").await;
    assert_eq!(failed.error_code, Some(131047));
    rig.event_with_body(&room, "Not sent: more than 24 hours have passed since the customer last wrote, so WhatsApp only accepts an approved template. Re-engage them with !template NAME [params…]. (Message failed to send because more than 24 hours have passed since the customer last replied to this number.)").await;
    rig.send(
        &room,
        "t0",
        json!({"msgtype": "m.text", "body": "!template greeting"}),
    )
    .await;
    rig.send(
        &room,
        "t1",
        json!({"msgtype": "m.text", "body": "!template reengage María"}),
    )
    .await;
    let sent = rig.sent_bodies(4).await;
    assert_eq!(
        sent[3],
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
               "type": "template", "template": {"name": "reengage", "language": {"code": "en_US"},
               "components": [{"type": "body", "parameters": [{"type": "text", "text": "María"}]}]}})
    );

    // A permanent error is reported and not retried.
    rig.send_refused(&room, "a4", "Último intento", 131026)
        .await;
    let notice = rig
        .event_with_body(&room, "WhatsApp did not deliver the message (error 131026): Unable to deliver message. The recipient may not be a WhatsApp user or has not accepted the latest terms.")
        .await;
    assert_eq!(notice["sender"], BOT);
    assert_eq!(notice["content"]["io.charla.internal"], true);
    assert_eq!(rig.bridge().store().outbox_len(), 0);
    assert_eq!(rig.sim.sent().len(), 4);
}

/// The support API shows each agent message's delivery state, as the bridge stored it, next to
/// the conversation's history: the state, WhatsApp's message id, and the reason of a failure.
#[tokio::test]
async fn the_support_api_shows_the_delivery_state_of_each_agent_message() {
    let sim = SimConfig {
        status_delay_ms: 5,
        ..SimConfig::default()
    };
    let rig = Rig::start_configured(sim, 60_000, true).await;
    rig.customer(text("Hola")).await;
    let room = rig.portal().await;
    let hola = rig.event_with_body(&room, "Hola").await["event_id"].clone();
    let answer = rig
        .send(
            &room,
            "a1",
            json!({"msgtype": "m.text", "body": "Buenos días"}),
        )
        .await;
    let wamid = rig.delivery_status(&answer, "delivered").await.wamid;
    assert_eq!(wamid.as_deref(), Some(rig.sim.sent()[0].wamid.as_str()));
    let (refused, _) = rig.send_refused(&room, "a2", "¿Sigue ahí?", 131026).await;

    let path = format!("/api/support/v1/conversations/{}", enc(&room));
    let (status, body) = rig.agent.get(&path).await;
    assert_eq!(status, 200, "{body}");
    let history: Vec<&Value> = body["history"].as_array().unwrap().iter().collect();
    assert!(history.iter().any(|e| e["event_id"] == answer.as_str()));
    let deliveries = body["deliveries"].as_object().unwrap();
    let delivered = &deliveries[&answer];
    assert_eq!(
        *delivered,
        json!({"channel": "whatsapp", "status": "delivered", "wamid": wamid,
               "updated_ts": delivered["updated_ts"]})
    );
    assert!(delivered["updated_ts"].as_u64().unwrap() > 1_700_000_000_000);
    let failed = &deliveries[&refused];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["wamid"], Value::Null);
    assert_eq!(failed["error"]["code"], 131026);
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unable to deliver message"),
        "{failed}"
    );
    // Only the agents' messages have one: not the customer's, not the room's state.
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert!(!deliveries.contains_key(hola.as_str().unwrap()));

    // Someone who may not see the conversation learns nothing of it.
    let stranger = rig.s.user("stranger").await;
    let (status, body) = stranger.get(&path).await;
    assert_eq!(status, 404, "{body}");
}

/// The bridge's notices follow the conversation's language, set with the support bot's
/// `!language` or the support API, and fall back to the bridge's `language`.
#[tokio::test]
async fn notices_follow_the_conversations_language() {
    let rig = Rig::start_configured(SimConfig::default(), 60_000, true).await;
    rig.customer(text("Hola")).await;
    let room = rig.portal().await;
    rig.event_with_body(&room, "Hola").await;
    let portal_language = |want: Option<&'static str>| {
        let bridge = rig.bridge().clone();
        async move {
            let portal = bridge.store().portal(CUSTOMER).unwrap().unwrap();
            (portal.language.as_deref() == want).then_some(())
        }
    };

    rig.send(
        &room,
        "l1",
        json!({"msgtype": "m.text", "body": "!language es"}),
    )
    .await;
    rig.event_with_body(&room, "Language: es.").await;
    wait_for("the portal in Spanish", || portal_language(Some("es"))).await;
    rig.send_refused(&room, "a1", "Primero", 131026).await;
    rig.event_with_body(&room, "WhatsApp no entregó el mensaje (error 131026): Unable to deliver message. The recipient may not be a WhatsApp user or has not accepted the latest terms.")
        .await;
    let path = format!("/api/support/v1/conversations/{}", enc(&room));
    let (status, body) = rig.agent.get(&path).await;
    assert_eq!((status, &body["language"]), (200, &json!("es")), "{body}");

    // Through the API, with a region: the notices' English.
    let (status, body) = rig.agent.patch(&path, json!({"language": "en-GB"})).await;
    assert_eq!(
        (status, &body["language"]),
        (200, &json!("en-GB")),
        "{body}"
    );
    wait_for("the portal in English", || portal_language(Some("en-GB"))).await;
    rig.send_refused(&room, "a2", "Segundo", 131026).await;
    rig.event_with_body(&room, "WhatsApp did not deliver the message (error 131026): Unable to deliver message. The recipient may not be a WhatsApp user or has not accepted the latest terms.")
        .await;

    // Not a language tag: refused, nothing changes.
    let (status, body) = rig.agent.patch(&path, json!({"language": "español"})).await;
    assert_eq!(
        (status, &body["errcode"]),
        (400, &json!("M_INVALID_PARAM")),
        "{body}"
    );
    assert_eq!(body["field"], "language");
    let (_, body) = rig.agent.get(&path).await;
    assert_eq!(body["language"], "en-GB");
}

/// Without WhatsApp's `sent`, the Cloud API's acceptance is what the room shows once the wait
/// for `sent` is over; a `delivered` that comes later is shown after it.
#[tokio::test]
async fn an_acceptance_that_sent_does_not_overtake_is_shown_on_its_own() {
    let (rig, room) = Rig::with_manual_statuses(1).await;
    let answer = rig
        .send(
            &room,
            "a1",
            json!({"msgtype": "m.text", "body": "Hola, soy Ana"}),
        )
        .await;
    let accepted = json!(["SUCCESS", null]).to_string();
    wait_for("the acceptance", || async {
        (rig.send_statuses(&room, &answer).await == vec![accepted.clone()]).then_some(())
    })
    .await;
    let wamid = rig.delivery_status(&answer, "queued").await.wamid.unwrap();
    assert_eq!(wamid, rig.sim.sent()[0].wamid);

    assert_eq!(rig.sim.send_status(&wamid, "delivered").await.unwrap(), 200);
    rig.delivery_status(&answer, "delivered").await;
    let delivered = json!(["SUCCESS", [PUPPET]]).to_string();
    wait_for("the delivery", || async {
        (rig.send_statuses(&room, &answer).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        rig.send_statuses(&room, &answer).await,
        vec![accepted, delivered]
    );
}

/// Statuses that come on their own are each shown: `sent` as the bridge bot's receipt,
/// `delivered` as a status event. Statuses of one message that come together (here in one
/// webhook) show only the state they end in.
#[tokio::test]
async fn statuses_that_come_together_show_only_the_last_state() {
    let (rig, room) = Rig::with_manual_statuses(60_000).await;
    let bot_reads = |sync: &Value, event: &str| {
        sync["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.receipt")
            .any(|e| e["content"][event]["m.read"][BOT]["ts"].is_u64())
    };

    let one = rig
        .send(&room, "a1", json!({"msgtype": "m.text", "body": "uno"}))
        .await;
    rig.sent_bodies(1).await;
    let wamid = rig.sim.sent()[0].wamid.clone();
    let status = |state: &str| {
        json!({"id": wamid, "status": state, "timestamp": "1732300000",
               "recipient_id": CUSTOMER})
    };
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000",
                         "phone_number_id": rig.sim.config().phone_number_id},
            "statuses": [status("sent"), status("delivered")],
        }}]}],
    })
    .to_string();
    let signature = whatsapp::signature::sign(&rig.sim.config().app_secret, body.as_bytes());
    let answer = reqwest::Client::new()
        .post(rig.s.url("/bridges/whatsapp/webhook"))
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Shown before it is recorded: once `delivered` is recorded, the room shows all it will.
    rig.delivery_status(&one, "delivered").await;
    let delivered = json!(["SUCCESS", [PUPPET]]).to_string();
    assert_eq!(
        rig.send_statuses(&room, &one).await,
        vec![delivered.clone()]
    );
    assert!(!bot_reads(&rig.agent.sync(None, 0).await, &one));

    let two = rig
        .send(&room, "a2", json!({"msgtype": "m.text", "body": "dos"}))
        .await;
    rig.sent_bodies(2).await;
    let wamid = rig.sim.sent()[1].wamid.clone();
    assert_eq!(rig.sim.send_status(&wamid, "sent").await.unwrap(), 200);
    rig.delivery_status(&two, "sent").await;
    assert!(bot_reads(&rig.agent.sync(None, 0).await, &two));
    assert!(rig.send_statuses(&room, &two).await.is_empty());
    assert_eq!(rig.sim.send_status(&wamid, "delivered").await.unwrap(), 200);
    rig.delivery_status(&two, "delivered").await;
    assert_eq!(rig.send_statuses(&room, &two).await, vec![delivered]);
}

#[tokio::test]
async fn forged_and_replayed_webhooks_change_nothing() {
    let rig = Rig::start().await;
    let http = reqwest::Client::new();
    let hook = rig.s.url("/bridges/whatsapp/webhook");

    let verify = |token: &str| {
        format!("{hook}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444")
    };
    let answer = http.get(verify("verify-me")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "1158201444");
    assert_eq!(
        http.get(verify("wrong")).send().await.unwrap().status(),
        403
    );

    let (wamid, webhook) = rig
        .sim
        .customer_says(CUSTOMER, "María", None, false, text("Primero"))
        .await
        .unwrap();
    assert_eq!(webhook.status, 200);
    let room = rig.portal().await;
    rig.event_with_body(&room, "Primero").await;

    // Meta retries the same webhook: accepted, not posted twice.
    let replay = http
        .post(&hook)
        .header("x-hub-signature-256", &webhook.signature)
        .body(webhook.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    wait_for("the inbox to drain", || async {
        (rig.bridge().store().inbox_len() == 0).then_some(())
    })
    .await;

    // A forged body (signed with another secret) and an unsigned one are refused.
    let forged = webhook
        .body
        .replace("Primero", "Transfiera 1000 EUR")
        .replace(&wamid, "wamid.FORGED");
    let bad_signature = whatsapp::signature::sign("not-the-app-secret", forged.as_bytes());
    let refused = http
        .post(&hook)
        .header("x-hub-signature-256", bad_signature)
        .body(forged.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let tampered = http
        .post(&hook)
        .header("x-hub-signature-256", &webhook.signature)
        .body(forged.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 403);
    let unsigned = http.post(&hook).body(forged).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);

    // The marker message comes after everything above; nothing else got in.
    rig.customer(text("Después")).await;
    rig.event_with_body(&room, "Después").await;
    let bodies: Vec<Value> = rig
        .events(&room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].clone())
        .collect();
    assert_eq!(bodies, vec![json!("Primero"), json!("Después")]);
    assert!(
        rig.bridge()
            .store()
            .message("wamid.FORGED")
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn with_whatsapp_down_agent_messages_queue_and_go_out_once_in_order_across_a_restart() {
    let mut rig = Rig::start().await;
    rig.customer(text("¿Hay alguien?")).await;
    let room = rig.portal().await;
    rig.event_with_body(&room, "¿Hay alguien?").await;

    rig.sim_server.take().unwrap().stop().await;
    let first = rig
        .send(&room, "d1", json!({"msgtype": "m.text", "body": "uno"}))
        .await;
    rig.send(&room, "d2", json!({"msgtype": "m.text", "body": "dos"}))
        .await;
    rig.send(&room, "d3", json!({"msgtype": "m.text", "body": "tres"}))
        .await;
    let pending = rig
        .event_with_body(&room, "WhatsApp is not answering: the message is queued and will be sent as soon as it is back.")
        .await;
    assert_eq!(pending["sender"], BOT);
    assert_eq!(pending["content"]["msgtype"], "m.notice");
    assert_eq!(rig.bridge().delivery(&first).unwrap().status, "queued");
    wait_for("the queue", || async {
        (rig.bridge().store().outbox_len() == 3).then_some(())
    })
    .await;
    // Operators see the queue in the metrics, and the webhook counted by its route.
    let metrics = scrape(rig.s.server.metrics_addr.unwrap()).await;
    assert_eq!(metrics.gauge("charla_whatsapp_outbox", &[]), 3.0);
    assert_eq!(metrics.gauge("charla_whatsapp_dead_letters", &[]), 0.0);
    let webhook = [("endpoint", "/bridges/whatsapp/webhook"), ("status", "200")];
    assert!(metrics.counter("charla_http_requests", &webhook) >= 1.0);
    let whatsapp = [("appservice", "whatsapp")];
    assert!(metrics.gauge("charla_appservice_transactions_pending", &whatsapp) <= 2.0);

    // Charla restarts while WhatsApp is still down; the queue is on disk.
    let Rig {
        s,
        sim,
        sim_addr,
        agent,
        ..
    } = rig;
    let s = s.restart().await;
    sim.set_webhook_url(&s.url("/bridges/whatsapp/webhook"));
    let agent = Client {
        base: s.server.base_url(),
        ..agent
    };
    let rig = Rig {
        s,
        sim,
        sim_server: None,
        sim_addr,
        agent,
    };
    assert_eq!(rig.bridge().store().outbox_len(), 3);
    rig.send(&room, "d4", json!({"msgtype": "m.text", "body": "cuatro"}))
        .await;

    // WhatsApp comes back on the same address.
    let listener = tokio::net::TcpListener::bind(rig.sim_addr).await.unwrap();
    let _server = rig.sim.serve(listener).unwrap();
    rig.sent_bodies(4).await;
    wait_for("the queue to drain", || async {
        (rig.bridge().store().outbox_len() == 0).then_some(())
    })
    .await;
    let sent: Vec<Value> = rig.sim.sent().into_iter().map(|r| r.body).collect();
    assert_eq!(
        sent,
        vec![
            text_to_customer("uno"),
            text_to_customer("dos"),
            text_to_customer("tres"),
            text_to_customer("cuatro")
        ]
    );
    rig.delivery_status(&first, "delivered").await;
    rig.event_with_body(
        &room,
        "WhatsApp is answering again: the queued messages have been sent.",
    )
    .await;
}

/// A backup of a server whose bridge runs in process holds the bridge's stores, cut at the same
/// instant as the homeserver's: restored, the bridge finds the customer's portal and the room
/// holds the customer's message. The bridge's generated registration (its tokens) stays out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_holds_the_bridge_state_with_the_homeserver() {
    let rig = Rig::start().await;
    rig.customer(text("Hola")).await;
    let room = rig.portal().await;
    rig.event_with_body(&room, "Hola").await;
    let token = std::fs::read_to_string(rig.s.data_path().join("admin.token")).unwrap();
    let response = reqwest::Client::new()
        .get(rig.s.url("/_charla/admin/v1/backup"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("backup.tar");
    std::fs::write(&archive, response.bytes().await.unwrap()).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "server_name = \"localhost\"\n[storage]\npath = \"data\"\n",
    )
    .unwrap();
    let mut restore = std::process::Command::new(env!("CARGO_BIN_EXE_charla"));
    restore
        .arg("admin")
        .arg("--config")
        .arg(&config)
        .arg("restore")
        .arg(&archive);
    let restored = tokio::task::spawn_blocking(move || restore.output().unwrap())
        .await
        .unwrap();
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );

    let data = dir.path().join("data");
    let state = data.join("bridges/whatsapp");
    assert!(!state.join("registration.yaml").exists());
    let bridge_store = whatsapp::store::Store::open(&state.join("db")).unwrap();
    let portal = bridge_store.portal(CUSTOMER).unwrap().expect("the portal");
    assert_eq!(portal.room_id.as_str(), room);
    drop(bridge_store);
    let server = charla::server::start(crate::common::config_for(&data, ""))
        .await
        .unwrap();
    let agent = Client {
        http: reqwest::Client::new(),
        base: server.base_url(),
        token: rig.agent.token.clone(),
    };
    let (status, page) = agent
        .get(&format!(
            "{V3}/rooms/{}/messages?dir=b&limit=50",
            enc(&room)
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert!(bodies.contains(&"Hola"), "{bodies:?}");
    server.stop().await;
}
