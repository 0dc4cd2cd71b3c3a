//! Cutting the quoted history off a reply.
//!
//! Mail clients append the whole conversation to every reply. In a support room, where the
//! previous messages are already there as messages, that history is noise: agents should see
//! what the customer wrote *this* time. The record keeps the full text, so cutting too much
//! loses nothing for good — but cutting the customer's own words from what agents see would,
//! so every rule here errs on the side of keeping text:
//!
//! - only markers clients actually write are recognised (attribution lines, "Original
//!   Message" separators, Outlook's header block, a trailing run of `>` lines);
//! - an attribution followed by answers written between the quoted lines (an inline reply) is
//!   not a cut;
//! - a forwarded message ("---------- Forwarded message ---------") ends the search: what
//!   follows is the content the customer wants the desk to read;
//! - signatures are never cut;
//! - the result is never empty.
//!
//! Both functions are linear in the input: the text is split into lines once and every rule
//! looks at a bounded window of lines.

/// Verbs attribution lines end with, in the languages customers write in most often.
const ATTRIBUTION_VERBS: &[&str] = &[
    "wrote",
    "escribió",
    "escribio",
    "a écrit",
    "schrieb",
    "escreveu",
    "ha scritto",
    "schreef",
    "skrev",
    "napisał",
    "kirjoitti",
];

/// How attribution lines begin: "On …", "El …", "Le …", "Am …", "Em …", "Il …", "Op …",
/// "Den …", "W dniu …".
const ATTRIBUTION_PREFIXES: &[&str] = &[
    "on ", "el ", "le ", "am ", "em ", "il ", "op ", "den ", "w dniu ",
];

/// The words between the dashes of Outlook's and others' "-----Original Message-----".
const ORIGINAL_MESSAGE: &[&str] = &[
    "original message",
    "mensaje original",
    "message d'origine",
    "message original",
    "ursprüngliche nachricht",
    "messaggio originale",
    "mensagem original",
    "oorspronkelijk bericht",
    "originalnachricht",
];

/// The words between the dashes of a forward marker: what follows is content, not history.
const FORWARDED_MESSAGE: &[&str] = &[
    "forwarded message",
    "mensaje reenviado",
    "message transféré",
    "message transfere",
    "weitergeleitete nachricht",
    "messaggio inoltrato",
    "mensagem encaminhada",
    "doorgestuurd bericht",
];

/// The first label of Outlook's header block ("From:" in the client's language).
const FROM_LABELS: &[&str] = &[
    "from:", "de:", "von:", "da:", "van:", "från:", "fra:", "od:",
];

/// The second label of Outlook's header block ("Sent:").
const SENT_LABELS: &[&str] = &[
    "sent:",
    "enviado:",
    "enviado el:",
    "gesendet:",
    "envoyé :",
    "envoyé:",
    "inviato:",
    "verzonden:",
    "skickat:",
    "sendt:",
    "date:",
    "fecha:",
    "datum:",
    "data:",
];

/// A line of the text: where it starts in the text, and its content without the line break.
struct Line<'a> {
    start: usize,
    text: &'a str,
}

impl Line<'_> {
    /// A quoted line: `>` after optional indentation.
    fn is_quoted(&self) -> bool {
        self.text.trim_start().starts_with('>')
    }

    fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }

    /// The signature delimiter `-- ` (RFC 3676 4.3); some clients drop the trailing space.
    fn is_signature_delimiter(&self) -> bool {
        self.text == "-- " || self.text == "--"
    }
}

