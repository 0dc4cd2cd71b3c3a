//! The customer's HTML made safe to be a Matrix `formatted_body`.
//!
//! A mail's HTML is written by whoever sent it, and agents' clients render it: it goes through
//! an allow-list (ammonia, on html5ever's parser) of the tags and attributes the Matrix spec
//! lists for `formatted_body`. Everything else — scripts, styles, event handlers, forms,
//! classes — is dropped. Links keep only `http`, `https` and `mailto` targets and open with
//! `rel="noopener noreferrer"`; images keep only `mxc:` sources, so a remote image (a
//! tracking pixel, or a way to learn an agent's address) never loads, and neither do `cid:`
//! references to the mail's own parts, which are posted as attachments instead.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use ammonia::{Builder, UrlRelative};

/// The tags of the Matrix spec's `formatted_body` allow-list (client-server API, "m.room.message
/// msgtypes", HTML).
const TAGS: &[&str] = &[
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "strike",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "img",
];

/// The sanitizer, built once: the configuration never changes.
static SANITIZER: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let tag_attributes: HashMap<&str, HashSet<&str>> = [
        ("a", &["href"][..]),
        ("img", &["src", "alt", "title", "width", "height"][..]),
        ("ol", &["start"][..]),
        ("font", &["color", "data-mx-color", "data-mx-bg-color"][..]),
        (
            "span",
            &["data-mx-color", "data-mx-bg-color", "data-mx-spoiler"][..],
        ),
        ("code", &["class"][..]),
    ]
    .into_iter()
    .map(|(tag, attrs)| (tag, attrs.iter().copied().collect()))
    .collect();

    let mut builder = Builder::empty();
    builder
        .tags(TAGS.iter().copied().collect())
        .clean_content_tags(["script", "style"].into_iter().collect())
        .generic_attributes(HashSet::new())
        .tag_attributes(tag_attributes)
        // `mxc` is allowed here so that image sources pass; the filter below keeps each scheme
        // to the one element it belongs on.
        .url_schemes(["http", "https", "mailto", "mxc"].into_iter().collect())
        .url_relative(UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .strip_comments(true)
        .attribute_filter(filter_attribute);
    builder
});

/// Per-element rules ammonia's allow-lists cannot say: which URL scheme goes on which element,
/// and only `language-*` classes on `code` (how clients mark a code block's language).
fn filter_attribute<'u>(element: &str, attribute: &str, value: &'u str) -> Option<Cow<'u, str>> {
    match (element, attribute) {
        ("a", "href") => matches!(scheme(value).as_deref(), Some("http" | "https" | "mailto"))
            .then_some(value.into()),
        ("img", "src") => (scheme(value).as_deref() == Some("mxc")).then_some(value.into()),
        ("code", "class") => {
            let kept: Vec<&str> = value
                .split_ascii_whitespace()
                .filter(|class| class.starts_with("language-"))
                .collect();
            if kept.is_empty() {
                None
            } else {
                Some(kept.join(" ").into())
            }
        }
        _ => Some(value.into()),
    }
}

/// The lowercase scheme of a URL, when it has one.
fn scheme(url: &str) -> Option<String> {
    let (scheme, _) = url.trim_start().split_once(':')?;
    let valid = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    valid.then(|| scheme.to_ascii_lowercase())
}

/// `html` through the allow-list. The result may be blank; see [`shows_something`].
pub(crate) fn sanitize(html: &str) -> String {
    drop_sourceless_images(SANITIZER.clean(html).to_string())
}

/// Removes the `<img>` elements the allow-list left without a source (a remote image, a
/// `cid:` reference): they show nothing, and a 1×1 box where a tracking pixel was is noise.
///
/// This reads ammonia's output, not the sender's HTML: the serializer always quotes
/// attribute values with `"` and escapes `"` inside them, so a tag ends at the first `>`
/// outside quotes.
fn drop_sourceless_images(html: String) -> String {
    if !html.contains("<img") {
        return html;
    }
    let mut out = String::with_capacity(html.len());
    let mut rest = html.as_str();
    while let Some(start) = rest.find("<img") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let mut in_quotes = false;
        let end = tag
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    in_quotes = !in_quotes;
                }
                c == '>' && !in_quotes
            })
            .map_or(tag.len(), |(i, _)| i + 1);
        let (tag, after) = tag.split_at(end);
        if tag.contains(" src=\"") {
            out.push_str(tag);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Whether sanitized HTML shows anything: text, or an image the allow-list kept.
pub(crate) fn shows_something(sanitized: &str) -> bool {
    super::quote::has_visible_text(sanitized) || sanitized.contains("src=\"mxc:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_handlers_remote_images_and_javascript_links_are_dropped() {
        let html = r#"<p onclick="steal()">Hi <b>there</b> <a href="https://example.org/x">link</a> <a href="javascript:alert(1)">bad</a><script>alert(1)</script><style>p{}</style><img src="http://tracker.example/p.gif" width="1"><img src="mxc://example.org/abc" alt="ok"></p>"#;
        let clean = sanitize(html);
        assert!(!clean.contains("script"), "{clean}");
        assert!(!clean.contains("alert"), "{clean}");
        assert!(!clean.contains("onclick"), "{clean}");
        assert!(!clean.contains("tracker"), "{clean}");
        assert!(!clean.contains("javascript"), "{clean}");
        assert!(!clean.contains("p{}"), "{clean}");
        assert!(clean.contains("<b>there</b>"), "{clean}");
        assert!(
            clean.contains(r#"<a href="https://example.org/x" rel="noopener noreferrer">link</a>"#),
            "{clean}"
        );
        assert!(clean.contains(r#"src="mxc://example.org/abc""#), "{clean}");
        assert!(shows_something(&clean));
    }

    #[test]
    fn each_scheme_only_on_its_element() {
        let clean =
            sanitize(r#"<a href="mxc://example.org/a">x</a><img src="https://e.org/i.png">"#);
        assert!(!clean.contains("mxc"), "{clean}");
        assert!(!clean.contains("e.org"), "{clean}");
    }

    #[test]
    fn only_language_classes_on_code_and_no_styles() {
        let clean = sanitize(
            r#"<code class="language-rust evil">fn</code><div class="x" style="color:red" id="y">d</div>"#,
        );
        assert_eq!(
            clean,
            r#"<code class="language-rust">fn</code><div>d</div>"#
        );
    }

    #[test]
    fn images_without_a_source_are_removed() {
        let clean = sanitize(
            r#"<p>a<img alt="x > y" src="cid:1" width="1">b<img src="mxc://e.org/m" alt="q&quot;>">c</p>"#,
        );
        assert_eq!(
            clean,
            r#"<p>ab<img src="mxc://e.org/m" alt="q&quot;&gt;">c</p>"#
        );
    }

    #[test]
    fn nothing_left() {
        let clean = sanitize(r#"<img src="http://tracker.example/p.gif"><script>x</script>"#);
        assert!(!shows_something(&clean), "{clean}");
    }
}
