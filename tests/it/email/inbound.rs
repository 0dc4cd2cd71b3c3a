//! Customers' mails into conversations.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, MultiPart};
use serde_json::Value;

use super::{DESK, Rig, plain_mail};
use crate::common::{V3, enc};

async fn state(rig: &Rig, room: &str, kind: &str) -> Value {
    let (status, body) = rig
        .agent
        .get(&format!("{V3}/rooms/{}/state/{kind}/", enc(room)))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_mail_opens_a_conversation_and_its_replies_thread_into_it() {
    let rig = Rig::start().await;
    let mut joined = Vec::new();
    let first = plain_mail(
        "Eva Ruiz <eva@example.org>",
        "Pedido 42",
        "first@example.org",
        "",
        "Hola, mi pedido 42 no ha llegado.",
    );
    let answer = rig.send_raw("eva@example.org", &first).await.unwrap();
    assert_eq!(answer.code().to_string(), "250");
    let room = rig.next_conversation(&mut joined).await;

    let conversation = state(&rig, &room, "io.charla.conversation").await;
    assert_eq!(conversation["channel"], "email");
    assert_eq!(conversation["status"], "open");
    assert_eq!(conversation["contact"]["name"], "Eva Ruiz");
    assert_eq!(conversation["contact"]["email"], "eva@example.org");
    assert_eq!(state(&rig, &room, "m.room.name").await["name"], "Pedido 42");

    let messages = rig.wait_messages(&room, 1).await;
    assert_eq!(
        messages[0]["content"]["body"],
        "Hola, mi pedido 42 no ha llegado."
    );
    assert_eq!(
        messages[0]["content"]["io.charla.email"]["message_id"],
        "first@example.org"
    );
    let puppet = messages[0]["sender"].as_str().unwrap().to_owned();
    let (_, profile) = rig
        .agent
        .get(&format!("{V3}/profile/{}/displayname", enc(&puppet)))
        .await;
    assert_eq!(profile["displayname"], "Eva Ruiz");

    // Her reply, Gmail style, quoting the first mail: the same conversation, trimmed.
    let reply = plain_mail(
        "Eva Ruiz <eva@example.org>",
        "Re: Pedido 42",
        "second@example.org",
        "In-Reply-To: <first@example.org>\r\nReferences: <first@example.org>\r\n",
        "Ya lo tengo, gracias.\n\nOn Sun, 6 Dec 2026 at 10:00, Support <support@desk.test> wrote:\n> Hola Eva\n> Su pedido sale hoy.",
    );
    rig.send_raw("eva@example.org", &reply).await.unwrap();
    let messages = rig.wait_messages(&room, 2).await;
    assert_eq!(messages[1]["content"]["body"], "Ya lo tengo, gracias.");
    let full = messages[1]["content"]["io.charla.email"]["full_body"]
        .as_str()
        .unwrap();
    assert!(full.contains("> Su pedido sale hoy."), "{full}");
    assert_eq!(messages[1]["sender"], puppet.as_str());

    // Someone else naming Eva's thread gets a conversation of their own.
    let stranger = plain_mail(
        "Mallory <mallory@evil.test>",
        "Re: Pedido 42",
        "third@evil.test",
        "In-Reply-To: <second@example.org>\r\nReferences: <first@example.org> <second@example.org>\r\n",
        "Send the invoice to me instead.",
    );
    rig.send_raw("mallory@evil.test", &stranger).await.unwrap();
    let other = rig.next_conversation(&mut joined).await;
    assert_ne!(other, room);
    let theirs = rig.wait_messages(&other, 1).await;
    assert_eq!(
        theirs[0]["content"]["body"],
        "Send the invoice to me instead."
    );
    assert_eq!(rig.wait_messages(&room, 2).await.len(), 2);

    // The same mail delivered twice by its MTA is one message.
    rig.send_raw("eva@example.org", &reply).await.unwrap();
    let again = plain_mail(
        "Eva Ruiz <eva@example.org>",
        "Re: Pedido 42",
        "fourth@example.org",
        "In-Reply-To: <second@example.org>\r\n",
        "Una cosa más.",
    );
    rig.send_raw("eva@example.org", &again).await.unwrap();
    let messages = rig.wait_messages(&room, 3).await;
    let bodies: Vec<&str> = messages
        .iter()
        .map(|m| m["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "Hola, mi pedido 42 no ha llegado.",
            "Ya lo tengo, gracias.",
            "Una cosa más."
        ]
    );
}

#[tokio::test]
async fn html_attachments_and_legacy_charsets_arrive_readable_and_safe() {
    let rig = Rig::start().await;
    let mut joined = Vec::new();
    let pdf = b"%PDF-1.4 factura 42 \x00\x01\x02".to_vec();
    let mail = lettre::Message::builder()
        .from("Luis <luis@example.org>".parse().unwrap())
        .to(DESK.parse().unwrap())
        .subject("Factura")
        .message_id(Some("<html1@example.org>".into()))
        .multipart(
            MultiPart::mixed()
                .multipart(MultiPart::alternative_plain_html(
                    "Adjunto la factura.".to_owned(),
                    "<p>Adjunto la <b>factura</b>.<script>alert(1)</script>\
                     <img src=\"http://tracker.test/p.gif\"><a href=\"javascript:alert(1)\">x</a></p>"
                        .to_owned(),
                ))
                .singlepart(
                    Attachment::new("factura ñ.pdf".into())
                        .body(pdf.clone(), ContentType::parse("application/pdf").unwrap()),
                ),
        )
        .unwrap();
    rig.send_raw("luis@example.org", &mail.formatted())
        .await
        .unwrap();
    let room = rig.next_conversation(&mut joined).await;
    let messages = rig.wait_messages(&room, 2).await;
    let text = &messages[0]["content"];
    assert_eq!(text["body"], "Adjunto la factura.");
    assert_eq!(text["format"], "org.matrix.custom.html");
    let html = text["formatted_body"].as_str().unwrap();
    assert!(html.contains("<b>factura</b>"), "{html}");
    for banned in ["script", "tracker.test", "javascript:"] {
        assert!(!html.contains(banned), "{banned} in {html}");
    }
    let file = &messages[1]["content"];
    assert_eq!(file["msgtype"], "m.file");
    assert_eq!(file["body"], "factura ñ.pdf");
    assert_eq!(file["info"]["mimetype"], "application/pdf");
    let mxc = file["url"].as_str().unwrap();
    let (server, media) = mxc.trim_start_matches("mxc://").split_once('/').unwrap();
    let download = reqwest::Client::new()
        .get(rig.s.url(&format!(
            "/_matrix/client/v1/media/download/{server}/{media}"
        )))
        .bearer_auth(rig.agent.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().as_ref(), pdf.as_slice());

    // ISO-8859-1, quoted-printable, RFC 2047 subject; and a UTF-8 base64 subject.
    let latin1 = b"From: =?ISO-8859-1?Q?Jos=E9?= <jose@example.org>\r\nTo: support@desk.test\r\n\
Subject: =?ISO-8859-1?Q?Informaci=F3n_del_env=EDo?=\r\nMessage-ID: <latin1@example.org>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n=BFD=F3nde est=E1 mi =F1and=FA?\r\n";
    rig.send_raw("jose@example.org", latin1).await.unwrap();
    let room = rig.next_conversation(&mut joined).await;
    assert_eq!(
        state(&rig, &room, "m.room.name").await["name"],
        "Información del envío"
    );
    let messages = rig.wait_messages(&room, 1).await;
    assert_eq!(messages[0]["content"]["body"], "¿Dónde está mi ñandú?");
    let puppet = messages[0]["sender"].as_str().unwrap();
    let (_, profile) = rig
        .agent
        .get(&format!("{V3}/profile/{}/displayname", enc(puppet)))
        .await;
    assert_eq!(profile["displayname"], "José");

    let utf8 = plain_mail(
        "Zoë <zoe@example.org>",
        "=?UTF-8?B?wqFIb2xhLCBtdW5kbyE=?=",
        "utf8@example.org",
        "",
        "Texto",
    );
    rig.send_raw("zoe@example.org", &utf8).await.unwrap();
    let room = rig.next_conversation(&mut joined).await;
    assert_eq!(
        state(&rig, &room, "m.room.name").await["name"],
        "¡Hola, mundo!"
    );
}

#[tokio::test]
async fn automatic_mail_is_ignored_and_the_listener_refuses_what_it_must() {
    let rig = Rig::start_with("max_message_bytes = 20000\n").await;
    let mut joined = Vec::new();
    let auto = plain_mail(
        "Out of office <eva@example.org>",
        "Automatic reply: Pedido 42",
        "auto@example.org",
        "Auto-Submitted: auto-replied\r\n",
        "I am out of the office until Monday.",
    );
    rig.send_raw("eva@example.org", &auto).await.unwrap();
    let bulk = plain_mail(
        "News <news@example.org>",
        "Our newsletter",
        "bulk@example.org",
        "Precedence: bulk\r\n",
        "Offers!",
    );
    rig.send_raw("news@example.org", &bulk).await.unwrap();
    let own = plain_mail(
        &format!("Desk <{DESK}>"),
        "Loop",
        "own@desk.test",
        "",
        "From the desk itself.",
    );
    rig.send_raw(DESK, &own).await.unwrap();
    // A person's mail after them: the first conversation that opens is this one's, so the
    // automatic ones (processed before it, in order) opened none.
    let person = plain_mail(
        "Eva <eva@example.org>",
        "Hola",
        "person@example.org",
        "",
        "Hola",
    );
    rig.send_raw("eva@example.org", &person).await.unwrap();
    let room = rig.next_conversation(&mut joined).await;
    let messages = rig.wait_messages(&room, 1).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["content"]["body"], "Hola");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sync = rig.agent.sync(None, 0).await;
    assert!(
        sync["rooms"]["invite"]
            .as_object()
            .is_none_or(|invites| invites.keys().all(|r| joined.contains(r))),
        "an automatic mail opened a conversation: {sync}"
    );

    // Over SIZE: refused with 552 before anything is kept; a stranger's address: 550.
    let big = plain_mail(
        "Eva <eva@example.org>",
        "Big",
        "big@example.org",
        "",
        &"x".repeat(30_000),
    );
    let error = rig.send_raw("eva@example.org", &big).await.unwrap_err();
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("552"),
        "{error}"
    );
    let error = super::send_raw(rig.smtp(), "eva@example.org", "sales@desk.test", &person)
        .await
        .unwrap_err();
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("550"),
        "{error}"
    );
    // A tagged subaddress is the desk's.
    let tagged = plain_mail(
        "Eva <eva@example.org>",
        "Tag",
        "tagged@example.org",
        "",
        "Etiqueta",
    );
    super::send_raw(
        rig.smtp(),
        "eva@example.org",
        "support+billing@desk.test",
        &tagged,
    )
    .await
    .unwrap();
    let room = rig.next_conversation(&mut joined).await;
    let messages = rig.wait_messages(&room, 1).await;
    assert_eq!(messages[0]["content"]["body"], "Etiqueta");
    assert_eq!(
        messages[0]["content"]["io.charla.email"]["to"][0],
        "support+billing@desk.test"
    );
}

