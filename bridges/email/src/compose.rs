//! An agent's answer as a mail: lettre's builder writes the MIME (encodings, the
//! `multipart/alternative` of plain text and HTML, attachments), the bridge chooses the
//! headers that make it thread in the customer's mail client.
//!
//! `In-Reply-To` names the thread's newest mail and `References` its ids (root first), so
//! Gmail, Outlook and Thunderbird show the answer under the customer's mail; `Subject` is
//! `Re: <the thread's subject>` (Gmail also threads by subject). `Message-ID` is the one fixed
//! when the answer was queued: a resend after a crash is the same mail to the customer's
//! client. Automatic messages of the desk (Matrix notices, and whatever `automatic_senders`
//! write: the support bot's greeting and FAQ answers) carry `Auto-Submitted: auto-replied`
//! (RFC 3834), so the customer's auto-responder does not answer them.

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

/// What goes into one answer.
pub struct Answer<'a> {
    pub from_name: &'a str,
    pub from_address: &'a str,
    pub to_name: &'a str,
    pub to_address: &'a str,
    /// The thread's subject without `Re:`.
    pub subject: &'a str,
    pub message_id: &'a str,
    pub in_reply_to: Option<&'a str>,
    pub references: &'a [String],
    pub text: &'a str,
    pub html: Option<&'a str>,
    pub automatic: bool,
    pub attachments: Vec<(String, String, Vec<u8>)>,
}

/// The answer as a whole RFC 5322 message.
pub fn compose(answer: &Answer<'_>) -> Result<Vec<u8>, String> {
    let address = |a: &str| a.parse::<Address>().map_err(|e| format!("{a}: {e}"));
    let from = Mailbox::new(
        Some(answer.from_name.to_owned()).filter(|n| !n.is_empty()),
        address(answer.from_address)?,
    );
    let to = Mailbox::new(
        Some(answer.to_name.to_owned()).filter(|n| !n.is_empty() && !n.contains('@')),
        address(answer.to_address)?,
    );
    let subject = if answer.subject.is_empty() {
        "Re: your message".to_owned()
    } else {
        format!("Re: {}", answer.subject)
    };
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date_now()
        .message_id(Some(format!("<{}>", answer.message_id)));
    if let Some(parent) = answer.in_reply_to {
        builder = builder.in_reply_to(format!("<{parent}>"));
    }
    if !answer.references.is_empty() {
        let references: Vec<String> = answer.references.iter().map(|r| format!("<{r}>")).collect();
        builder = builder.references(references.join(" "));
    }
    if answer.automatic {
        builder = builder.header(AutoSubmitted);
    }
    let html = match answer.html {
        Some(html) => html.to_owned(),
        None => text_to_html(answer.text),
    };
    let body = MultiPart::alternative_plain_html(answer.text.to_owned(), html);
    let message = if answer.attachments.is_empty() {
        builder.multipart(body)
    } else {
        // A file sent without a caption is the attachment alone, no empty text parts.
        let mut mixed = if answer.text.trim().is_empty() {
            MultiPart::mixed().build()
        } else {
            MultiPart::mixed().multipart(body)
        };
        for (filename, content_type, data) in &answer.attachments {
            // A type lettre cannot write goes as bytes, which every client can save.
            let content_type = ContentType::parse(content_type)
                .or_else(|_| ContentType::parse("application/octet-stream"))
                .map_err(|e| e.to_string())?;
            let part: SinglePart =
                Attachment::new(filename.clone()).body(data.clone(), content_type);
            mixed = mixed.singlepart(part);
        }
        builder.multipart(mixed)
    };
    message.map(|m| m.formatted()).map_err(|e| e.to_string())
}

/// Plain text as HTML: escaped, line breaks kept.
fn text_to_html(text: &str) -> String {
    let mut html = String::with_capacity(text.len() + 32);
    for c in text.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\n' => html.push_str("<br>\n"),
            c => html.push(c),
        }
    }
    html
}

/// `Auto-Submitted: auto-replied` (RFC 3834).
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-replied".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_threads_and_carries_both_parts() {
        let references = vec!["root@example.org".to_owned(), "last@example.org".to_owned()];
        let answer = Answer {
            from_name: "Ana (Support)",
            from_address: "support@desk.example",
            to_name: "Eva",
            to_address: "eva@example.org",
            subject: "Pedido 42",
            message_id: "abc@desk.example",
            in_reply_to: Some("last@example.org"),
            references: &references,
            text: "Hola Eva,\n<ya está>",
            html: None,
            automatic: true,
            attachments: vec![(
                "factura.pdf".into(),
                "application/pdf".into(),
                b"%PDF-1.4".to_vec(),
            )],
        };
        let raw = String::from_utf8(compose(&answer).unwrap()).unwrap();
        // A name with parentheses goes as an RFC 2047 encoded word.
        assert!(
            raw.contains("From: =?utf-8?b?QW5hIChTdXBwb3J0KQ==?= <support@desk.example>"),
            "{raw}"
        );
        assert!(raw.contains("To: Eva <eva@example.org>"), "{raw}");
        assert!(raw.contains("Subject: Re: Pedido 42"));
        assert!(raw.contains("Message-ID: <abc@desk.example>"));
        assert!(raw.contains("In-Reply-To: <last@example.org>"));
        assert!(raw.contains("References: <root@example.org> <last@example.org>"));
        assert!(raw.contains("Auto-Submitted: auto-replied"));
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/html"));
        assert!(raw.contains("filename=\"factura.pdf\""));
    }
}
