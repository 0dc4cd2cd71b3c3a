//! A page's Open Graph data, with Synapse's fallbacks for pages that have none.
//!
//! Clients render whatever `og:` keys they get, so the keys and their precedence follow
//! Synapse's `parse_html_to_open_graph`: `og:`, `article:` and `profile:` meta properties,
//! Twitter card tags where no `og:` key says the same, then `<title>` (or the first text-only
//! heading), microdata or `<img>` (the largest over 10×10 px, else the first) or the favicon,
//! and `<meta name="description">` or a summary of the page's text.

use std::collections::BTreeMap;

use serde_json::Value;

use super::html::{Attrs, Document};

/// More tags than this of one prefix is a page gaming the preview: its tags are all ignored.
const MAX_TAGS_PER_PREFIX: usize = 50;

/// The Open Graph map of a parsed page. `None` values are sent as JSON `null`, like Synapse.
pub(crate) fn from_document(doc: &Document) -> BTreeMap<String, Value> {
    let mut og = meta_tags(doc, "property", "og:", |k| Some(k.to_owned()));
    og.extend(meta_tags(doc, "property", "article:", |k| {
        Some(k.to_owned())
    }));
    og.extend(meta_tags(doc, "property", "profile:", |k| {
        Some(k.to_owned())
    }));
    let twitter = meta_tags(doc, "name", "twitter:", |key| match key {
        "twitter:card" | "twitter:creator" | "twitter:site" => None,
        _ => Some(format!("og{}", &key["twitter".len()..])),
    });
    for (key, value) in twitter {
        og.entry(key).or_insert(value);
    }
    let mut og: BTreeMap<String, Value> = og.into_iter().map(|(k, v)| (k, v.into())).collect();

    if !og.contains_key("og:title") {
        og.insert("og:title".into(), doc.title.clone().into());
    }
    if !og.contains_key("og:image")
        && let Some(image) = fallback_image(doc)
    {
        og.insert("og:image".into(), image.into());
    }
    let description = match og.get("og:description") {
        None => {
            let meta = doc.metas.iter().find(|m| {
                m.get("name")
                    .is_some_and(|n| n.to_ascii_lowercase().contains("description"))
                    && non_blank(m, "content")
            });
            match meta {
                Some(m) => Some(m["content"].clone()),
                None => summarize(doc.text.iter().map(|t| collapse(t, "\n"))),
            }
        }
        Some(Value::String(d)) if !d.is_empty() => summarize(std::iter::once(d.clone())),
        Some(_) => None,
    };
    og.insert("og:description".into(), description.into());
    og
}

/// `<meta {attr}="{prefix}...">` tags with content, keyed by `map`; later tags win.
fn meta_tags(
    doc: &Document,
    attr: &str,
    prefix: &str,
    map: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut seen = 0;
    for meta in &doc.metas {
        let Some(key) = meta.get(attr).filter(|k| k.starts_with(prefix)) else {
            continue;
        };
        if !non_blank(meta, "content") {
            continue;
        }
        seen += 1;
        if seen > MAX_TAGS_PER_PREFIX {
            return BTreeMap::new();
        }
        if let Some(key) = map(key) {
            found.insert(key, meta["content"].clone());
        }
    }
    found
}

fn non_blank(attrs: &Attrs, name: &str) -> bool {
    attrs.get(name).is_some_and(|v| !v.is_empty())
}

