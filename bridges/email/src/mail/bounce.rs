//! Delivery status notifications: which of our messages failed, for whom, and why.
//!
//! A bounce is a report *about* a mail the desk sent, not a message from a person: it must
//! never open a conversation or be answered (answering bounces is how mail loops start).
//! RFC 3464 reports are `multipart/report; report-type=delivery-status` with a
//! machine-readable `message/delivery-status` part and, usually, the returned message or its
//! headers. Older MTAs (qmail, some appliances) send plain text from MAILER-DAEMON with the
//! original message quoted in the body; those are recognised by the sender and a quoted
//! `Message-ID:` line or a returned-message part.
//!
//! Like everything in a mail, the report is the sender's claim: anyone can send a mail that
//! looks like a bounce of any Message-ID. The caller only acts on bounces whose original id is
//! one the desk sent, and a bounce only marks that message as not delivered.

use mail_parser::{Message, MimeHeaders, PartType};

use super::{Bounce, clean_id, truncate_at_char};

/// How much of a report's machine-readable parts is read. A real DSN part is well under a
/// kilobyte per recipient; the rest of a 25 MB mail is not worth scanning for fields.
const MAX_FIELDS_BYTES: usize = 64 * 1024;

/// Upper bound of the diagnostic kept (an MTA's multi-line SMTP answer fits easily).
const MAX_DIAGNOSTIC: usize = 1000;

/// How many lines of a plain-text bounce are searched for an SMTP answer or a quoted id.
const MAX_SCANNED_LINES: usize = 500;

/// What a report says, when the mail is one.
#[derive(Debug)]
pub(super) enum Report {
    /// A delivery status notification.
    Bounce(Bounce),
    /// Another kind of `multipart/report` (a read receipt, an abuse feedback report): automatic
    /// mail, with its report type.
    Other(String),
}

/// Reads `message` as a report. `text` is its plain text (the human-readable part of a DSN),
/// `from_daemon` whether it comes from MAILER-DAEMON or postmaster.
pub(super) fn detect(
    message: &Message<'_>,
    text: &str,
    subject: &str,
    from_daemon: bool,
) -> Option<Report> {
    let report_type = message
        .content_type()
        .filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
        .filter(|ct| {
            ct.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .map(|ct| {
            ct.attribute("report-type")
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let is_dsn = matches!(
        report_type.as_deref(),
        Some("delivery-status" | "global-delivery-status")
    );

    // The parts of the report: the machine-readable status, and the returned message (or
    // only its headers) whose Message-ID names the mail that failed.
    let mut status_fields: Option<String> = None;
    let mut returned = false;
    let mut returned_id: Option<String> = None;
    for part in &message.parts {
        if is_type(
            part,
            "message",
            &["delivery-status", "global-delivery-status"],
        ) {
            if status_fields.is_none() {
                status_fields = Some(bounded_text(part.contents()));
            }
        } else if is_type(part, "message", &["rfc822", "global"]) {
            returned = true;
            if returned_id.is_none() {
                returned_id = match &part.body {
                    PartType::Message(nested) => nested.message_id().and_then(clean_id),
                    // Not parsed as a message (broken): read its header block ourselves.
                    _ => message_id_in_headers(&bounded_text(part.contents())),
                };
            }
        } else if is_type(part, "text", &["rfc822-headers"])
            || is_type(part, "message", &["global-headers"])
        {
            returned = true;
            if returned_id.is_none() {
                returned_id = message_id_in_headers(&bounded_text(part.contents()));
            }
        }
    }

    let quoted_id = if from_daemon && !is_dsn && status_fields.is_none() {
        message_id_quoted_in(text)
    } else {
        None
    };
    let is_bounce =
        is_dsn || status_fields.is_some() || (from_daemon && (returned || quoted_id.is_some()));
    if !is_bounce {
        return report_type.map(|t| {
            let t = if t.is_empty() { "none".to_owned() } else { t };
            Report::Other(truncate_at_char(&t, 64).to_owned())
        });
    }

    let recipient_block = status_fields
        .as_deref()
        .map(recipient_fields)
        .unwrap_or_default();
    let field = |name: &str| {
        recipient_block
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };

    let action = field("action")
        .and_then(|a| a.split_whitespace().next())
        .map(|a| truncate_at_char(a, 32).to_ascii_lowercase())
        // A report without recipient fields, or a plain-text bounce, reports a failure.
        .unwrap_or_else(|| "failed".to_owned());
    let smtp_line = if field("diagnostic-code").is_none() || field("status").is_none() {
        smtp_answer_in(text)
    } else {
        None
    };
    let status = field("status")
        .and_then(|s| s.split_whitespace().next())
        .map(|s| truncate_at_char(s, 32).to_owned())
        .or_else(|| smtp_line.as_deref().and_then(enhanced_status_in));
    let diagnostic = field("diagnostic-code")
        .map(|d| truncate_at_char(d, MAX_DIAGNOSTIC).to_owned())
        .or(smtp_line)
        .unwrap_or_else(|| summary(text, subject));
    let recipient = field("final-recipient")
        .or_else(|| field("original-recipient"))
        .and_then(typed_address);
    let original_message_id = returned_id
        .or_else(|| last_id(message.in_reply_to().as_text_list()))
        .or_else(|| last_id(message.references().as_text_list()))
        .or(quoted_id);

    Some(Report::Bounce(Bounce {
        original_message_id,
        action,
        status,
        diagnostic,
        recipient,
    }))
}

fn is_type(part: &mail_parser::MessagePart<'_>, ctype: &str, subtypes: &[&str]) -> bool {
    subtypes.iter().any(|s| part.is_content_type(ctype, s))
}

/// The first `MAX_FIELDS_BYTES` of a part as text (field names and values are ASCII).
fn bounded_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_FIELDS_BYTES)]).into_owned()
}

