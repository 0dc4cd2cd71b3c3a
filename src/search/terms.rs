//! A search term as index queries: parsed (`syntax.rs`), then each word analyzed as documents
//! are (`analyzer.rs`), so that both sides agree on terms.

use std::{collections::HashSet, ops::Bound};

use tantivy::{
    Term,
    query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery},
    schema::{Field, IndexRecordOption},
};

use super::{analyzer, syntax};

/// Shortest word (in characters) that also matches as a prefix.
const PREFIX_MIN_CHARS: usize = 3;
/// Most words of a search term that count: more would only cost.
const MAX_WORDS: usize = 16;

/// A search term, parsed and analyzed.
pub(super) struct Words {
    clauses: Vec<(bool, Vec<Analyzed>)>,
    /// The terms the wanted words match, for highlights.
    pub(super) terms: HashSet<String>,
    /// The wanted words that also match as prefixes.
    pub(super) prefixes: Vec<String>,
    /// The wanted words as typed.
    pub(super) typed: Vec<String>,
}

/// One term of a clause: its words' forms, in order; a phrase wants them in that order.
struct Analyzed {
    groups: Vec<Vec<String>>,
    phrase: bool,
}

impl Words {
    pub(super) fn of(text: &str) -> Words {
        let mut words = Words {
            clauses: Vec::new(),
            terms: HashSet::new(),
            prefixes: Vec::new(),
            typed: Vec::new(),
        };
        let mut budget = MAX_WORDS;
        for clause in syntax::parse(text) {
            let mut any_of = Vec::new();
            for term in clause.any_of {
                let (text, phrase) = match term {
                    syntax::Term::Words(t) => (t, false),
                    syntax::Term::Phrase(t) => (t, true),
                };
                let mut groups = analyzer::query_words(&text);
                groups.truncate(budget);
                budget -= groups.len();
                if groups.is_empty() {
                    continue;
                }
                if !clause.negated {
                    words
                        .typed
                        .extend(text.split_whitespace().map(str::to_owned));
                    words.terms.extend(groups.iter().flatten().cloned());
                    if !phrase {
                        let prefixes = groups.iter().filter_map(|g| g.first());
                        words
                            .prefixes
                            .extend(prefixes.filter(|w| is_prefix_word(w)).cloned());
                    }
                }
                any_of.push(Analyzed { groups, phrase });
            }
            if !any_of.is_empty() {
                words.clauses.push((clause.negated, any_of));
            }
        }
        words
    }

    /// The clauses as queries on `text`; `None` when nothing is asked for (no words, or only
    /// exclusions).
    pub(super) fn clauses(&self, text: Field) -> Option<Vec<(Occur, Box<dyn Query>)>> {
        if !self.clauses.iter().any(|(negated, _)| !negated) {
            return None;
        }
        let clauses = self
            .clauses
            .iter()
            .map(|(negated, any_of)| {
                let alternatives: Vec<Box<dyn Query>> =
                    any_of.iter().map(|term| term.query(text)).collect();
                let occur = if *negated {
                    Occur::MustNot
                } else {
                    Occur::Must
                };
                (occur, any(alternatives))
            })
            .collect();
        Some(clauses)
    }
}

impl Analyzed {
    fn query(&self, text: Field) -> Box<dyn Query> {
        if self.phrase && self.groups.len() > 1 {
            let terms = self
                .groups
                .iter()
                .enumerate()
                .filter_map(|(i, forms)| Some((i, Term::from_field_text(text, forms.first()?))))
                .collect();
            return Box::new(PhraseQuery::new_with_offset(terms));
        }
        let all: Vec<(Occur, Box<dyn Query>)> = self
            .groups
            .iter()
            .map(|forms| (Occur::Must, word_query(text, forms, !self.phrase)))
            .collect();
        match <[_; 1]>::try_from(all) {
            Ok([(_, one)]) => one,
            Err(all) => Box::new(BooleanQuery::new(all)),
        }
    }
}

/// Either of `queries`.
fn any(queries: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    match <[_; 1]>::try_from(queries) {
        Ok([one]) => one,
        Err(many) => Box::new(BooleanQuery::new(
            many.into_iter().map(|q| (Occur::Should, q)).collect(),
        )),
    }
}

/// One word: any of its forms, or (long enough, and `prefix`) as a prefix, scored below a
/// whole form.
fn word_query(text: Field, forms: &[String], prefix: bool) -> Box<dyn Query> {
    let mut alternatives: Vec<Box<dyn Query>> = forms
        .iter()
        .map(|form| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(text, form),
                IndexRecordOption::WithFreqs,
            ))
        })
        .collect();
    if let Some(word) = forms.first().filter(|w| prefix && is_prefix_word(w)) {
        // The terms that start with `word`: a range of the term dictionary, read in order.
        let prefix = RangeQuery::new(
            Bound::Included(Term::from_field_text(text, word)),
            Bound::Excluded(Term::from_field_text(text, &format!("{word}{}", char::MAX))),
        );
        alternatives.push(Box::new(BoostQuery::new(Box::new(prefix), 0.1)));
    }
    any(alternatives)
}

fn is_prefix_word(word: &str) -> bool {
    word.chars().count() >= PREFIX_MIN_CHARS && word.chars().all(char::is_alphanumeric)
}
