//! How an inbound mail is read for the desk: who wrote it, which conversation it continues,
//! what it says, what it carries, and whether a person wrote it at all.
//!
//! # What is trusted
//!
//! Nothing in a mail is verified here. Every header — `From`, `Reply-To`, `Message-ID`,
//! `In-Reply-To`, `Date`, `Auto-Submitted`, a bounce's report — is the sender's claim, and
//! the caller weighs it (SPF/DKIM/DMARC results, the envelope, whether a referenced id is one
//! the desk sent). What this module does guarantee is that the values are *safe to handle*:
//!
//! - the HTML is sanitized by an allow-list before it can reach agents' clients (the `html`
//!   submodule): no scripts, handlers, styles or remote images;
//! - message ids are bounded (998 bytes, the RFC 5322 line limit) and stripped of anything
//!   that could end a header or its brackets when they are echoed into the desk's own
//!   `In-Reply-To`/`References`; a References list keeps at most [`MAX_THREAD_IDS`] ids;
//! - addresses with control characters or over RFC 5321's length are dropped rather than
//!   passed on to become an SMTP recipient; names and subjects are single lines;
//! - attachment file names are bare names (no path), bounded, and content types are plain
//!   `type/subtype` tokens.
//!
//! # Cost
//!
//! A mail is at most the listener's size limit (25 MB). Parsing is mail-parser's single pass;
//! everything after it is linear in the text or HTML, and each attachment's bytes are moved
//! out of the parsed message, or copied once when the parser borrowed them from `raw`.

mod attachment;
mod bounce;
mod html;
mod quote;

pub use quote::trim_quoted;

use mail_parser::decoders::html::{html_to_text, text_to_html};
use mail_parser::{HeaderValue, Message, MessageParser, MessagePart, PartType};

/// An inbound mail as the desk reads it.
#[derive(Debug, Clone)]
pub struct ParsedMail {
    /// `Message-ID` without <>; None when absent.
    pub message_id: Option<String>,
    /// `In-Reply-To` ids, without <>, in order.
    pub in_reply_to: Vec<String>,
    /// `References` ids, without <>, in order (oldest first, as in the header).
    pub references: Vec<String>,
    /// The `From` address, lowercased domain part (keep the local part as given), and display
    /// name (decoded; may be empty).
    pub from_address: String,
    pub from_name: String,
    /// `Reply-To` address if present (replies go there), else None.
    pub reply_to: Option<String>,
    /// Decoded subject ("" when absent).
    pub subject: String,
    /// `Date` as ms since the epoch, when it parses.
    pub date_ms: Option<u64>,
    /// The plain text agents see: the text/plain part (or text converted from the HTML part
    /// when there is no plain one), with the quoted history of a reply trimmed and trailing
    /// whitespace trimmed. Line ends are `\n`.
    pub text: String,
    /// The text before trimming (kept in full in the record).
    pub full_text: String,
    /// The HTML part sanitized for a Matrix `formatted_body`, with the quoted history trimmed
    /// the same way; None when the mail has no HTML part or it sanitizes to nothing.
    pub html: Option<String>,
    /// Attachments and inline images, in order, decoded.
    pub attachments: Vec<Attachment>,
    /// What kind of mail this is.
    pub kind: MailKind,
}

/// A part of the mail that is not its text: a file, or an image the HTML shows inline.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Decoded (RFC 2231/2047), without any path; `attachment`, `attachment.pdf` or
    /// `image.png`-like from the content type when the mail names none.
    pub filename: String,
    /// `image/png`, lowercased, without parameters; `application/octet-stream` when absent or
    /// malformed. Text parts are decoded to UTF-8 whatever their declared charset.
    pub content_type: String,
    /// `Content-ID` without <>.
    pub content_id: Option<String>,
    /// An inline image: a part with a `Content-ID` that is not `Content-Disposition:
    /// attachment` (the HTML refers to it as `cid:`; `multipart/related` parts often carry no
    /// disposition at all).
    pub inline: bool,
    pub data: Vec<u8>,
}