/// The last usable id of an In-Reply-To or References header.
fn last_id(ids: Option<&[std::borrow::Cow<'_, str>]>) -> Option<String> {
    ids?.iter().rev().find_map(|id| clean_id(id))
}

/// Header fields (RFC 5322 syntax, as in a DSN part) in blocks separated by blank lines, with
/// folded lines unfolded, names lowercased, values trimmed and whitespace runs collapsed.
fn field_blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut block: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    for (_, value) in blocks.iter_mut().flatten() {
        if value.contains("  ") {
            *value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        }
    }
    blocks
}

/// The fields of the first recipient of a DSN: the first block that names a recipient or an
/// action (the per-message block before it names the reporting MTA only). Some MTAs omit the
/// blank line after the per-message fields; then both are one block, which works the same.
fn recipient_fields(status: &str) -> Vec<(String, String)> {
    field_blocks(status)
        .into_iter()
        .find(|block| {
            block
                .iter()
                .any(|(n, _)| n == "action" || n == "final-recipient" || n == "status")
        })
        .unwrap_or_default()
}

/// `rfc822; nobody@example.org` → `nobody@example.org` (RFC 3464 address-type; the type is
/// optional in practice).
fn typed_address(value: &str) -> Option<String> {
    let address = value.split_once(';').map_or(value, |(_, a)| a).trim();
    let address = address.trim_start_matches('<').trim_end_matches('>').trim();
    (!address.is_empty()).then(|| truncate_at_char(address, 320).to_owned())
}

/// The Message-ID of a returned header block (`text/rfc822-headers`, or a message/rfc822 part
/// the parser could not read).
fn message_id_in_headers(headers: &str) -> Option<String> {
    field_blocks(headers)
        .into_iter()
        .next()?
        .into_iter()
        .find(|(n, _)| n == "message-id")
        .and_then(|(_, v)| id_in(&v))
}

/// A `Message-ID:` line quoted in a plain-text bounce ("--- Below this line is a copy of the
/// message.", or `>`-quoted).
fn message_id_quoted_in(text: &str) -> Option<String> {
    text.lines().take(MAX_SCANNED_LINES * 4).find_map(|line| {
        let line = line.trim_start_matches(|c: char| c == '>' || c.is_whitespace());
        let head = line.get(..11)?;
        if head.eq_ignore_ascii_case("message-id:") {
            id_in(&line[11..])
        } else {
            None
        }
    })
}