/// Microdata `itemprop=image`, else the largest `<img>` over 10×10, else the first `<img>`,
/// else the favicon.
fn fallback_image(doc: &Document) -> Option<String> {
    if let Some(meta) = doc.metas.iter().find(|m| {
        m.get("itemprop")
            .is_some_and(|p| p.to_ascii_lowercase().contains("image"))
            && non_blank(m, "content")
    }) {
        return Some(meta["content"].clone());
    }
    let dimension = |img: &Attrs, name: &str| -> f64 {
        img.get(name)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let sized = doc
        .images
        .iter()
        .filter(|i| non_blank(i, "src") && non_blank(i, "width") && non_blank(i, "height"))
        .filter(|i| dimension(i, "width") > 10.0 && dimension(i, "height") > 10.0)
        // The first of equally large images wins, as in a stable sort.
        .fold(None::<(&Attrs, f64)>, |best, img| {
            let area = dimension(img, "width") * dimension(img, "height");
            match best {
                Some((_, a)) if a >= area => best,
                _ => Some((img, area)),
            }
        })
        .map(|(img, _)| img);
    if let Some(img) = sized.or_else(|| doc.images.iter().find(|i| non_blank(i, "src"))) {
        return Some(img["src"].clone());
    }
    doc.links
        .iter()
        .find(|l| l.get("rel").is_some_and(|r| r == "icon") && non_blank(l, "href"))
        .map(|l| l["href"].clone())
}

/// Every run of whitespace as `with`, trimmed.
fn collapse(text: &str, with: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(with)
}

/// Synapse's `summarize_paragraphs`: whole paragraphs until at least 200 characters, cut at a
/// word boundary (with an ellipsis) past 500.
pub(crate) fn summarize(paragraphs: impl Iterator<Item = String>) -> Option<String> {
    const MIN: usize = 200;
    const MAX: usize = 500;
    let mut description = String::new();
    for paragraph in paragraphs {
        if description.chars().count() >= MIN {
            break;
        }
        description.push_str(&collapse_keep_edges(&paragraph));
        description.push_str("\n\n");
    }
    let description = normalize_breaks(description.trim());
    if description.chars().count() > MAX {
        let mut short = String::new();
        for word in words(&description) {
            let (len, word_len) = (short.chars().count(), word.chars().count());
            if len + word_len < MAX {
                short.push_str(word);
            } else {
                if len < MIN {
                    short.push_str(word);
                }
                break;
            }
        }
        let short: String = short.chars().take(MAX).collect();
        return Some(format!("{}…", short.trim()));
    }
    (!description.is_empty()).then_some(description)
}

/// Runs of tabs, spaces and line breaks as one space (leading and trailing ones kept as one).
fn collapse_keep_edges(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if matches!(c, '\t' | ' ' | '\r' | '\n') {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// Runs of tabs and spaces as one space, then every whitespace run holding a line break up to
/// its last break as one blank line.
fn normalize_breaks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i], '\t' | ' ' | '\r' | '\n') {
            let start = i;
            while i < chars.len() && matches!(chars[i], '\t' | ' ' | '\r' | '\n') {
                i += 1;
            }
            let run = &chars[start..i];
            match run.iter().rposition(|c| matches!(c, '\r' | '\n')) {
                Some(last_break) => {
                    out.push_str("\n\n");
                    if last_break + 1 < run.len() {
                        out.push(' ');
                    }
                }
                None => out.push(' '),
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The words of `text`, each with the whitespace before it.
fn words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                words.push(&text[start..i]);
                start = i;
                in_word = false;
            }
        } else {
            in_word = true;
        }
    }
    if in_word {
        words.push(&text[start..]);
    }
    words
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::media::preview::html::parse;

    fn og(html: &str) -> Value {
        serde_json::to_value(from_document(&parse(html))).unwrap()
    }

    #[test]
    fn open_graph_tags_win_over_fallbacks() {
        let page = og("<html><head><title>Title tag</title>\
             <meta property=\"og:title\" content=\"OG title\">\
             <meta property=\"og:description\" content=\"  An   OG\n description \">\
             <meta property=\"og:image\" content=\"/img.png\">\
             <meta property=\"og:image:width\" content=\"600\">\
             <meta property=\"og:empty\" content=\"\">\
             <meta name=\"twitter:title\" content=\"Tweet title\">\
             <meta name=\"twitter:label1\" content=\"Reading time\">\
             <meta name=\"twitter:site\" content=\"@x\">\
             <meta property=\"article:author\" content=\"Ana\">\
             </head><body><p>Body</p></body></html>");
        assert_eq!(
            page,
            json!({
                "og:title": "OG title",
                "og:description": "An OG description",
                "og:image": "/img.png",
                "og:image:width": "600",
                "og:label1": "Reading time",
                "article:author": "Ana",
            })
        );
    }

    #[test]
    fn pages_without_open_graph_fall_back() {
        let page = og("<html><head><title>Plain page</title>\
             <meta name=\"Description\" content=\"Meta description\"></head>\
             <body><img src=\"small.png\" width=\"5\" height=\"5\">\
             <img src=\"big.png\" width=\"300\" height=\"200\">\
             <img src=\"bigger.png\" width=\"400\" height=\"200\"></body></html>");
        assert_eq!(
            page,
            json!({
                "og:title": "Plain page",
                "og:description": "Meta description",
                "og:image": "bigger.png",
            })
        );
        let page = og("<body><nav>Home | About</nav><h1>Heading</h1>\
             <p>First   paragraph.</p><p>Second\nparagraph.</p><footer>(c)</footer>\
             <img src=\"any.gif\"></body>");
        assert_eq!(
            page,
            json!({
                "og:title": "Heading",
                "og:description": "Heading\n\nFirst paragraph.\n\nSecond paragraph.",
                "og:image": "any.gif",
            })
        );
        let page = og("<head><link rel=\"icon\" href=\"/favicon.ico\"></head><body></body>");
        assert_eq!(
            page,
            json!({ "og:title": null, "og:description": null, "og:image": "/favicon.ico" })
        );
    }

    #[test]
    fn long_text_is_cut_at_a_word_with_an_ellipsis() {
        let long = "word ".repeat(150);
        let summary = summarize(std::iter::once(long)).unwrap();
        assert!(summary.ends_with("word…"), "{summary}");
        assert_eq!(summary.chars().count(), 500);
        let short = summarize(["a".to_owned(), "b".to_owned()].into_iter()).unwrap();
        assert_eq!(short, "a\n\nb");
    }

    #[test]
    fn too_many_tags_are_ignored() {
        let tags: String = (0..51)
            .map(|i| format!("<meta property=\"og:k{i}\" content=\"v\">"))
            .collect();
        let page = og(&format!("<head><title>T</title>{tags}</head>"));
        assert_eq!(page, json!({ "og:title": "T", "og:description": null }));
    }
}