/// What kind of mail this is, which decides what the desk does with it.
#[derive(Debug, Clone, PartialEq)]
pub enum MailKind {
    /// A person's mail: becomes a message in a conversation.
    Personal,
    /// Automatic mail (auto-replies, lists, bulk, read receipts, postmasters, the desk's own
    /// mail coming back): recorded, never answered. The reason says which header decided.
    Automatic(String),
    /// A delivery status notification about a message we sent.
    Bounce(Bounce),
}

/// A delivery status notification, as far as it can be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounce {
    /// Message-ID (without <>) of the message that failed: from the returned
    /// `message/rfc822` or `text/rfc822-headers` part's Message-ID; else the DSN's own
    /// In-Reply-To/References last id; else a `Message-ID:` line quoted in a plain-text bounce.
    pub original_message_id: Option<String>,
    /// `Action` of the first recipient block (`failed`, `delayed`, `delivered`, …),
    /// lowercased; `failed` when the report has none.
    pub action: String,
    /// `Status` (`5.1.1`), or the enhanced status code of a plain-text bounce's SMTP answer.
    pub status: Option<String>,
    /// `Diagnostic-Code` text (e.g. `smtp; 550 5.1.1 user unknown`), trimmed; else the SMTP
    /// answer quoted in the text; else a short summary (the report's first line).
    pub diagnostic: String,
    /// Recipient (`Final-Recipient`, else `Original-Recipient`, without the `rfc822;` type).
    pub recipient: Option<String>,
}

/// The longest message id kept: RFC 5322's line limit, so that an id always fits a header
/// line when the desk echoes it.
pub const MAX_ID_LEN: usize = 998;

/// How many `References` ids are kept: the first (the thread's root) and the most recent
/// ones. Threading needs the ends of the list; a header of thousands of ids is an attack, not
/// a conversation.
pub const MAX_THREAD_IDS: usize = 64;

/// The longest address kept: RFC 5321's 64-byte local part, `@` and 255-byte domain.
const MAX_ADDRESS_LEN: usize = 320;

/// Display names and subjects are cut at this many bytes: they become room names and member
/// names, not documents.
const MAX_LINE_LEN: usize = 998;

/// The reason given for a mail from the desk's own address.
pub const FROM_DESK: &str = "from the desk's own address";

/// Parses `raw` (the message as received, headers and body). None when it is not a mail at
/// all (no headers). `desk_address` is the desk's own address (compared without case, and
/// with any `+tag` of the sender's local part ignored): a mail from it is
/// `Automatic("from the desk's own address")`, so that the desk never answers itself.
pub fn parse(raw: &[u8], desk_address: &str) -> Option<ParsedMail> {
    let mut message = MessageParser::default().parse(raw)?;
    if message
        .parts
        .first()
        .is_none_or(|root| root.headers.is_empty())
    {
        return None;
    }

    let message_id = message.message_id().and_then(clean_id);
    let in_reply_to = thread_ids(message.in_reply_to());
    let references = thread_ids(message.references());
    let from = message.from().and_then(|list| list.first());
    let from_address = from
        .and_then(|a| a.address())
        .and_then(normalize_address)
        .unwrap_or_default();
    let from_name = from
        .and_then(|a| a.name())
        .map(one_line)
        .unwrap_or_default();
    let reply_to = message
        .reply_to()
        .and_then(|list| list.first())
        .and_then(|a| a.address())
        .and_then(normalize_address);
    let subject = one_line(message.subject().unwrap_or_default());
    let date_ms = message
        .date()
        .filter(|d| d.is_valid())
        .and_then(|d| u64::try_from(d.to_timestamp()).ok())
        .map(|secs| secs.saturating_mul(1000));

    // A forward is sent to the desk *for* its quoted content: nothing is trimmed.
    let forwarded = is_forward(&subject);
    let (full_text, pretrimmed) = body_text(&message, forwarded);
    let text = match pretrimmed.as_deref().map(trim_quoted) {
        _ if forwarded => full_text.clone(),
        // The HTML's quote cut can leave no text where its HTML had some (an image, say).
        Some(text) if !text.is_empty() => text.to_owned(),
        _ => trim_quoted(&full_text).to_owned(),
    };
    let html = body_html(&message, forwarded);
    let kind = classify(&message, &from_address, desk_address, &full_text, &subject);
    let attachments = attachment::take_all(&mut message, raw);

    Some(ParsedMail {
        message_id,
        in_reply_to,
        references,
        from_address,
        from_name,
        reply_to,
        subject,
        date_ms,
        text,
        full_text,
        html,
        attachments,
        kind,
    })
}