#[tokio::test]
async fn a_closed_conversation_reopens_when_the_customer_writes() {
    let rig = Rig::start().await;
    let mut joined = Vec::new();
    let first = plain_mail(
        "Eva <eva@example.org>",
        "Envío",
        "c1@example.org",
        "",
        "¿Cuándo llega?",
    );
    rig.send_raw("eva@example.org", &first).await.unwrap();
    let room = rig.next_conversation(&mut joined).await;
    rig.wait_messages(&room, 1).await;
    let (status, body) = rig
        .agent
        .patch(
            &format!("/api/support/v1/conversations/{}", enc(&room)),
            serde_json::json!({"status": "closed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        state(&rig, &room, "io.charla.conversation").await["status"],
        "closed"
    );
    let reply = plain_mail(
        "Eva <eva@example.org>",
        "Re: Envío",
        "c2@example.org",
        "In-Reply-To: <c1@example.org>\r\n",
        "Sigue sin llegar.",
    );
    rig.send_raw("eva@example.org", &reply).await.unwrap();
    rig.wait_messages(&room, 2).await;
    assert_eq!(
        state(&rig, &room, "io.charla.conversation").await["status"],
        "open"
    );
}

#[tokio::test]
async fn the_listener_offers_starttls_with_the_configured_certificate() {
    let certs = tempfile::tempdir().unwrap();
    crate::federation::certificate(certs.path());
    let rig = Rig::start_with(&format!(
        "tls_certificate = {:?}\ntls_private_key = {:?}\n",
        certs.path().join("cert.pem"),
        certs.path().join("key.pem")
    ))
    .await;
    let tls = lettre::transport::smtp::client::TlsParameters::builder("localhost".into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(rig.smtp().port())
            .tls(lettre::transport::smtp::client::Tls::Required(tls))
            .build();
    let mail = plain_mail(
        "Eva <eva@example.org>",
        "Cifrado",
        "tls1@example.org",
        "",
        "Por TLS",
    );
    let envelope = lettre::address::Envelope::new(
        Some("eva@example.org".parse().unwrap()),
        vec![DESK.parse().unwrap()],
    )
    .unwrap();
    use lettre::AsyncTransport;
    transport.send_raw(&envelope, &mail).await.unwrap();
    let room = rig.next_conversation(&mut Vec::new()).await;
    let messages = rig.wait_messages(&room, 1).await;
    assert_eq!(messages[0]["content"]["body"], "Por TLS");
    assert_eq!(messages[0]["content"]["io.charla.email"]["tls"], true);
}

#[tokio::test]
async fn a_sender_over_its_rate_is_told_to_retry_later() {
    let rig = Rig::start_with("mails_per_sender_burst = 2\nmails_per_sender_per_hour = 1\n").await;
    for n in 0..2 {
        let mail = plain_mail(
            "Eva <eva@example.org>",
            "Hola",
            &format!("r{n}@example.org"),
            "",
            "Hola",
        );
        rig.send_raw("eva@example.org", &mail).await.unwrap();
    }
    let third = plain_mail(
        "Eva <eva@example.org>",
        "Hola",
        "r2@example.org",
        "",
        "Hola",
    );
    let error = rig.send_raw("eva@example.org", &third).await.unwrap_err();
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("450"),
        "{error}"
    );
    assert!(error.is_transient(), "{error}");
    // Someone else is not held back by Eva's rate.
    let other = plain_mail(
        "Luis <luis@example.org>",
        "Hola",
        "l1@example.org",
        "",
        "Hola",
    );
    rig.send_raw("luis@example.org", &other).await.unwrap();
}