/// The id in a Message-ID value: inside the first `<…>`, else the whole value.
fn id_in(value: &str) -> Option<String> {
    match value
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
    {
        Some((id, _)) => clean_id(id),
        None => clean_id(value),
    }
}

/// The first line of a plain-text bounce that carries an SMTP answer (`550 5.1.1 …`, `550-…`),
/// which says more than the "This is the mail system at host …" preamble.
fn smtp_answer_in(text: &str) -> Option<String> {
    text.lines()
        .take(MAX_SCANNED_LINES)
        .map(str::trim)
        .find(|line| !line.starts_with('>') && has_smtp_code(line))
        .map(|line| truncate_at_char(line, MAX_DIAGNOSTIC).to_owned())
}

/// Whether `line` has a 4xx or 5xx reply code as a word of its own (followed by a space or
/// `-`, as SMTP writes them).
fn has_smtp_code(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.windows(4).enumerate().any(|(i, w)| {
        matches!(w[0], b'4' | b'5')
            && w[1].is_ascii_digit()
            && w[2].is_ascii_digit()
            && matches!(w[3], b' ' | b'-')
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
    })
}

/// An RFC 3463 enhanced status code (`5.1.1`) in a line.
fn enhanced_status_in(line: &str) -> Option<String> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|word| {
            let mut pieces = word.split('.');
            let class = pieces.next().unwrap_or_default();
            matches!(class, "2" | "4" | "5")
                && pieces.clone().count() == 2
                && pieces.all(|p| (1..=3).contains(&p.len()))
        })
        .map(str::to_owned)
}

/// What a report without a diagnostic says: its first non-blank line, else its subject.
fn summary(text: &str, subject: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(subject.trim());
    if line.is_empty() {
        "delivery failed".to_owned()
    } else {
        truncate_at_char(line, 200).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_unfolded_and_split_in_blocks() {
        let status = "Reporting-MTA: dns; mx.example.org\r\nArrival-Date: Mon, 1 Jan 2024\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: Failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <a@example.org>:\r\n    Recipient   address rejected\r\n\r\nFinal-Recipient: rfc822; b@example.org\r\nAction: delayed\r\n";
        let blocks = field_blocks(status);
        assert_eq!(blocks.len(), 3);
        let first = recipient_fields(status);
        assert!(first.contains(&("action".to_owned(), "Failed".to_owned())));
        assert!(first.contains(&(
            "diagnostic-code".to_owned(),
            "smtp; 550 5.1.1 <a@example.org>: Recipient address rejected".to_owned()
        )));
        assert_eq!(
            typed_address("rfc822; <a@example.org>").as_deref(),
            Some("a@example.org")
        );
        assert_eq!(
            typed_address("a@example.org").as_deref(),
            Some("a@example.org")
        );
        assert_eq!(typed_address("rfc822;").as_deref(), None);
    }

    #[test]
    fn returned_headers_and_quoted_ids() {
        let headers = "Received: from x\r\nMessage-ID:\r\n <abc@desk.example>\r\nSubject: hi\r\n";
        assert_eq!(
            message_id_in_headers(headers).as_deref(),
            Some("abc@desk.example")
        );
        let text = "Hi. This is the qmail-send program.\n--- Below this line is a copy of the message.\n\nReturn-Path: <desk@example.com>\nMessage-Id: <q1@desk.example>\n";
        assert_eq!(
            message_id_quoted_in(text).as_deref(),
            Some("q1@desk.example")
        );
    }

    #[test]
    fn smtp_answers_in_plain_text() {
        let text = "This is the mail system at host mx.example.org.\n\n<a@example.org>: host mx2 said: 550 5.7.1 Rejected (in reply to RCPT TO)\n";
        let line = smtp_answer_in(text);
        assert_eq!(
            line.as_deref(),
            Some("<a@example.org>: host mx2 said: 550 5.7.1 Rejected (in reply to RCPT TO)")
        );
        assert_eq!(
            enhanced_status_in(line.as_deref().unwrap_or_default()).as_deref(),
            Some("5.7.1")
        );
        assert!(!has_smtp_code("order 5500 shipped"));
        assert_eq!(summary("\n  First line  \nsecond", "s"), "First line");
        assert_eq!(summary("", ""), "delivery failed");
    }
}
