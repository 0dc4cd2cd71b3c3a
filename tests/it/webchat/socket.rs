//! The widget's WebSocket: live delivery, resume without gaps or duplicates, and its refusals.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

use super::{Customer, SHOP, ana_joins, ana_reads, room_messages, room_of, site, token};
use crate::common::{V3, enc};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    base: &str,
    origin: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}/api/chat/ws", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    connect_async(request).await.map(|(socket, _)| socket)
}

/// Connects and authenticates; returns the socket and its `ready` frame.
async fn open(base: &str, token: &str, since: Option<&str>) -> (Socket, Value) {
    let mut socket = connect(base, Some(SHOP)).await.unwrap();
    let auth = json!({ "type": "auth", "token": token, "since": since });
    socket.send(Message::text(auth.to_string())).await.unwrap();
    let ready = next(&mut socket).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    (socket, ready)
}

/// The next JSON frame, within 10 s.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// The next frame of type `kind`, skipping others (typing notices come and go).
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = next(socket).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// No frame but typing notices for a moment.
async fn quiet(socket: &mut Socket) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, socket.next()).await {
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            assert!(
                frame["type"] == "typing" || frame["type"] == "pong",
                "unexpected {frame}"
            );
        }
    }
}

#[tokio::test]
async fn support_messages_status_typing_and_reads_arrive_live() {
    let site = site().await;
    let base = site.s.server.base_url();
    let tok = token("sock-1", "Lola");
    let lola = Customer::new(&site.s, tok.clone());
    let session = lola.open().await;
    let id = session["id"].as_str().unwrap().to_owned();

    let (mut socket, ready) = open(&base, &tok, None).await;
    assert_eq!(ready["session"]["id"], id.as_str());
    assert_eq!(ready["session"]["messages"][0]["sender"], "support");
    assert!(ready["cursor"].as_str().unwrap().parse::<u64>().is_ok());

    // The customer's own message (another tab's, say) comes back as a frame too.
    let sent = lola.say("¿Está mi pedido?").await;
    let frame = next_of(&mut socket, "message").await;
    assert_eq!(frame["data"], sent);

    let room = room_of(&site, "sock-1").await;
    ana_joins(&site, &room).await;
    // Typing from the agent.
    let (st, _) = site
        .ana
        .put(
            &format!("{V3}/rooms/{}/typing/{}", enc(&room), enc("@ana:localhost")),
            json!({ "typing": true, "timeout": 10000 }),
        )
        .await;
    assert_eq!(st, 200);
    let typing = next_of(&mut socket, "typing").await;
    assert_eq!(typing["data"], json!({ "sessionId": id, "typing": true }));

    site.ana.send_text(&room, "a1", "Sí, sale mañana").await;
    let session_frame = next_of(&mut socket, "session").await;
    assert_eq!(
        session_frame["data"],
        json!({ "id": id, "status": "active" })
    );
    let answer = next_of(&mut socket, "message").await;
    assert_eq!(answer["data"]["sender"], "support");
    assert_eq!(answer["data"]["message"], "Sí, sale mañana");
    assert_eq!(answer["data"]["sessionId"], id.as_str());
    assert!(answer["cursor"].as_str().unwrap() > "0");

    // The agent reads the customer's message: a read mark for it.
    let event = room_messages(&site, &room)
        .await
        .into_iter()
        .find(|e| e["content"]["body"] == "¿Está mi pedido?")
        .unwrap();
    ana_reads(&site, &room, event["event_id"].as_str().unwrap()).await;
    let read = next_of(&mut socket, "read").await;
    assert_eq!(
        read["data"],
        json!({ "sessionId": id, "messageId": sent["id"] })
    );

    // An edit comes as the same message (same id) with the new text.
    let edit = json!({
        "msgtype": "m.text",
        "body": "* Sí, sale mañana temprano",
        "m.new_content": { "msgtype": "m.text", "body": "Sí, sale mañana temprano" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": room_messages(&site, &room)
            .await.into_iter().find(|e| e["content"]["body"] == "Sí, sale mañana").unwrap()["event_id"] },
    });
    site.ana.send_message(&room, "a3", edit).await;
    let edited = next_of(&mut socket, "message").await;
    assert_eq!(edited["data"]["id"], answer["data"]["id"]);
    assert_eq!(edited["data"]["message"], "Sí, sale mañana temprano");
    assert_eq!(edited["data"]["timestamp"], answer["data"]["timestamp"]);

    // Commands never reach the socket; closing does, as a status.
    site.ana.send_text(&room, "a2", "!close").await;
    let closed = next_of(&mut socket, "session").await;
    assert_eq!(closed["data"], json!({ "id": id, "status": "closed" }));

    socket
        .send(Message::text(json!({ "type": "ping" }).to_string()))
        .await
        .unwrap();
    assert_eq!(
        next_of(&mut socket, "pong").await,
        json!({ "type": "pong" })
    );
}

