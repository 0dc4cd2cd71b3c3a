//! A small, tolerant HTML scanner: just what a preview reads from a page.
//!
//! A preview needs the `<meta>`, `<img>` and `<link>` tags, the first title-like element and
//! the visible text, not a DOM. Real pages are often malformed, so the scanner never fails: an
//! unclosed tag ends the document, a stray `<` is text, raw-text elements (`<script>`,
//! `<style>`) are skipped to their end tag, and end tags close the nearest open element of
//! their name or nothing.

use std::collections::HashMap;

use super::charset::unescape;

/// Attributes of one tag: lowercase names, unescaped values (the first of a repeated name).
pub(crate) type Attrs = HashMap<String, String>;

/// What a preview reads from a page, in document order.
#[derive(Debug, Default)]
pub(crate) struct Document {
    pub metas: Vec<Attrs>,
    pub images: Vec<Attrs>,
    pub links: Vec<Attrs>,
    /// The text of the first `<title>`, `<h1>`, `<h2>` or `<h3>` holding only text.
    pub title: Option<String>,
    /// Text nodes outside the elements that are not the page's content (`<head>`, `<nav>`,
    /// scripts, …), unescaped, in order.
    pub text: Vec<String>,
}

/// Elements whose text is not what the page says (Synapse's list).
const NOT_CONTENT: &[&str] = &[
    "head", "header", "nav", "aside", "footer", "script", "noscript", "style", "svg", "iframe",
    "video", "canvas", "img", "picture", "title",
];
/// ARIA roles of elements that are not meant to be read.
const NOT_CONTENT_ROLES: &[&str] = &["directory", "menu", "menubar", "toolbar"];
/// Elements without an end tag.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];
/// Elements whose content is raw text up to their own end tag.
const RAW_TEXT: &[&str] = &["script", "style", "title", "textarea", "xmp"];
/// How many hidden elements the text filter tracks; deeper nesting is treated as content.
/// Small, because each end tag searches this stack.
const MAX_DEPTH: usize = 32;

/// Scans a whole page.
pub(crate) fn parse(html: &str) -> Document {
    let mut doc = Document::default();
    // Open elements that hide their text, by name.
    let mut hidden: Vec<String> = Vec::new();
    // Text runs from `pos` to the next tag; a `<` that starts no tag stays in it.
    let mut pos = 0;
    let mut search = 0;
    while search < html.len() {
        let Some(lt) = html[search..].find('<').map(|i| search + i) else {
            break;
        };
        let rest = &html[lt..];
        let next = if let Some(comment) = rest.strip_prefix("<!--") {
            comment.find("-->").map_or(html.len(), |e| lt + 4 + e + 3)
        } else if rest.starts_with("<!") || rest.starts_with("<?") {
            rest.find('>').map_or(html.len(), |e| lt + e + 1)
        } else if let Some(end_tag) = rest.strip_prefix("</") {
            add_text(&mut doc, &hidden, &html[pos..lt]);
            let name = tag_name(end_tag);
            if let Some(open) = hidden.iter().rposition(|h| *h == name) {
                hidden.truncate(open);
            }
            rest.find('>').map_or(html.len(), |e| lt + e + 1)
        } else if rest[1..].starts_with(|c: char| c.is_ascii_alphabetic()) {
            add_text(&mut doc, &hidden, &html[pos..lt]);
            let Some((name, attrs, self_closing, len)) = start_tag(&rest[1..]) else {
                return doc; // an unterminated tag ends the document
            };
            on_start_tag(
                &mut doc,
                &mut hidden,
                html,
                lt + 1 + len,
                name,
                attrs,
                self_closing,
            )
        } else {
            search = lt + 1;
            continue;
        };
        if rest.starts_with("<!") || rest.starts_with("<?") {
            add_text(&mut doc, &hidden, &html[pos..lt]);
        }
        pos = next;
        search = next;
    }
    add_text(&mut doc, &hidden, &html[pos.min(html.len())..]);
    doc
}

/// Records a start tag; returns where scanning goes on (past the content of raw-text elements).
fn on_start_tag(
    doc: &mut Document,
    hidden: &mut Vec<String>,
    html: &str,
    pos: usize,
    name: String,
    attrs: Attrs,
    self_closing: bool,
) -> usize {
    if RAW_TEXT.contains(&name.as_str()) {
        let end = find_end_tag(html, pos, &name);
        if name == "title" && doc.title.is_none() {
            let text = unescape(&html[pos..end]);
            if !text.trim().is_empty() {
                doc.title = Some(text.trim().to_owned());
            }
        } else if name == "textarea" || name == "xmp" {
            add_text(doc, hidden, &html[pos..end]);
        }
        return html[end..].find('>').map_or(html.len(), |e| end + e + 1);
    }
    if matches!(name.as_str(), "h1" | "h2" | "h3") && doc.title.is_none() {
        // Only a heading holding nothing but text counts, like Synapse's `string=True`: its
        // next tag must be its own end tag. (Looking no further than that next `<` keeps a
        // page of unclosed headings linear to scan.)
        if let Some(next) = html[pos..].find('<').map(|i| pos + i)
            && is_end_tag_at(html, next, &name)
        {
            let inner = &html[pos..next];
            if !inner.trim().is_empty() {
                doc.title = Some(unescape(inner).trim().to_owned());
            }
        }
    }
    match name.as_str() {
        "meta" => doc.metas.push(attrs.clone()),
        "img" => doc.images.push(attrs.clone()),
        "link" => doc.links.push(attrs.clone()),
        _ => {}
    }
    let hides = NOT_CONTENT.contains(&name.as_str())
        || attrs
            .get("role")
            .is_some_and(|r| NOT_CONTENT_ROLES.contains(&r.as_str()));
    if hides && !self_closing && !VOID.contains(&name.as_str()) && hidden.len() < MAX_DEPTH {
        hidden.push(name);
    }
    pos
}

