//! Whole mails, as MTAs deliver them, read end to end.

use super::*;

const DESK: &str = "support@desk.example";

/// The mail with CRLF line ends, as it comes off the wire.
fn crlf(mail: &str) -> Vec<u8> {
    mail.replace('\n', "\r\n").into_bytes()
}

fn read(mail: &str) -> ParsedMail {
    parse(&crlf(mail), DESK).expect("a mail")
}

#[test]
fn plain_utf8_text() {
    let mail = read(
        "From: Ana García <Ana.Garcia@Example.ORG>
To: Support <support@desk.example>
Subject: Pedido  ñ 42
Date: Mon, 01 Jan 2024 10:00:00 +0100
Message-ID: <CAF=1234@mail.example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

Hola, mi pedido nº 42 no llegó. ¿Podéis mirarlo?

Gracias,
Ana   

",
    );
    assert_eq!(
        mail.message_id.as_deref(),
        Some("CAF=1234@mail.example.org")
    );
    assert_eq!(mail.from_address, "Ana.Garcia@example.org");
    assert_eq!(mail.from_name, "Ana García");
    assert_eq!(mail.reply_to, None);
    assert_eq!(mail.subject, "Pedido  ñ 42");
    // 2024-01-01T09:00:00Z
    assert_eq!(mail.date_ms, Some(1_704_099_600_000));
    assert_eq!(
        mail.text,
        "Hola, mi pedido nº 42 no llegó. ¿Podéis mirarlo?\n\nGracias,\nAna"
    );
    assert_eq!(mail.full_text, mail.text);
    assert_eq!(mail.html, None);
    assert!(mail.attachments.is_empty());
    assert!(mail.in_reply_to.is_empty() && mail.references.is_empty());
    assert_eq!(mail.kind, MailKind::Personal);
}

#[test]
fn quoted_printable_latin1_and_encoded_subjects() {
    let mail = read(
        "From: =?ISO-8859-1?Q?Jos=E9_P=E9rez?= <jose@example.org>
Reply-To: <Pedidos@Example.org>
Subject: =?ISO-8859-1?Q?Informaci=F3n?=
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: quoted-printable

Necesito informaci=F3n sobre el env=EDo, por favor. Una l=EDnea muy larga =
que sigue aqu=ED.
",
    );
    assert_eq!(mail.subject, "Información");
    assert_eq!(mail.from_name, "José Pérez");
    assert_eq!(mail.reply_to.as_deref(), Some("Pedidos@example.org"));
    assert_eq!(
        mail.text,
        "Necesito información sobre el envío, por favor. Una línea muy larga que sigue aquí."
    );
    assert_eq!(mail.message_id, None);
    assert_eq!(mail.date_ms, None);

    let utf8 = read(
        "From: a@example.org
Subject: =?UTF-8?B?wqFIb2xhLCBzZcOxb3IhIMK/UXXDqSB0YWw/?=

x
",
    );
    assert_eq!(utf8.subject, "¡Hola, señor! ¿Qué tal?");
}

