//! The mail's parts that are not its text, taken out of the parsed message.
//!
//! Names and types are the sender's claims like everything else; they become a Matrix file's
//! `filename` and `mimetype` and, on agents' machines, a file's name. So a name is reduced to
//! a bare file name, and a type to a plain `type/subtype` token pair.

use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};

use super::{Attachment, clean_id, truncate_at_char};

/// Moves the attachments out of the parsed message, in order.
pub(super) fn take_all(message: &mut Message<'_>, raw: &[u8]) -> Vec<Attachment> {
    let ids = std::mem::take(&mut message.attachments);
    let mut attachments = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(part) = message.parts.get_mut(id as usize) else {
            continue;
        };
        let content_type = content_type_of(part);
        let content_id = part.content_id().and_then(clean_id);
        let as_attachment = part
            .content_disposition()
            .is_some_and(|d| d.is_attachment());
        let filename = part
            .attachment_name()
            .map(clean_filename)
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| fallback_filename(&content_type));
        let (encoding, start, end) = (
            part.encoding,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        let data = match std::mem::take(&mut part.body) {
            PartType::Text(text) | PartType::Html(text) => text.into_owned().into_bytes(),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => bytes.into_owned(),
            // A message sent as is lies in `raw` between the part's offsets; one that was
            // base64 or quoted-printable was decoded into the nested message's own buffer.
            PartType::Message(nested) => {
                if encoding == Encoding::None {
                    raw.get(start..end).unwrap_or_default().to_vec()
                } else {
                    nested.raw_message.into_owned()
                }
            }
            PartType::Multipart(_) => continue,
        };
        attachments.push(Attachment {
            filename,
            inline: content_id.is_some() && !as_attachment,
            content_type,
            content_id,
            data,
        });
    }
    attachments
}

/// `type/subtype`, lowercased, of a part; the MIME defaults when it declares none.
fn content_type_of(part: &MessagePart<'_>) -> String {
    const OCTET_STREAM: &str = "application/octet-stream";
    let is_token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(subtype) if is_token(ct.ctype()) && is_token(subtype) => {
                format!("{}/{}", ct.ctype(), subtype).to_ascii_lowercase()
            }
            _ => OCTET_STREAM.to_owned(),
        },
        None => match part.body {
            PartType::Message(_) => "message/rfc822".to_owned(),
            PartType::Text(_) => "text/plain".to_owned(),
            PartType::Html(_) => "text/html".to_owned(),
            _ => OCTET_STREAM.to_owned(),
        },
    }
}

/// A file name as a bare name: the last path component (senders write `C:\x\y.pdf`, or
/// `../../x`), without control characters, bounded to 255 bytes (what file systems take).
fn clean_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let base: String = base.chars().filter(|c| !c.is_control()).collect();
    let base = base.trim();
    if base == "." || base == ".." {
        return String::new();
    }
    truncate_at_char(base, 255).to_owned()
}

/// A name for a part that has none: `image.png` for images, `attachment.pdf`-like for known
/// types, `attachment` otherwise.
fn fallback_filename(content_type: &str) -> String {
    let (kind, subtype) = content_type.split_once('/').unwrap_or((content_type, ""));
    let extension = match content_type {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => Some("jpg"),
        "image/svg+xml" => Some("svg"),
        "application/pdf" => Some("pdf"),
        "text/plain" | "text/rfc822-headers" | "message/delivery-status" => Some("txt"),
        "text/html" => Some("html"),
        "text/calendar" => Some("ics"),
        "message/rfc822" | "message/global" => Some("eml"),
        _ if kind == "image"
            && !subtype.is_empty()
            && subtype.len() <= 8
            && subtype.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Some(subtype)
        }
        _ => None,
    };
    let stem = if kind == "image" {
        "image"
    } else {
        "attachment"
    };
    match extension {
        Some(extension) => format!("{stem}.{extension}"),
        None => stem.to_owned(),
    }
}