/// Normalised message id: trimmed, without <>, at most [`MAX_ID_LEN`] bytes, None if empty.
///
/// Whitespace, control characters and `<`/`>` inside are dropped: an id is echoed into the
/// desk's own `In-Reply-To`/`References`, where a line break would start a new header and a
/// `>` would end the id early.
pub fn clean_id(id: &str) -> Option<String> {
    let id = id.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id);
    let mut clean = String::with_capacity(id.len().min(MAX_ID_LEN));
    for c in id.chars() {
        if c.is_whitespace() || c.is_control() || c == '<' || c == '>' {
            continue;
        }
        if clean.len() + c.len_utf8() > MAX_ID_LEN {
            break;
        }
        clean.push(c);
    }
    (!clean.is_empty()).then_some(clean)
}

/// Reply and forward prefixes clients put before a subject, lowercase: English, Spanish
/// (`RV` = reenviado), German (`AW`, `WG`), Scandinavian (`SV`, `VS`, `VL`), French (`TR`),
/// Portuguese (`ENC`, `RES`), Dutch (`Antw`), Italian (`Rif`), Polish (`Odp`).
const SUBJECT_PREFIXES: &[&str] = &[
    "re", "fw", "fwd", "rv", "aw", "sv", "wg", "tr", "enc", "res", "antw", "vs", "vl", "rif", "odp",
];

/// The prefixes of [`SUBJECT_PREFIXES`] that mean a forward.
const FORWARD_PREFIXES: &[&str] = &["fw", "fwd", "rv", "wg", "tr", "enc"];

/// The subject without reply/forward prefixes (`Re:`, `RE:`, `Fwd:`, `FW:`, `Rv:`, `Aw:`,
/// `Sv:`, `Re[2]:`, `RE :`, any number of them), for showing and for `Re: <subject>` on
/// answers. A `[…]` tag (a list's, a ticket number) is kept, and ends the prefixes.
pub fn base_subject(subject: &str) -> &str {
    let mut rest = subject.trim();
    while let Some((_, after)) = strip_subject_prefix(rest) {
        rest = after.trim_start();
    }
    rest
}

/// `("re", "rest")` when `subject` starts with a reply or forward prefix.
fn strip_subject_prefix(subject: &str) -> Option<(&str, &str)> {
    let word_len = subject.bytes().take_while(u8::is_ascii_alphabetic).count();
    let word = subject.get(..word_len)?;
    if !SUBJECT_PREFIXES
        .iter()
        .any(|p| word.eq_ignore_ascii_case(p))
    {
        return None;
    }
    let mut rest = &subject[word_len..];
    // A count: "Re[2]:", "Re(2):".
    if let Some(counted) = rest.strip_prefix(['[', '(']) {
        let digits = counted.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = counted[digits..].strip_prefix([']', ')'])?;
    }
    // French typography puts a space before the colon; CJK clients use a full-width one.
    let rest = rest.trim_start_matches(' ');
    let rest = rest.strip_prefix(':').or_else(|| rest.strip_prefix('：'))?;
    Some((word, rest))
}

/// Whether the subject's first prefix is a forward's ("Fwd: Re: x" is a forward, "Re: Fwd: x"
/// an answer to one).
fn is_forward(subject: &str) -> bool {
    strip_subject_prefix(subject.trim()).is_some_and(|(word, _)| {
        FORWARD_PREFIXES
            .iter()
            .any(|p| word.eq_ignore_ascii_case(p))
    })
}

/// `References`/`In-Reply-To` ids, cleaned; of a long list the first and the last
/// `MAX_THREAD_IDS - 1`.
fn thread_ids(value: &HeaderValue<'_>) -> Vec<String> {
    let Some(ids) = value.as_text_list() else {
        return Vec::new();
    };
    let (first, recent) = if ids.len() > MAX_THREAD_IDS {
        (&ids[..1], &ids[ids.len() - (MAX_THREAD_IDS - 1)..])
    } else {
        (ids, &ids[..0])
    };
    first
        .iter()
        .chain(recent)
        .filter_map(|id| clean_id(id))
        .collect()
}

