//! Bytes of a web page to text: the charset it declares, and HTML character references.
//!
//! Pages declare their encoding in the `Content-Type` header or in a `<meta charset>` near the
//! top. UTF-8 and the Latin-1 family (ISO-8859-1, and Windows-1252, which browsers use for both
//! labels) cover most of the web that is not UTF-8; anything else is read as UTF-8 with
//! replacement characters, which still keeps the ASCII of titles and tags intact.

/// The page as text, in the charset the header or the document declares.
pub(crate) fn decode(body: &[u8], content_type: Option<&str>) -> String {
    if let Some(rest) = body.strip_prefix(b"\xEF\xBB\xBF") {
        return String::from_utf8_lossy(rest).into_owned();
    }
    let declared = content_type
        .and_then(charset_param)
        .or_else(|| sniff_meta_charset(&body[..body.len().min(1024)]));
    match declared.as_deref() {
        Some(
            "iso-8859-1" | "latin1" | "latin-1" | "windows-1252" | "cp1252" | "us-ascii" | "ascii"
            | "l1",
        ) => windows_1252(body),
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}

/// `charset=` of a header value or `<meta>` content, lowercased, quotes removed.
fn charset_param(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let at = lower.find("charset")?;
    let rest = lower[at + "charset".len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let rest = rest.trim_start_matches(['"', '\'']);
    let end = rest
        .find(|c: char| c == '"' || c == '\'' || c == ';' || c == '>' || c.is_whitespace())
        .unwrap_or(rest.len());
    let charset = &rest[..end];
    (!charset.is_empty()).then(|| charset.to_owned())
}

/// A `charset=` in the first bytes of the document (`<meta charset="...">` or the
/// `http-equiv` form); both spell it the same way.
fn sniff_meta_charset(head: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(head);
    let lower = head.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("<meta") {
        let start = from + at;
        let end = lower[start..].find('>').map_or(lower.len(), |e| start + e);
        if let Some(charset) = charset_param(&lower[start..end]) {
            return Some(charset);
        }
        from = end;
    }
    None
}

/// Windows-1252, the superset browsers decode ISO-8859-1 as.
fn windows_1252(body: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    body.iter()
        .map(|&b| match b {
            0x80..=0x9F => HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        })
        .collect()
}

/// Replaces character references (`&amp;`, `&#39;`, `&#x2014;`, the common named ones).
/// Unknown or malformed references stay as written, as browsers show them.
pub(crate) fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match reference(rest) {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character a reference at the start of `text` stands for, and its length.
fn reference(text: &str) -> Option<(char, usize)> {
    let end = text[1..].find(';').map(|e| e + 1).filter(|e| *e <= 32)?;
    let body = &text[1..end];
    let c = if let Some(num) = body.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        char::from_u32(code).filter(|c| *c != '\0')?
    } else {
        match body {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => '\u{A0}',
            "copy" => '©',
            "reg" => '®',
            "trade" => '™',
            "hellip" => '…',
            "ndash" => '–',
            "mdash" => '—',
            "lsquo" => '‘',
            "rsquo" => '’',
            "ldquo" => '“',
            "rdquo" => '”',
            "laquo" => '«',
            "raquo" => '»',
            "euro" => '€',
            "middot" => '·',
            "bull" => '•',
            _ => return None,
        }
    };
    Some((c, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_replaced() {
        assert_eq!(
            unescape("Tom &amp; Jerry&#39;s &quot;show&quot; &#x2014; &lt;b&gt; &copy;"),
            "Tom & Jerry's \"show\" — <b> ©"
        );
        assert_eq!(unescape("a & b &bogus; &#xZZ; &"), "a & b &bogus; &#xZZ; &");
    }

    #[test]
    fn charset_from_header_then_meta() {
        let latin1 = b"<title>Caf\xe9</title>";
        assert_eq!(
            decode(latin1, Some("text/html; charset=ISO-8859-1")),
            "<title>Café</title>"
        );
        let meta = b"<meta charset=\"windows-1252\"><title>\x93Hola\x94 ni\xf1o</title>";
        assert_eq!(
            decode(meta, Some("text/html")),
            "<meta charset=\"windows-1252\"><title>“Hola” niño</title>"
        );
        let equiv = b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=latin1\">\xe9";
        assert!(decode(equiv, None).ends_with('é'));
        assert_eq!(decode("caf\u{e9}".as_bytes(), Some("text/html")), "café");
        assert_eq!(
            decode(b"\xEF\xBB\xBFok", Some("text/html; charset=latin1")),
            "ok"
        );
    }
}