/// The quoted history of a reply cut from plain text: from the first attribution line ("On
/// Mon, 1 Jan 2024, Ana <a@b> wrote:", "El … escribió:", "Le … a écrit :", "Am … schrieb …:",
/// possibly wrapped over two lines), "-----Original Message-----" (and its translations),
/// Outlook's "____" + "From:" or "From:" + "Sent:" block, or a trailing run of `>` lines
/// (with an attribution-looking line just before it).
///
/// Kept whole: an inline reply (answers between the quoted lines), a forwarded message
/// ("---------- Forwarded message ---------" ends the search), signatures. The result is a
/// prefix of `text` with trailing whitespace trimmed, and never empty unless `text` is blank:
/// when the cut would leave nothing, the whole text is kept.
pub fn trim_quoted(text: &str) -> &str {
    let lines = split_lines(text);
    let interleaved = interleaved_after(&lines);
    let mut cut = None;
    let mut forwarded = false;
    // Start of the current run of quoted lines, reset by any unquoted non-blank line: if it
    // is still set at the end, the text ends with quotes.
    let mut run_start: Option<usize> = None;

    for i in 0..lines.len() {
        let line = &lines[i];
        let trimmed = line.text.trim();
        if is_dashed_marker(trimmed, FORWARDED_MESSAGE) {
            forwarded = true;
            break;
        }
        if let Some(consumed) = attribution_at(&lines, i) {
            // An inline reply answers between the quoted lines: cutting there would lose the
            // answers.
            if !interleaved.get(i + consumed).copied().unwrap_or(false) {
                cut = Some(line.start);
                break;
            }
        }
        if is_dashed_marker(trimmed, ORIGINAL_MESSAGE) || is_outlook_block(&lines, i) {
            cut = Some(line.start);
            break;
        }
        if line.is_quoted() {
            run_start.get_or_insert(i);
        } else if !line.is_blank() {
            run_start = None;
        }
    }

    if cut.is_none()
        && !forwarded
        && let Some(run) = run_start
    {
        cut = Some(lines[unquoted_attribution_before(&lines, run)].start);
    }

    let whole = text.trim_end();
    match cut {
        Some(at) => {
            let kept = text[..at].trim_end();
            if kept.trim_start().is_empty() {
                whole
            } else {
                kept
            }
        }
        None => whole,
    }
}

/// The lines of `text` with their offsets, `\r\n` or `\n` ended.
fn split_lines(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    for piece in text.split_inclusive('\n') {
        let content = piece.strip_suffix('\n').unwrap_or(piece);
        let content = content.strip_suffix('\r').unwrap_or(content);
        lines.push(Line {
            start,
            text: content,
        });
        start += piece.len();
    }
    lines
}