#[tokio::test]
async fn a_socket_resumes_from_its_cursor_without_gaps_or_duplicates() {
    let site = site().await;
    let base = site.s.server.base_url();
    let tok = token("sock-2", "Mia");
    let mia = Customer::new(&site.s, tok.clone());
    let id = mia.open().await["id"].as_str().unwrap().to_owned();
    let room = room_of(&site, "sock-2").await;
    ana_joins(&site, &room).await;

    let (mut socket, _) = open(&base, &tok, None).await;
    site.ana.send_text(&room, "r1", "uno").await;
    let first = next_of(&mut socket, "message").await;
    assert_eq!(first["data"]["message"], "uno");
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    drop(socket);

    // While the widget is away: an answer, a status change is already past; two answers.
    site.ana.send_text(&room, "r2", "dos").await;
    site.ana.send_text(&room, "r3", "tres").await;
    mia.say("cuatro").await;

    let (mut socket, ready) = open(&base, &tok, Some(&cursor)).await;
    assert_eq!(ready["session"]["id"], id.as_str());
    let mut replayed = Vec::new();
    for _ in 0..3 {
        let frame = next_of(&mut socket, "message").await;
        replayed.push(frame["data"]["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(replayed, ["dos", "tres", "cuatro"]);
    // Then only what is new.
    site.ana.send_text(&room, "r4", "cinco").await;
    let live = next_of(&mut socket, "message").await;
    assert_eq!(live["data"]["message"], "cinco");
    quiet(&mut socket).await;
}

#[tokio::test]
async fn a_socket_without_a_good_token_or_from_another_origin_is_refused() {
    let site = site().await;
    let base = site.s.server.base_url();

    // A page of another origin: refused before the upgrade.
    let refused = connect(&base, Some("https://evil.example.com")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected a 403, got {other:?}"),
    }

    // A bad token: closed with 4001.
    let mut socket = connect(&base, Some(SHOP)).await.unwrap();
    let auth = json!({ "type": "auth", "token": "abc.def.ghi" });
    socket.send(Message::text(auth.to_string())).await.unwrap();
    let message = socket.next().await.unwrap().unwrap();
    match message {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::from(4001)),
        other => panic!("expected a close, got {other:?}"),
    }

    // Something else than `auth` first: closed too.
    let mut socket = connect(&base, Some(SHOP)).await.unwrap();
    socket
        .send(Message::text(json!({ "type": "ping" }).to_string()))
        .await
        .unwrap();
    match socket.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::from(4001)),
        other => panic!("expected a close, got {other:?}"),
    }
}

/// A widget that stops reading falls behind: its socket is closed with `4008` instead of
/// holding frames without bound, and it resumes from its last cursor without gaps or
/// duplicates.
#[tokio::test]
async fn a_socket_that_stops_reading_is_closed_and_resumes_without_gaps() {
    let site = super::site_with("[limits]\nsend_per_second = 100000.0\nsend_burst = 100000").await;
    let base = site.s.server.base_url();
    let tok = token("sock-slow", "Nora");
    let nora = Customer::new(&site.s, tok.clone());
    nora.open().await;
    let room = room_of(&site, "sock-slow").await;
    ana_joins(&site, &room).await;

    // A client whose receive buffer is tiny and which reads nothing for a while.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(2048).unwrap();
    let addr = base.trim_start_matches("http://").parse().unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let mut request = format!("{}/api/chat/ws", base.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", SHOP.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let auth = json!({ "type": "auth", "token": tok });
    socket.send(Message::text(auth.to_string())).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], "ready");

    // Far more than the socket's queue, its write buffer and the kernel's buffers (up to 4 MiB
    // on loopback) hold: 3,000 frames of ~2 KB.
    let total = 3000;
    let long = "😀".repeat(480);
    for i in 0..total {
        site.ana
            .send_text(&room, &format!("s{i}"), &format!("{i:04} {long}"))
            .await;
    }

    // Reading again: some frames, then the close.
    let mut seen = Vec::new();
    let mut cursor = None;
    let code = loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .unwrap_or_else(|_| panic!("no frame or close within 20 s after {} frames", seen.len()))
            .expect("the socket ends with a close frame")
            .unwrap();
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                if frame["type"] == "message" {
                    seen.push(frame["data"]["message"].as_str().unwrap()[..4].to_owned());
                    cursor = Some(frame["cursor"].as_str().unwrap().to_owned());
                }
            }
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            _ => {}
        }
    };
    assert_eq!(code, Some(4008));
    assert!(
        seen.len() < total,
        "the socket was closed before all {total} frames"
    );

    // Resuming from the last frame it handled gives exactly the rest.
    let (mut socket, _) = open(&base, &tok, cursor.as_deref()).await;
    while seen.len() < total {
        let frame = next_of(&mut socket, "message").await;
        seen.push(frame["data"]["message"].as_str().unwrap()[..4].to_owned());
    }
    let want: Vec<String> = (0..total).map(|i| format!("{i:04}")).collect();
    assert_eq!(seen, want);
    quiet(&mut socket).await;
}