fn add_text(doc: &mut Document, hidden: &[String], text: &str) {
    if hidden.is_empty() && !text.is_empty() {
        doc.text.push(unescape(text));
    }
}

/// The lowercase name at the start of a tag.
fn tag_name(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Whether `</name` starts at byte `at`, case-insensitively.
fn is_end_tag_at(html: &str, at: usize, name: &str) -> bool {
    let bytes = &html.as_bytes()[at..];
    bytes.starts_with(b"</")
        && bytes
            .get(2..2 + name.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// Where `</name` starts at or after `from`, case-insensitively; the end of the page if never.
fn find_end_tag(html: &str, from: usize, name: &str) -> usize {
    let mut i = from;
    while let Some(at) = html[i..].find("</") {
        let start = i + at;
        if is_end_tag_at(html, start, name) {
            return start;
        }
        i = start + 2;
    }
    html.len()
}

/// Parses `name attr="v" attr2=v attr3 ...>` after the `<`: the name, attributes, whether it
/// ended with `/>`, and the length consumed including `>`. `None` if the page ends first.
fn start_tag(text: &str) -> Option<(String, Attrs, bool, usize)> {
    let name = tag_name(text);
    let bytes = text.as_bytes();
    let mut i = name.len();
    let mut attrs = Attrs::new();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        match bytes.get(i)? {
            b'>' => return Some((name, attrs, false, i + 1)),
            b'/' if bytes.get(i + 1) == Some(&b'>') => return Some((name, attrs, true, i + 2)),
            b'/' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
        {
            i += 1;
        }
        if i == start {
            i += 1; // a stray `=`: skip it
            continue;
        }
        let attr = text[start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            match bytes.get(i)? {
                q @ (b'"' | b'\'') => {
                    let close = text[i + 1..].find(*q as char)? + i + 1;
                    value = unescape(&text[i + 1..close]);
                    i = close + 1;
                }
                _ => {
                    let start = i;
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                        i += 1;
                    }
                    value = unescape(&text[start..i]);
                }
            }
        }
        attrs.entry(attr).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tags_attributes_title_and_text() {
        let doc = parse(
            "<!DOCTYPE html><html><head><TITLE>A &amp; B</TITLE>\
             <meta property=og:title content='It&#39;s \"here\"'>\
             <meta name=\"description\" content=\"d\"/>\
             <script>if (a < b) { document.write('<p>no</p>') }</script>\
             <style>p > a { }</style></head>\
             <body><nav>Menu</nav><!-- <p>comment</p> --><h1>Head<b>ing</b></h1>\
             <p>First &lt;para&gt;</p><div role=menu>skip</div>\
             <img src=\"/a.png\" width=20 height=30><p>2 < 3</p></body></html>",
        );
        assert_eq!(doc.title.as_deref(), Some("A & B"));
        assert_eq!(doc.metas.len(), 2);
        assert_eq!(doc.metas[0]["property"], "og:title");
        assert_eq!(doc.metas[0]["content"], "It's \"here\"");
        assert_eq!(doc.metas[1]["content"], "d");
        assert_eq!(doc.images[0]["src"], "/a.png");
        assert_eq!(doc.images[0]["width"], "20");
        assert_eq!(doc.text, vec!["Head", "ing", "First <para>", "2 < 3"]);
    }

    #[test]
    fn first_text_only_heading_is_the_title_without_title_tag() {
        let doc = parse("<body><h2><a>link</a></h2><h3> Plain  </h3><h1>Later</h1></body>");
        assert_eq!(doc.title.as_deref(), Some("Plain"));
    }

    #[test]
    fn unclosed_headings_and_multibyte_text_are_fine() {
        let page = format!("{}<h1>ñandú</h1>", "<h1><b>é".repeat(10_000));
        let doc = parse(&page);
        assert_eq!(doc.title.as_deref(), Some("ñandú"));
        let doc = parse("<h2>é</h2");
        assert_eq!(doc.title.as_deref(), Some("é"));
    }

    /// Pseudo-random soups of the characters the scanner cares about never make it panic.
    #[test]
    fn random_markup_never_panics() {
        let alphabet: Vec<char> = "<>/=\"' !-?&;#x1aé€hmtitlescriptmetaimg\n"
            .chars()
            .collect();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let page: String = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let doc = parse(&page);
            let _ = super::super::open_graph::from_document(&doc);
        }
    }

    #[test]
    fn malformed_pages_do_not_fail() {
        let doc = parse("<p>ok</p><meta content=\"unterminated");
        assert_eq!(doc.text, vec!["ok"]);
        assert!(doc.metas.is_empty());
        let doc = parse("<html><body>text</body");
        assert_eq!(doc.text, vec!["text"]);
        let doc = parse("<script>never closed");
        assert!(doc.text.is_empty());
    }
}