/// For each line, whether the text from it on is an inline reply: a quoted line later
/// followed by an unquoted, non-blank one (a signature after the quotes does not count).
fn interleaved_after(lines: &[Line<'_>]) -> Vec<bool> {
    let mut result = vec![false; lines.len() + 1];
    let mut unquoted_after = false;
    let mut interleaved = false;
    for (i, line) in lines.iter().enumerate().rev() {
        if line.is_signature_delimiter() {
            // What follows the delimiter is the signature, not answers.
            unquoted_after = false;
            interleaved = false;
        } else if line.is_quoted() {
            interleaved |= unquoted_after;
        } else if !line.is_blank() {
            unquoted_after = true;
        }
        result[i] = interleaved;
    }
    result
}

/// Whether an attribution line ("On …, Ana <a@b> wrote:") starts at line `i`, and how many
/// lines it takes (Gmail wraps long ones over two).
fn attribution_at(lines: &[Line<'_>], i: usize) -> Option<usize> {
    let first = lines[i].text.trim();
    if first.is_empty() || first.len() > 400 || lines[i].is_quoted() {
        return None;
    }
    let next_quoted = next_non_blank(lines, i + 1).is_some_and(|l| l.is_quoted());
    if is_attribution(first, next_quoted) {
        return Some(1);
    }
    let second = lines.get(i + 1)?.text.trim();
    if has_attribution_prefix(first)
        && !first.ends_with(':')
        && !second.is_empty()
        && second.len() <= 400
    {
        let joined = format!("{first} {second}");
        let next_quoted = next_non_blank(lines, i + 2).is_some_and(|l| l.is_quoted());
        if is_attribution(&joined, next_quoted) {
            return Some(2);
        }
    }
    None
}

/// "On Mon, 1 Jan 2024, Ana <a@b> wrote:": a known opening, a verb, a digit (the date) and a
/// final colon. Without the known opening ("Ana <a@b> wrote:"), only when quoted lines follow.
fn is_attribution(line: &str, next_quoted: bool) -> bool {
    if !line.ends_with(':') {
        return false;
    }
    let lower = line.to_lowercase();
    let has_verb = ATTRIBUTION_VERBS.iter().any(|verb| lower.contains(verb));
    if !has_verb {
        return false;
    }
    let with_prefix = has_attribution_prefix(line) && line.bytes().any(|b| b.is_ascii_digit());
    // The verb right before the colon ("… Ana <a@b> wrote:"); German puts the name after it
    // ("Am … schrieb Ana <a@b>:"), which only the prefixed form covers.
    let ends_with_verb = ATTRIBUTION_VERBS
        .iter()
        .any(|verb| lower.trim_end_matches(':').trim_end().ends_with(verb));
    with_prefix || (ends_with_verb && next_quoted)
}

fn has_attribution_prefix(line: &str) -> bool {
    ATTRIBUTION_PREFIXES
        .iter()
        .any(|prefix| starts_with_ignore_case(line, prefix))
}

/// "-----Original Message-----", "----- Mensaje original -----", "---------- Forwarded
/// message ---------": dashes, one of `words`, dashes.
fn is_dashed_marker(line: &str, words: &[&str]) -> bool {
    if !line.starts_with("--") {
        return false;
    }
    let inner = line.trim_matches(|c: char| c == '-' || c.is_whitespace());
    if inner.len() > 40 {
        return false;
    }
    let inner = inner.to_lowercase();
    words.iter().any(|w| inner == *w)
}

/// Outlook's reply header: a line of underscores followed by "From:", or "From:" directly
/// followed by "Sent:" (each in the client's language).
fn is_outlook_block(lines: &[Line<'_>], i: usize) -> bool {
    let line = lines[i].text.trim();
    if line.len() >= 10 && line.bytes().all(|b| b == b'_') {
        return next_non_blank(lines, i + 1)
            .is_some_and(|l| starts_with_label(l.text, FROM_LABELS));
    }
    starts_with_label(line, FROM_LABELS)
        && lines
            .get(i + 1)
            .is_some_and(|l| starts_with_label(l.text, SENT_LABELS))
}

/// `line` starts with one of `labels`, possibly bold in a text rendered from HTML ("*From:*").
fn starts_with_label(line: &str, labels: &[&str]) -> bool {
    let line = line.trim_start().trim_start_matches('*');
    labels
        .iter()
        .any(|label| starts_with_ignore_case(line, label))
}

/// When a trailing quote run starts at `run`, the line to cut at: the run, or the line before
/// it (blank lines aside) when that looks like an attribution in a language not listed above
/// (ends with a colon, names an address or a date).
fn unquoted_attribution_before(lines: &[Line<'_>], run: usize) -> usize {
    let mut j = run;
    while j > 0 {
        j -= 1;
        let line = &lines[j];
        if line.is_blank() {
            continue;
        }
        let text = line.text.trim();
        let looks_like_attribution = text.ends_with(':')
            && text.len() <= 400
            && (text.contains('@') || text.bytes().any(|b| b.is_ascii_digit()));
        return if looks_like_attribution { j } else { run };
    }
    run
}

fn next_non_blank<'a, 'b>(lines: &'b [Line<'a>], from: usize) -> Option<&'b Line<'a>> {
    lines.iter().skip(from).take(3).find(|l| !l.is_blank())
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.to_lowercase() == prefix)
}

/// Markers of the quoted history in HTML, lowercase, each found inside a tag: the cut is at
/// the start of that tag. Apple Mail and Thunderbird quote in `<blockquote type="cite">`
/// (handled apart, see [`trim_quoted_html`]); Gmail wraps the history in
/// `<div class="gmail_quote">`; Outlook on the web puts `<div id="appendonsend">` and
/// `<div id="divRplyFwdMsg">` before it, new Outlook
/// `<div id="mail-editor-reference-message-container">`, Outlook desktop a `<div>` with a
/// top border in one of two colours; Yahoo a `<div class="yahoo_quoted">`.
const HTML_MARKERS: &[&str] = &[
    "gmail_quote",
    "appendonsend",
    "divrplyfwdmsg",
    "mail-editor-reference-message-container",
    "yahoo_quoted",
    "border-top:solid #e1e1e1 1.0pt",
    "border-top:solid #b5c4df 1.0pt",
];

/// The quoted history cut from HTML, before it is sanitized: everything from the first marker
/// of a client's quote on is dropped (the sanitizer closes the tags left open). A
/// `<blockquote type="cite">` only counts when nothing but quotes follows it, as in
/// [`trim_quoted`]: text after the last quote is an inline reply.
///
/// One pass over the tags: each is tested against the few markers, so the work is linear in
/// the HTML whatever the sender repeats in it.
pub(crate) fn trim_quoted_html(html: &str) -> &str {
    let lower = html.to_ascii_lowercase();
    let mut marker = None;
    let mut cite = None;
    let mut cite_prefix = None;
    for (start, tag) in tags(&lower) {
        if HTML_MARKERS.iter().any(|m| tag.contains(m)) {
            marker = Some(start);
            break;
        }
        if cite.is_none() {
            if tag.contains("moz-cite-prefix") {
                // Thunderbird's attribution sits just before the quote, in its own div.
                cite_prefix = Some(start);
            } else if tag.starts_with("<blockquote")
                && ["type=\"cite\"", "type=cite", "type='cite'"]
                    .iter()
                    .any(|t| tag.contains(t))
            {
                cite = Some(cite_prefix.unwrap_or(start));
            }
        }
    }
    let cite = cite.filter(|_| {
        let after_last = lower.rfind("</blockquote>").map_or("", |at| &lower[at..]);
        !has_visible_text(after_last)
    });
    let cut = match (marker, cite) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match cut {
        Some(at) if has_visible_text(&lower[..at]) => &html[..at],
        _ => html,
    }
}

/// The tags of (lowercased) HTML, `<` to `>`, with where each starts. Rough — a `>` inside a
/// quoted attribute value ends the tag early — which only makes a marker in such a tag missed.
fn tags(lower: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut from = 0;
    std::iter::from_fn(move || {
        let start = from + lower.get(from..)?.find('<')?;
        let end = lower[start..]
            .find('>')
            .map_or(lower.len(), |e| start + e + 1);
        from = end;
        Some((start, &lower[start..end]))
    })
}

/// Whether HTML has text outside its tags other than whitespace and `&nbsp;`. Rough (no
/// comments or entities beyond `&nbsp;`), which is enough to tell "nothing" from "something".
pub(crate) fn has_visible_text(html: &str) -> bool {
    let bytes = html.as_bytes();
    let mut in_tag = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => in_tag = true,
            b'>' => in_tag = false,
            _ if in_tag => {}
            b'&' if bytes[i..].len() >= 6 && bytes[i..i + 6].eq_ignore_ascii_case(b"&nbsp;") => {
                i += 6;
                continue;
            }
            b if b.is_ascii_whitespace() => {}
            // U+00A0 (no-break space) in UTF-8.
            0xC2 if bytes.get(i + 1) == Some(&0xA0) => {
                i += 2;
                continue;
            }
            _ => return true,
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_reply_is_trimmed_at_the_attribution() {
        let text = "Thanks, that worked.\n\nAna\n\nOn Mon, 1 Jan 2024 at 10:00, Support <desk@example.com> wrote:\n> Please try again.\n>\n> Support\n";
        assert_eq!(trim_quoted(text), "Thanks, that worked.\n\nAna");
    }

    #[test]
    fn wrapped_attribution_is_trimmed_from_its_first_line() {
        let text = "Yes please.\r\n\r\nOn Mon, 1 Jan 2024 at 10:00, Support Team of Example <\r\ndesk@example.com> wrote:\r\n\r\n> Shall we?\r\n";
        assert_eq!(trim_quoted(text), "Yes please.");
    }

    #[test]
    fn spanish_french_and_german_attributions() {
        let es = "Gracias.\n\nEl lun, 1 ene 2024 a las 10:00, Soporte (<desk@example.com>) escribió:\n> Hola\n";
        assert_eq!(trim_quoted(es), "Gracias.");
        let fr = "Merci.\n\nLe lun. 1 janv. 2024 à 10:00, Support <desk@example.com> a écrit :\n> Bonjour\n";
        assert_eq!(trim_quoted(fr), "Merci.");
        let de = "Danke.\n\nAm 01.01.2024 um 10:00 schrieb Support <desk@example.com>:\n> Hallo\n";
        assert_eq!(trim_quoted(de), "Danke.");
    }

    #[test]
    fn outlook_separators() {
        let original = "See below.\n\n-----Original Message-----\nFrom: Support <desk@example.com>\nSent: Monday\nSubject: Hi\n\nHello\n";
        assert_eq!(trim_quoted(original), "See below.");
        let spanish =
            "Ver abajo.\n\n-----Mensaje original-----\nDe: Soporte\nEnviado el: lunes\n\nHola\n";
        assert_eq!(trim_quoted(spanish), "Ver abajo.");
        let underscores = "OK.\n\n________________________________\nFrom: Support <desk@example.com>\nSent: Monday, 1 January 2024 10:00\nTo: Ana\n\nHello\n";
        assert_eq!(trim_quoted(underscores), "OK.");
        let block = "OK then.\n\nFrom: Support <desk@example.com>\nSent: Monday, 1 January 2024 10:00\nTo: Ana\n\nHello\n";
        assert_eq!(trim_quoted(block), "OK then.");
    }

    #[test]
    fn trailing_quotes_are_trimmed_with_an_unknown_attribution() {
        let text =
            "Done.\n\nTuki <desk@example.com> kirjoitti 1.1.2024:\n> Try again\n> please\n\n";
        assert_eq!(trim_quoted(text), "Done.");
        let bare = "Done.\n> Try again\n";
        assert_eq!(trim_quoted(bare), "Done.");
    }

    #[test]
    fn inline_replies_and_signatures_are_kept() {
        let inline = "On Mon, 1 Jan 2024 at 10:00, Support <desk@example.com> wrote:\n> What is your order number?\n1234\n> And the date?\nYesterday\n";
        assert_eq!(trim_quoted(inline), inline.trim_end());
        let signed = "Thanks!\n-- \nAna García\nACME\n";
        assert_eq!(trim_quoted(signed), "Thanks!\n-- \nAna García\nACME");
        // A quote followed by the sender's signature is not trailing: nothing is cut.
        let quote_then_sig = "Yes.\n> Is it fixed?\n-- \nAna\n";
        assert_eq!(trim_quoted(quote_then_sig), quote_then_sig.trim_end());
        // An attribution whose quote is followed by a signature is still cut.
        let sig_after = "Yes.\n\nOn Mon, 1 Jan 2024, Support <desk@example.com> wrote:\n> Is it fixed?\n\n-- \nAna\n";
        assert_eq!(trim_quoted(sig_after), "Yes.");
    }

    #[test]
    fn forwarded_content_is_kept() {
        let text = "FYI\n\n---------- Forwarded message ---------\nFrom: Bob <bob@example.org>\nDate: Mon, 1 Jan 2024\nSubject: Broken\n\nIt is broken.\n> old\n";
        assert_eq!(trim_quoted(text), text.trim_end());
    }

    #[test]
    fn never_empty() {
        let only_quote = "> all of it is quoted\n> really\n";
        assert_eq!(trim_quoted(only_quote), only_quote.trim_end());
        let only_attribution = "On Mon, 1 Jan 2024, Ana <a@b.example> wrote:\n> hi\n";
        assert_eq!(trim_quoted(only_attribution), only_attribution.trim_end());
        let original_first = "-----Original Message-----\nFrom: x\n\nbody\n";
        assert!(!trim_quoted(original_first).is_empty());
        assert_eq!(trim_quoted(""), "");
        assert_eq!(trim_quoted("  \n"), "");
        assert_eq!(trim_quoted("Hello  \n\n"), "Hello");
    }

    #[test]
    fn a_sentence_that_mentions_writing_is_not_an_attribution() {
        let text = "I wrote:\nthe order number on the form.\nOn Monday I wrote to you too.\n";
        assert_eq!(trim_quoted(text), text.trim_end());
    }

    #[test]
    fn html_markers() {
        let gmail = r#"<div dir="ltr">Thanks!</div><br><div class="gmail_quote"><div class="gmail_attr">On Mon … wrote:</div><blockquote class="gmail_quote">old</blockquote></div>"#;
        assert_eq!(
            trim_quoted_html(gmail),
            r#"<div dir="ltr">Thanks!</div><br>"#
        );
        let outlook = r#"<div>Fine.</div><div id="appendonsend"></div><hr><div id="divRplyFwdMsg"><b>From:</b> x</div><div>old</div>"#;
        assert_eq!(trim_quoted_html(outlook), "<div>Fine.</div>");
        let apple = r#"<div>Sure.</div><div><br><blockquote type="cite"><div>On … wrote:</div>old</blockquote></div>"#;
        assert_eq!(trim_quoted_html(apple), "<div>Sure.</div><div><br>");
        let thunderbird = r#"<p>Ok</p><div class="moz-cite-prefix">On … wrote:<br></div><BLOCKQUOTE TYPE="cite">old</BLOCKQUOTE>"#;
        assert_eq!(trim_quoted_html(thunderbird), "<p>Ok</p>");
    }

    #[test]
    fn html_inline_reply_and_empty_result_are_kept_whole() {
        let inline = r#"<blockquote type="cite">Question?</blockquote><p>Answer.</p>"#;
        assert_eq!(trim_quoted_html(inline), inline);
        let only_quote = r#"<div class="gmail_quote">all old</div>"#;
        assert_eq!(trim_quoted_html(only_quote), only_quote);
        let text_mentions = "<p>The class is gmail_quote, not a tag attribute here</p>";
        assert_eq!(trim_quoted_html(text_mentions), text_mentions);
    }

    #[test]
    fn visible_text() {
        assert!(!has_visible_text("<div> &nbsp;<br>\u{a0}</div>"));
        assert!(has_visible_text("<div>x</div>"));
    }
}
