//! Agents' answers out by mail: threaded, in order, retried, and failures shown.

use serde_json::json;

use super::{DESK, Mode, Rig, header, plain_mail};
use crate::common::enc;
use crate::common::metrics::{scrape, wait_for_gauge};

/// A conversation opened by Eva's mail `<first@example.org>`; its room.
async fn conversation(rig: &Rig) -> String {
    let mail = plain_mail(
        "Eva Ruiz <eva@example.org>",
        "Pedido 42",
        "first@example.org",
        "References: <root@example.org>\r\nIn-Reply-To: <root@example.org>\r\n",
        "¿Dónde está mi pedido?",
    );
    rig.send_raw("eva@example.org", &mail).await.unwrap();
    let room = rig.next_conversation(&mut Vec::new()).await;
    rig.wait_messages(&room, 1).await;
    room
}

#[tokio::test]
async fn an_agents_answer_goes_out_threaded_and_notes_stay_in_matrix() {
    let rig = Rig::start().await;
    let room = conversation(&rig).await;
    let note = json!({"msgtype": "m.text", "body": "nota privada", "io.charla.internal": true});
    rig.agent.send_message(&room, "n1", note).await;
    rig.agent
        .send_text(&room, "c1", "!assign @agent:localhost")
        .await;
    let answer = rig
        .agent
        .send_message(
            &room,
            "a1",
            json!({
                "msgtype": "m.text",
                "body": "Hola Eva, sale hoy.",
                "format": "org.matrix.custom.html",
                "formatted_body": "Hola Eva, sale <b>hoy</b>.",
            }),
        )
        .await;
    let mails = rig.relay.wait_for(1).await;
    let (envelope, mail) = &mails[0];
    assert_eq!(envelope.mail_from, DESK);
    assert_eq!(envelope.recipients, ["eva@example.org"]);
    // "Ana (Support)": lettre writes a name with parentheses as an RFC 2047 encoded word.
    use base64::Engine;
    let name = base64::engine::general_purpose::STANDARD.encode("Ana (Support)");
    assert_eq!(
        header(mail, "From").unwrap(),
        format!("=?utf-8?b?{name}?= <{DESK}>")
    );
    assert_eq!(
        header(mail, "To").unwrap(),
        "\"Eva Ruiz\" <eva@example.org>"
    );
    assert_eq!(header(mail, "Subject").unwrap(), "Re: Pedido 42");
    assert_eq!(header(mail, "In-Reply-To").unwrap(), "<first@example.org>");
    assert_eq!(
        header(mail, "References").unwrap(),
        "<root@example.org> <first@example.org>"
    );
    assert!(header(mail, "Auto-Submitted").is_none());
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("Hola Eva, sale hoy."), "{mail}");
    assert!(mail.contains("sale <b>hoy</b>"), "{mail}");
    assert!(!mail.contains("nota privada") && !mail.contains("!assign"));
    let delivery = rig.delivery(&answer, "sent").await;
    let message_id = header(mail, "Message-ID").unwrap();
    assert_eq!(format!("<{}>", delivery.message_id), message_id);
    assert!(message_id.ends_with("@desk.test>"), "{message_id}");

    // The support API shows the state next to the message.
    let (status, conversation) = rig
        .agent
        .get(&format!("/api/support/v1/conversations/{}", enc(&room)))
        .await;
    assert_eq!(status, 200, "{conversation}");
    let state = &conversation["deliveries"][&answer];
    assert_eq!(state["channel"], "email", "{conversation}");
    assert_eq!(state["status"], "sent");
    assert_eq!(state["message_id"], delivery.message_id.as_str());
    assert_eq!(conversation["channel"], "email", "{conversation}");

    // A file: its bytes attached, and the next answer replies to the previous one.
    let (status, upload) = rig
        .agent
        .raw(
            reqwest::Method::POST,
            "/_matrix/media/v3/upload?filename=guia.pdf",
            b"%PDF guia de envio".to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{upload}");
    rig.agent
        .send_message(
            &room,
            "f1",
            json!({"msgtype": "m.file", "body": "guia.pdf", "url": upload["content_uri"],
                   "info": {"mimetype": "application/pdf"}}),
        )
        .await;
    let mails = rig.relay.wait_for(2).await;
    let mail = &mails[1].1;
    assert!(mail.contains("filename=\"guia.pdf\""), "{mail}");
    assert!(mail.contains("Content-Type: application/pdf"), "{mail}");
    assert!(
        mail.contains("\r\n\r\n%PDF guia de envio\r\n"),
        "the file's bytes: {mail}"
    );
    assert!(
        !mail.contains("multipart/alternative"),
        "no empty text parts: {mail}"
    );
    assert_eq!(header(mail, "In-Reply-To").unwrap(), message_id);
    // An edit is not sent, and the agents are told.
    rig.agent
        .send_message(
            &room,
            "e1",
            json!({"msgtype": "m.text", "body": "* Hola Eva, sale mañana.",
                   "m.new_content": {"msgtype": "m.text", "body": "Hola Eva, sale mañana."},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": answer}}),
        )
        .await;
    rig.wait_bot_message(&room, |m| {
        m["content"]["body"]
            .as_str()
            .unwrap_or("")
            .starts_with("Edits are not sent")
    })
    .await;
    assert_eq!(rig.relay.count(), 2);
}

#[tokio::test]
async fn answers_wait_for_a_relay_that_is_down_and_go_out_in_order() {
    let mut rig = Rig::start().await;
    let room = conversation(&rig).await;
    rig.relay.down();
    let mut sent = Vec::new();
    for i in 0..4 {
        let text = format!("respuesta {i}");
        sent.push(rig.agent.send_text(&room, &format!("t{i}"), &text).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for event in &sent {
        assert_eq!(rig.bridge().delivery(event).unwrap().status, "queued");
    }
    let metrics = rig.s.server.metrics_addr.unwrap();
    assert_eq!(scrape(metrics).await.gauge("charla_email_outbox", &[]), 4.0);
    rig.relay.up().await;
    let mails = rig.relay.wait_for(4).await;
    let order: Vec<bool> = (0..4)
        .map(|i| mails[i].1.contains(&format!("respuesta {i}")))
        .collect();
    assert_eq!(order, [true; 4]);
    for event in &sent {
        rig.delivery(event, "sent").await;
    }
    wait_for_gauge(metrics, "charla_email_outbox", &[], 0.0).await;
    assert_eq!(scrape(metrics).await.gauge("charla_email_inbox", &[]), 0.0);

    // A relay that says "later" is tried again; one that says "no" is final and shown.
    rig.relay.set_mode(Mode::Later);
    let later = rig.agent.send_text(&room, "l1", "más tarde").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(rig.bridge().delivery(&later).unwrap().status, "queued");
    rig.relay.set_mode(Mode::Accept);
    rig.delivery(&later, "sent").await;
    rig.relay.set_mode(Mode::Refuse);
    let refused = rig.agent.send_text(&room, "r1", "no llegará").await;
    let failed = rig.delivery(&refused, "failed").await;
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or("")
            .contains("relaying denied"),
        "{failed:?}"
    );
    // The notice follows the stored state.
    rig.wait_bot_message(&room, |m| {
        m["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == refused.as_str()
            && m["content"]["body"]
                .as_str()
                .unwrap()
                .contains("relaying denied")
    })
    .await;
}

#[tokio::test]
async fn a_bounce_marks_the_answer_failed_and_opens_nothing() {
    let rig = Rig::start().await;
    let room = conversation(&rig).await;
    let answer = rig.agent.send_text(&room, "a1", "Hola").await;
    let delivery = rig.delivery(&answer, "sent").await;
    let dsn = format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nTo: {DESK}\r\n\
Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.example.org>\r\n\
Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n\
Final-Recipient: rfc822; eva@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <eva@example.org>: Recipient address rejected\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: {DESK}\r\nTo: eva@example.org\r\n\
Message-ID: <{}>\r\nSubject: Re: Pedido 42\r\n\r\n--B--\r\n",
        delivery.message_id
    );
    super::send_from_null_sender(rig.smtp(), dsn.as_bytes()).await;
    let failed = rig.delivery(&answer, "failed").await;
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("Recipient address rejected"),
        "{failed:?}"
    );
    let sync = rig.agent.sync(None, 0).await;
    assert!(
        sync["rooms"]["invite"]
            .as_object()
            .is_none_or(|i| i.is_empty()),
        "{sync}"
    );
}

#[tokio::test]
async fn the_support_bots_greeting_goes_out_marked_automatic() {
    let rig = Rig::start_greeting("", "¡Hola! Le responderemos pronto.").await;
    let _room = conversation(&rig).await;
    let mails = rig.relay.wait_for(1).await;
    let mail = &mails[0].1;
    assert!(
        mail.contains("=C2=A1Hola! Le responderemos pronto.")
            || mail.contains("¡Hola! Le responderemos pronto."),
        "{mail}"
    );
    assert_eq!(
        header(mail, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(header(mail, "From").unwrap(), format!("Support <{DESK}>"));
    assert_eq!(header(mail, "In-Reply-To").unwrap(), "<first@example.org>");
}