#[test]
fn alternative_html_is_sanitized() {
    let mail = read(
        r#"From: Bob <bob@example.org>
To: support@desk.example
Subject: Links
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

Hello *bold* https://example.org/help

--alt
Content-Type: text/html; charset=utf-8

<html><head><style>p { color: red }</style><script>alert('x')</script></head>
<body><p onclick="steal()">Hello <b>bold</b> <a href="https://example.org/help">help</a>
<a href="javascript:alert(1)">click</a><img src="http://tracker.example/open.gif" width="1" height="1"></p></body></html>

--alt--
"#,
    );
    assert_eq!(mail.text, "Hello *bold* https://example.org/help");
    let html = mail.html.expect("an html body");
    for gone in [
        "<script",
        "alert",
        "onclick",
        "tracker",
        "javascript",
        "<style",
        "color: red",
        "<img",
    ] {
        assert!(!html.contains(gone), "{gone} in {html}");
    }
    assert!(html.contains("<b>bold</b>"), "{html}");
    assert!(
        html.contains(r#"<a href="https://example.org/help" rel="noopener noreferrer">help</a>"#),
        "{html}"
    );
    assert!(mail.attachments.is_empty());
}

#[test]
fn html_only_mail_gets_its_text_from_the_html() {
    let mail = read(
        r#"From: c@example.org
Subject: html
Content-Type: text/html; charset=utf-8

<div>Thanks, it works now.</div><div class="gmail_quote"><div class="gmail_attr">On Mon, 1 Jan 2024 at 10:00, Support &lt;support@desk.example&gt; wrote:</div><blockquote class="gmail_quote">Please restart it.</blockquote></div>
"#,
    );
    assert_eq!(mail.text, "Thanks, it works now.");
    assert!(
        mail.full_text.contains("Please restart it."),
        "{}",
        mail.full_text
    );
    assert_eq!(
        mail.html.as_deref(),
        Some("<div>Thanks, it works now.</div>")
    );
}

#[test]
fn mixed_with_pdf_and_inline_image() {
    let mail = read(
        "From: d@example.org
Subject: Factura
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"mix\"

--mix
Content-Type: multipart/related; boundary=\"rel\"

--rel
Content-Type: text/html; charset=utf-8

<p>See the logo: <img src=\"cid:logo@d.example\"></p>
--rel
Content-Type: image/png
Content-Transfer-Encoding: base64
Content-ID: <logo@d.example>
Content-Disposition: inline

iVBORw0KGgoAAAANSUhEUg==
--rel--

--mix
Content-Type: application/pdf
Content-Disposition: attachment; filename*=UTF-8''factura%20%C3%B1.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQKJeLjz9MKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK
--mix--
",
    );
    assert_eq!(mail.text, "See the logo:");
    // The cid: image cannot be shown from HTML (only mxc: sources are kept): it is an
    // attachment marked inline.
    assert_eq!(mail.html.as_deref(), Some("<p>See the logo: </p>"));
    assert_eq!(mail.attachments.len(), 2, "{:?}", mail.attachments);

    let image = &mail.attachments[0];
    assert_eq!(image.content_type, "image/png");
    assert_eq!(image.content_id.as_deref(), Some("logo@d.example"));
    assert!(image.inline);
    assert_eq!(image.filename, "image.png");
    assert_eq!(
        image.data,
        [
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52
        ]
    );

    let pdf = &mail.attachments[1];
    assert_eq!(pdf.filename, "factura ñ.pdf");
    assert_eq!(pdf.content_type, "application/pdf");
    assert_eq!(pdf.content_id, None);
    assert!(!pdf.inline);
    assert!(pdf.data.starts_with(b"%PDF-1.4\n"));
    assert!(pdf.data.ends_with(b"%%EOF\n"));
}

#[test]
fn gmail_reply_is_trimmed_and_threaded() {
    let mail = read(
        "From: Ana <ana@example.org>
To: support@desk.example
Subject: Re: [#42] Pedido
Message-ID: <reply-2@example.org>
In-Reply-To: <answer-1@desk.example>
References: <first@example.org>
 <answer-1@desk.example>
Content-Type: text/plain; charset=utf-8

Ya funciona, gracias.

On Mon, 1 Jan 2024 at 10:00, Support <support@desk.example> wrote:
> Prueba a reiniciarlo.
>
> > Mi pedido no llega.
",
    );
    assert_eq!(mail.text, "Ya funciona, gracias.");
    assert!(
        mail.full_text
            .starts_with("Ya funciona, gracias.\n\nOn Mon")
    );
    assert!(mail.full_text.ends_with("> > Mi pedido no llega."));
    assert_eq!(mail.in_reply_to, ["answer-1@desk.example"]);
    assert_eq!(
        mail.references,
        ["first@example.org", "answer-1@desk.example"]
    );
    assert_eq!(base_subject(&mail.subject), "[#42] Pedido");
    assert_eq!(mail.kind, MailKind::Personal);
}

#[test]
fn spanish_gmail_attribution() {
    let mail = read(
        "From: ana@example.org
Subject: RE: Pedido
Content-Type: text/plain; charset=utf-8

Perfecto, muchas gracias.

El lun, 1 ene 2024 a las 10:00, Soporte (<support@desk.example>)
escribió:

> ¿Sigue el problema?
",
    );
    assert_eq!(mail.text, "Perfecto, muchas gracias.");
    assert!(mail.full_text.contains("escribió:"));
}

#[test]
fn outlook_original_message() {
    let mail = read(
        "From: b@example.com
Subject: RE: Invoice
Content-Type: text/plain; charset=us-ascii

Please resend it to accounts@example.com.

Regards,
Bob

-----Original Message-----
From: Support <support@desk.example>
Sent: Monday, January 1, 2024 10:00 AM
To: Bob <b@example.com>
Subject: Invoice

Here is your invoice.
",
    );
    assert_eq!(
        mail.text,
        "Please resend it to accounts@example.com.\n\nRegards,\nBob"
    );
    assert!(mail.full_text.ends_with("Here is your invoice."));
}

#[test]
fn forwards_are_not_trimmed() {
    let mail = read(
        "From: boss@example.com
Subject: FW: Complaint
Content-Type: text/plain

Can you handle this?

________________________________
From: Customer <c@example.org>
Sent: Monday, January 1, 2024 10:00 AM
Subject: Complaint

It broke.
",
    );
    assert_eq!(mail.text, mail.full_text);
    assert!(mail.text.ends_with("It broke."));
}

#[test]
fn automatic_mail() {
    let kind = |headers: &str| {
        read(&format!(
            "From: a@example.org\n{headers}\nSubject: x\n\nbody\n"
        ))
        .kind
    };
    assert_eq!(
        kind("Auto-Submitted: auto-replied (vacation)"),
        MailKind::Automatic("Auto-Submitted: auto-replied".into())
    );
    assert_eq!(kind("Auto-Submitted: no"), MailKind::Personal);
    assert_eq!(
        kind("Precedence: bulk"),
        MailKind::Automatic("Precedence: bulk".into())
    );
    assert_eq!(kind("Precedence: first-class"), MailKind::Personal);
    assert_eq!(
        kind("X-Autoreply: yes"),
        MailKind::Automatic("X-Autoreply".into())
    );
    assert_eq!(
        kind("X-Autorespond: yes"),
        MailKind::Automatic("X-Autorespond".into())
    );
    assert_eq!(
        kind("List-Id: Users <users.lists.example.org>"),
        MailKind::Automatic("List-Id".into())
    );
    assert_eq!(
        kind("List-Unsubscribe: <mailto:leave@lists.example.org>"),
        MailKind::Automatic("List-Unsubscribe".into())
    );
    // Outlook sets this on mail people write.
    assert_eq!(kind("X-Auto-Response-Suppress: All"), MailKind::Personal);

    let postmaster = read("From: Postmaster <POSTMASTER@example.org>\nSubject: notice\n\nHello\n");
    assert_eq!(
        postmaster.kind,
        MailKind::Automatic("from postmaster".into())
    );
}

#[test]
fn mail_from_the_desk_itself_is_automatic() {
    for from in ["Support <Support@Desk.Example>", "support+42@desk.example"] {
        let mail = read(&format!("From: {from}\nSubject: loop\n\nHi\n"));
        assert_eq!(mail.kind, MailKind::Automatic(FROM_DESK.into()), "{from}");
    }
    // No desk configured: nothing is the desk.
    let mail = parse(b"From: a@example.org\r\nSubject: x\r\n\r\nx\r\n", "").expect("a mail");
    assert_eq!(mail.kind, MailKind::Personal);
}

#[test]
fn delivery_status_notification() {
    let mail = read(
        r#"Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
To: support@desk.example
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
Message-Id: <20240101100001.ABC@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="B1.1704099601/mx.example.org"

This is a MIME-encapsulated message.

--B1.1704099601/mx.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<nobody@example.org>: host mx2.example.org said: 550 5.1.1
    <nobody@example.org>: Recipient address rejected

--B1.1704099601/mx.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: ABC
Arrival-Date: Mon,  1 Jan 2024 10:00:00 +0000 (UTC)

Final-Recipient: rfc822; nobody@example.org
Original-Recipient: rfc822;nobody@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx2.example.org
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.org>: Recipient address rejected

--B1.1704099601/mx.example.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <support@desk.example>
From: Support <support@desk.example>
To: nobody@example.org
Subject: Re: Pedido
Message-ID: <abc@desk.example>

--B1.1704099601/mx.example.org--
"#,
    );
    let MailKind::Bounce(bounce) = &mail.kind else {
        panic!("not a bounce: {:?}", mail.kind);
    };
    assert_eq!(
        bounce,
        &Bounce {
            original_message_id: Some("abc@desk.example".into()),
            action: "failed".into(),
            status: Some("5.1.1".into()),
            diagnostic: "smtp; 550 5.1.1 <nobody@example.org>: Recipient address rejected".into(),
            recipient: Some("nobody@example.org".into()),
        }
    );
    assert!(
        mail.text.starts_with("This is the mail system"),
        "{}",
        mail.text
    );
}

#[test]
fn bounce_with_the_returned_message() {
    let mail = read(
        "From: postmaster@example.net
Subject: Delivery Status Notification (Delay)
In-Reply-To: <wrong@desk.example>
Content-Type: multipart/report; report-type=DELIVERY-STATUS; boundary=r

--r
Content-Type: text/plain

Delivery has been delayed.
--r
Content-Type: message/delivery-status

Reporting-MTA: dns; example.net
Final-Recipient: rfc822; slow@example.net
Action: Delayed
Status: 4.4.7

--r
Content-Type: message/rfc822

From: support@desk.example
To: slow@example.net
Message-ID: <orig-7@desk.example>
Subject: hello

The body.
--r--
",
    );
    let MailKind::Bounce(bounce) = &mail.kind else {
        panic!("not a bounce: {:?}", mail.kind);
    };
    assert_eq!(
        bounce.original_message_id.as_deref(),
        Some("orig-7@desk.example")
    );
    assert_eq!(bounce.action, "delayed");
    assert_eq!(bounce.status.as_deref(), Some("4.4.7"));
    assert_eq!(bounce.diagnostic, "Delivery has been delayed.");
    assert_eq!(bounce.recipient.as_deref(), Some("slow@example.net"));
    let returned = mail
        .attachments
        .iter()
        .find(|a| a.content_type == "message/rfc822")
        .expect("the returned message");
    assert_eq!(returned.filename, "attachment.eml");
    let returned = String::from_utf8_lossy(&returned.data);
    assert!(
        returned.starts_with("From: support@desk.example"),
        "{returned}"
    );
    assert!(returned.trim_end().ends_with("The body."), "{returned}");
}

#[test]
fn plain_text_bounce_from_mailer_daemon() {
    let mail = read(
        "From: MAILER-DAEMON@old.example.org
Subject: failure notice

Hi. This is the qmail-send program at old.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.

<gone@old.example.org>:
550 5.1.1 mailbox unavailable

--- Below this line is a copy of the message.

Return-Path: <support@desk.example>
Message-ID: <q-1@desk.example>
Subject: hi
",
    );
    let MailKind::Bounce(bounce) = &mail.kind else {
        panic!("not a bounce: {:?}", mail.kind);
    };
    assert_eq!(
        bounce.original_message_id.as_deref(),
        Some("q-1@desk.example")
    );
    assert_eq!(bounce.action, "failed");
    assert_eq!(bounce.status.as_deref(), Some("5.1.1"));
    assert_eq!(bounce.diagnostic, "550 5.1.1 mailbox unavailable");
    assert_eq!(bounce.recipient, None);
}

#[test]
fn read_receipts_are_automatic() {
    let mail = read(
        "From: e@example.org
Subject: Read: hi
Content-Type: multipart/report; report-type=disposition-notification; boundary=m

--m
Content-Type: text/plain

Your message was read.
--m
Content-Type: message/disposition-notification

Final-Recipient: rfc822; e@example.org
Disposition: manual-action/MDN-sent-manually; displayed
--m--
",
    );
    assert_eq!(
        mail.kind,
        MailKind::Automatic("multipart/report; report-type=disposition-notification".into())
    );
}

#[test]
fn not_a_mail() {
    assert!(parse(b"", DESK).is_none());
    assert!(parse(b"\r\n\r\n", DESK).is_none());
}

#[test]
fn hostile_headers_are_bounded() {
    let long_id = "x".repeat(5000);
    let many: String = (0..200).map(|i| format!(" <r{i}@example.org>")).collect();
    let mail = read(&format!(
        "From: \"Evil\" <evil@example.org>\nMessage-ID: <{long_id}@example.org>\nReferences:{many}\nSubject: =?UTF-8?Q?a=0D=0ABcc:_x@y?=\n\nx\n"
    ));
    assert_eq!(mail.message_id.as_ref().map(String::len), Some(MAX_ID_LEN));
    assert_eq!(mail.references.len(), MAX_THREAD_IDS);
    assert_eq!(mail.references[0], "r0@example.org");
    assert_eq!(mail.references[1], "r137@example.org");
    assert_eq!(mail.references[MAX_THREAD_IDS - 1], "r199@example.org");
    assert!(!mail.subject.contains(['\r', '\n']), "{:?}", mail.subject);
}

#[test]
fn attachment_names_are_bare() {
    let mail = read(
        "From: f@example.org
Subject: files
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain

see attached
--b
Content-Type: application/x-thing
Content-Disposition: attachment; filename=\"..\\\\..\\\\windows\\\\evil.exe\"

MZ
--b
Content-Type: Application/Octet-Stream; name=\"../../etc/passwd\"
Content-Disposition: attachment

root
--b
Content-Disposition: attachment

no type
--b--
",
    );
    let names: Vec<_> = mail
        .attachments
        .iter()
        .map(|a| a.filename.as_str())
        .collect();
    assert_eq!(names, ["evil.exe", "passwd", "attachment.txt"]);
    let types: Vec<_> = mail
        .attachments
        .iter()
        .map(|a| a.content_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "application/x-thing",
            "application/octet-stream",
            "text/plain"
        ]
    );
    assert_eq!(mail.text, "see attached");
}

#[test]
fn helpers() {
    assert_eq!(base_subject("Re: RE: Fwd: Hola"), "Hola");
    assert_eq!(base_subject("  Aw: Sv: RV: Rv: FW: fwd:Hola  "), "Hola");
    assert_eq!(base_subject("Re[2]: RE : Hola"), "Hola");
    assert_eq!(base_subject("Re: [Lista] Re: Hola"), "[Lista] Re: Hola");
    assert_eq!(base_subject("Reunión: martes"), "Reunión: martes");
    assert_eq!(base_subject("Hola"), "Hola");
    assert_eq!(base_subject("Re:"), "");
    assert!(is_forward("Fwd: Re: x") && is_forward("RV: x") && !is_forward("Re: Fwd: x"));

    assert_eq!(clean_id(" <a@b> ").as_deref(), Some("a@b"));
    assert_eq!(clean_id("a@b").as_deref(), Some("a@b"));
    assert_eq!(clean_id("<a\r\nBcc: x@b>").as_deref(), Some("aBcc:x@b"));
    assert_eq!(clean_id("<>"), None);
    assert_eq!(clean_id("   "), None);
    assert_eq!(clean_id(&"é".repeat(600)).map(|id| id.len()), Some(998));

    assert_eq!(
        normalize_address("Ana@EXAMPLE.Org").as_deref(),
        Some("Ana@example.org")
    );
    assert_eq!(normalize_address("a\r\n@b"), None);
}

#[test]
fn trim_quoted_never_returns_empty() {
    for text in [
        "> quoted only",
        "On Mon, 1 Jan 2024, Ana <a@b.example> wrote:\n> x",
        "-----Original Message-----\nFrom: a\n\nb",
        "________________________________\nFrom: a\nSent: b\n\nc",
        "From: a\nSent: b\n\nc",
    ] {
        assert_eq!(trim_quoted(text), text, "{text}");
    }
}

#[test]
fn large_hostile_bodies_stay_linear() {
    // Shapes that would be quadratic in a naive trimmer: markers everywhere, no tags to stop a
    // backward search, thousands of candidate lines. A quadratic pass over ~1 MB does not
    // finish; a linear one takes milliseconds.
    let lines = "On 1 Jan 2024 Ana <a@b.example>\n> q\nanswer\n".repeat(25_000);
    assert_eq!(trim_quoted(&lines), lines.trim_end());
    let html = "gmail_quote type=cite &lt; ".repeat(40_000);
    assert_eq!(quote::trim_quoted_html(&html), html);
    let html = "<blockquote type=cite>x</blockquote>y".repeat(30_000);
    assert_eq!(quote::trim_quoted_html(&html), html);
    let mail = read(&format!(
        "From: a@example.org\nSubject: big\nContent-Type: text/html\n\n{}\n",
        "<div class=x>text &nbsp; more</div>\n".repeat(20_000)
    ));
    assert!(mail.html.is_some_and(|h| h.len() > 500_000));
}

#[test]
fn raw_8bit_headers_and_bare_line_feeds() {
    // Unix MTAs hand over `\n` line ends; headers sometimes carry unencoded Latin-1.
    let raw = b"From: g@example.org\nList-Id: Caf\xe9 <cafe.lists.example.org>\nSubject: x\n\nhi\n";
    let mail = parse(raw, DESK).expect("a mail");
    assert_eq!(mail.kind, MailKind::Automatic("List-Id".into()));
    assert_eq!(mail.text, "hi");
}

#[test]
fn apple_mail_html_reply_is_trimmed() {
    let mail = read(
        r#"From: h@example.org
Subject: Re: Setup
Content-Type: text/html; charset=utf-8

<html><body><div>Works now, thanks!</div><div><br><blockquote type="cite"><div>On 1 Jan 2024, at 10:00, Support &lt;support@desk.example&gt; wrote:</div><div>Try turning it off and on.</div></blockquote></div></body></html>
"#,
    );
    assert_eq!(mail.text, "Works now, thanks!");
    assert!(
        mail.full_text.contains("Try turning it off"),
        "{}",
        mail.full_text
    );
    let html = mail.html.expect("html");
    assert!(html.starts_with("<div>Works now, thanks!</div>"), "{html}");
    assert!(!html.contains("Try turning"), "{html}");
}