/// An address as the desk keeps it: trimmed, without <>, the domain lowercased (domains are
/// case-insensitive; local parts, strictly, are not). None when empty, too long, or holding
/// whitespace or control characters — such a string would not be a deliverable address, and
/// it could be a way to smuggle a line into an SMTP command.
fn normalize_address(address: &str) -> Option<String> {
    let address = address.trim();
    let address = address.strip_prefix('<').unwrap_or(address);
    let address = address.strip_suffix('>').unwrap_or(address);
    if address.is_empty()
        || address.len() > MAX_ADDRESS_LEN
        || address.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return None;
    }
    Some(match address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => address.to_owned(),
    })
}

/// Whether `from` is the desk's own address: the same address without case, also with a
/// `+tag` on the local part (`support+1234@desk.example` is the desk's mailbox too).
fn is_desk(from: &str, desk: &str) -> bool {
    let desk = desk.trim();
    if from.is_empty() || desk.is_empty() {
        return false;
    }
    if from.eq_ignore_ascii_case(desk) {
        return true;
    }
    match (from.rsplit_once('@'), desk.rsplit_once('@')) {
        (Some((from_local, from_domain)), Some((desk_local, desk_domain))) => {
            let from_local = from_local.split_once('+').map_or(from_local, |(l, _)| l);
            from_local.eq_ignore_ascii_case(desk_local)
                && from_domain.eq_ignore_ascii_case(desk_domain)
        }
        _ => false,
    }
}

