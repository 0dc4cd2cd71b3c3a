//! The search term's syntax, as Synapse's full-text search reads it (PostgreSQL's
//! `websearch_to_tsquery`, SQLite's FTS): words are ANDed, `"a quoted phrase"` matches its words
//! in that order, `-word` or `-"a phrase"` excludes, and `OR` between two terms lets either do.
//! Anything else is a word: a lone `-` or quote is not an error, as in a search box.

/// One term of a clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Term {
    /// Words, each required (one word usually; `ORD-2024-0042` analyzes into several).
    Words(String),
    /// Words in this order.
    Phrase(String),
}

/// One clause: any of its terms matches; a negated clause excludes what it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    pub(crate) negated: bool,
    pub(crate) any_of: Vec<Term>,
}

/// Reads a search term into clauses, all of which a result must satisfy.
pub(crate) fn parse(input: &str) -> Vec<Clause> {
    let mut clauses: Vec<Clause> = Vec::new();
    let mut or_pending = false;
    let mut rest = input.trim_start();
    while !rest.is_empty() {
        let negated = rest.starts_with('-') && rest[1..].starts_with(|c: char| !c.is_whitespace());
        if negated {
            rest = &rest[1..];
        }
        let term = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            let phrase = &quoted[..end];
            rest = quoted.get(end + 1..).unwrap_or("");
            Term::Phrase(phrase.to_owned())
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"')
                .unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            if !negated && word.eq_ignore_ascii_case("or") && !clauses.is_empty() {
                or_pending = true;
                rest = rest.trim_start();
                continue;
            }
            Term::Words(word.to_owned())
        };
        rest = rest.trim_start();
        match clauses.last_mut() {
            Some(last) if or_pending && !negated && !last.negated => last.any_of.push(term),
            _ => clauses.push(Clause {
                negated,
                any_of: vec![term],
            }),
        }
        or_pending = false;
    }
    clauses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &str) -> Term {
        Term::Words(w.to_owned())
    }

    fn clause(negated: bool, any_of: Vec<Term>) -> Clause {
        Clause { negated, any_of }
    }

    #[test]
    fn reads_words_phrases_exclusions_and_or() {
        assert_eq!(
            parse("battery -died"),
            [
                clause(false, vec![words("battery")]),
                clause(true, vec![words("died")])
            ]
        );
        assert_eq!(
            parse("battery OR coffee cup"),
            [
                clause(false, vec![words("battery"), words("coffee")]),
                clause(false, vec![words("cup")])
            ]
        );
        assert_eq!(
            parse("\"died battery\" -\"no way\" or"),
            [
                clause(false, vec![Term::Phrase("died battery".into())]),
                clause(true, vec![Term::Phrase("no way".into())]),
            ]
        );
        assert_eq!(
            parse("ORD-2024-0042"),
            [clause(false, vec![words("ORD-2024-0042")])]
        );
        assert_eq!(
            parse("- \"open"),
            [
                clause(false, vec![words("-")]),
                clause(false, vec![Term::Phrase("open".into())])
            ]
        );
        // A trailing OR joins nothing: it is dropped, as websearch_to_tsquery does.
        assert_eq!(parse("   "), []);
        assert_eq!(
            parse("OR battery"),
            [
                clause(false, vec![words("OR")]),
                clause(false, vec![words("battery")])
            ]
        );
    }
}
