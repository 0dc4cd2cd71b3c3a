//! How stored media is presented to browsers: `Content-Type` and `Content-Disposition`.
//!
//! Media is user content served from the homeserver's origin, so a browser must never run it:
//! only types that are safe to render (Synapse's list, from Element's) are `inline`; the rest,
//! HTML and SVG included, are `attachment`. File names follow RFC 6266: a plain `filename=`
//! when the name is an RFC 7230 token, else `filename*=utf-8''` with RFC 5987 percent-encoding.

/// Types a browser may render in place (Synapse's `INLINE_CONTENT_TYPES`; SVG deliberately not).
const INLINE_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Text types served with an explicit UTF-8 charset when they have none (as Synapse does).
const TEXT_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/csv",
    "text/html",
    "text/calendar",
    "text/plain",
    "text/javascript",
    "application/json",
    "application/ld+json",
    "application/rtf",
    "image/svg+xml",
    "text/xml",
];

/// The `Content-Type` to serve stored media with.
pub(crate) fn content_type(stored: &str) -> String {
    if TEXT_CONTENT_TYPES.contains(&stored.to_ascii_lowercase().as_str()) {
        format!("{stored}; charset=UTF-8")
    } else {
        stored.to_owned()
    }
}

/// The `Content-Disposition` for media of `content_type` named `filename`.
pub(crate) fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = if INLINE_CONTENT_TYPES.contains(&essence.as_str()) {
        "inline"
    } else {
        "attachment"
    };
    match filename.filter(|f| !f.is_empty()) {
        Some(name) if is_token(name) => format!("{kind}; filename={name}"),
        Some(name) => format!("{kind}; filename*=utf-8''{}", percent_encode(name)),
        None => kind.to_owned(),
    }
}

/// The file name a `Content-Disposition` gives (`filename*=utf-8''…` first, then
/// `filename=`), as another server's media answer carries it.
pub(crate) fn filename_of(disposition: &str) -> Option<String> {
    let params: Vec<(&str, &str)> = disposition
        .split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let extended = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("filename*"));
    if let Some((_, v)) = extended
        && let Some((_, encoded)) = v.split_once("''")
        && let Some(name) = percent_decode(encoded)
    {
        return Some(name).filter(|n| !n.is_empty());
    }
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("filename"))
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|n| !n.is_empty())
}

/// An RFC 7230 token: visible ASCII without separators.
fn is_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b > 32 && b < 127 && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// The reverse of [`percent_encode`]; `None` for a malformed escape or bytes not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next()?, bytes.next()?];
        out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
    }
    String::from_utf8(out).ok()
}

/// RFC 5987 `value-chars`: `attr-char`s as they are, every other UTF-8 byte as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_types_are_inline_and_others_attachments() {
        assert_eq!(
            content_disposition("image/png", Some("cat.png")),
            "inline; filename=cat.png"
        );
        assert_eq!(
            content_disposition("text/html", Some("x.html")),
            "attachment; filename=x.html"
        );
        assert_eq!(content_disposition("image/svg+xml", None), "attachment");
        assert_eq!(
            content_disposition("IMAGE/JPEG; q=1", None),
            "inline",
            "parameters and case do not matter"
        );
    }

    #[test]
    fn names_that_are_not_tokens_are_rfc5987_encoded() {
        assert_eq!(
            content_disposition("application/pdf", Some("factura nº 7.pdf")),
            "attachment; filename*=utf-8''factura%20n%C2%BA%207.pdf"
        );
        assert_eq!(
            content_disposition("text/plain", Some("a\"b;c")),
            "inline; filename*=utf-8''a%22b%3Bc"
        );
    }

    #[test]
    fn text_gets_a_charset() {
        assert_eq!(content_type("text/plain"), "text/plain; charset=UTF-8");
        assert_eq!(
            content_type("text/plain; charset=latin1"),
            "text/plain; charset=latin1"
        );
        assert_eq!(content_type("image/png"), "image/png");
    }

    #[test]
    fn the_file_name_is_read_back_from_a_disposition() {
        for name in [
            "report.pdf",
            "Factura ñ 2024+1.pdf",
            "a \"quoted\" name.txt",
        ] {
            let disposition = content_disposition("application/pdf", Some(name));
            assert_eq!(
                filename_of(&disposition).as_deref(),
                Some(name),
                "{disposition}"
            );
        }
        assert_eq!(
            filename_of("inline; filename=\"a b.png\"").as_deref(),
            Some("a b.png")
        );
        assert_eq!(filename_of("attachment"), None);
        assert_eq!(filename_of("attachment; filename*=utf-8''%FF"), None);
    }
}