/// A header value as one line: control characters (a decoded `=?…?=` may hold line breaks)
/// become spaces, the ends are trimmed, and the length is bounded.
fn one_line(value: &str) -> String {
    let value = truncate_at_char(value.trim(), MAX_LINE_LEN);
    if value.chars().any(char::is_control) {
        value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim()
            .to_owned()
    } else {
        value.to_owned()
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The mail's text bodies joined: text/plain as is, HTML converted to text. Also, when a body
/// part is HTML (no plain alternative), the text converted from that HTML with its quoted
/// history already cut: the HTML marks quotes (`<blockquote type="cite">`, Gmail's div) far
/// more reliably than the text converted from it does.
fn body_text(message: &Message<'_>, forwarded: bool) -> (String, Option<String>) {
    let mut full = String::new();
    let mut pretrimmed: Option<String> = None;
    for &id in &message.text_body {
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        let (piece, piece_trimmed) = match &part.body {
            PartType::Text(text) => (text.to_string(), None),
            PartType::Html(html) => {
                let trimmed = if forwarded {
                    None
                } else {
                    Some(quote::trim_quoted_html(html)).filter(|t| t.len() < html.len())
                };
                (html_to_text(html), trimmed.map(html_to_text))
            }
            _ => continue,
        };
        if piece.trim().is_empty() {
            continue;
        }
        if piece_trimmed.is_some() && pretrimmed.is_none() {
            // Everything so far was untouched by trimming.
            pretrimmed = Some(full.clone());
        }
        if let Some(pretrimmed) = &mut pretrimmed {
            if !pretrimmed.is_empty() {
                pretrimmed.push('\n');
            }
            pretrimmed.push_str(piece_trimmed.as_deref().unwrap_or(&piece));
        }
        if !full.is_empty() {
            full.push('\n');
        }
        full.push_str(&piece);
    }
    (normalize_text(full), pretrimmed.map(normalize_text))
}

/// `\n` line ends and no trailing whitespace.
fn normalize_text(text: String) -> String {
    let mut text = if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text
    };
    text.truncate(text.trim_end().len());
    text
}

/// The HTML bodies joined, quotes trimmed (unless the mail is a forward), sanitized. When
/// trimming leaves nothing to show, the whole HTML is used instead (as with the text, the
/// history is better than nothing).
fn body_html(message: &Message<'_>, forwarded: bool) -> Option<String> {
    let parts: Vec<&MessagePart<'_>> = message
        .html_body
        .iter()
        .filter_map(|&id| message.parts.get(id as usize))
        .collect();
    // mail-parser lists a plain-text-only mail's text as its "HTML body" too (converted on
    // demand); only a real HTML part makes a formatted body.
    if !parts.iter().any(|p| matches!(p.body, PartType::Html(_))) {
        return None;
    }
    let mut full = String::new();
    let mut trimmed = String::new();
    for part in parts {
        match &part.body {
            PartType::Html(html) => {
                full.push_str(html);
                trimmed.push_str(if forwarded {
                    html
                } else {
                    quote::trim_quoted_html(html)
                });
            }
            PartType::Text(text) => {
                let html = text_to_html(text);
                full.push_str(&html);
                trimmed.push_str(&html);
            }
            _ => {}
        }
    }
    let clean = html::sanitize(&trimmed);
    if html::shows_something(&clean) {
        return Some(clean.trim().to_owned());
    }
    if trimmed.len() < full.len() {
        let clean = html::sanitize(&full);
        if html::shows_something(&clean) {
            return Some(clean.trim().to_owned());
        }
    }
    None
}

/// `Precedence` values of mail nobody should answer (RFC 3834 2, and common practice).
const BULK_PRECEDENCE: &[&str] = &["bulk", "list", "junk", "auto_reply"];

/// Decides what kind of mail this is. The order matters: the desk's own mail first (a loop
/// is the worst outcome), then reports (a bounce also carries `Auto-Submitted`, but is worth
/// more as a bounce), then the RFC 3834 and de-facto headers.
///
/// `X-Auto-Response-Suppress` is deliberately not read: Outlook sets it on ordinary mail
/// people write.
fn classify(
    message: &Message<'_>,
    from_address: &str,
    desk_address: &str,
    text: &str,
    subject: &str,
) -> MailKind {
    if is_desk(from_address, desk_address) {
        return MailKind::Automatic(FROM_DESK.to_owned());
    }
    let local = from_address
        .rsplit_once('@')
        .map_or(from_address, |(local, _)| local);
    let daemon = ["mailer-daemon", "postmaster"]
        .into_iter()
        .find(|d| local.eq_ignore_ascii_case(d));

    match bounce::detect(message, text, subject, daemon.is_some()) {
        Some(bounce::Report::Bounce(bounce)) => return MailKind::Bounce(bounce),
        Some(bounce::Report::Other(report_type)) => {
            return MailKind::Automatic(format!("multipart/report; report-type={report_type}"));
        }
        None => {}
    }

    if let Some(value) = header_token(message, "Auto-Submitted")
        && value != "no"
    {
        return MailKind::Automatic(format!("Auto-Submitted: {value}"));
    }
    for name in ["X-Autoreply", "X-Autorespond"] {
        if header_token(message, name).is_some_and(|v| v != "no") {
            return MailKind::Automatic(name.to_owned());
        }
    }
    if let Some(value) = header_token(message, "Precedence")
        && BULK_PRECEDENCE.contains(&value.as_str())
    {
        return MailKind::Automatic(format!("Precedence: {value}"));
    }
    for name in ["List-Id", "List-Unsubscribe"] {
        if has_header(message, name) {
            return MailKind::Automatic(name.to_owned());
        }
    }
    if let Some(daemon) = daemon {
        return MailKind::Automatic(format!("from {daemon}"));
    }
    MailKind::Personal
}

/// The first word of a top-level header's value, lowercased and bounded (it goes into a
/// reason string): `auto-replied` of `Auto-Submitted: auto-replied (vacation)`. None when the
/// header is absent or blank. Read from the raw bytes, lossily: a header with a stray 8-bit
/// byte still counts.
fn header_token(message: &Message<'_>, name: &str) -> Option<String> {
    let header = message
        .headers()
        .iter()
        .rev()
        .find(|h| h.name().eq_ignore_ascii_case(name))?;
    let value = message
        .raw_message
        .get(header.offset_start() as usize..header.offset_end() as usize)?;
    let value = String::from_utf8_lossy(&value[..value.len().min(256)]);
    let token = value
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .find(|t| !t.is_empty())?;
    let token: String = truncate_at_char(token, 64)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    Some(token.to_lowercase())
}

/// Whether the mail has a top-level header `name`, whatever its value.
fn has_header(message: &Message<'_>, name: &str) -> bool {
    message
        .headers()
        .iter()
        .any(|h| h.name().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests;
