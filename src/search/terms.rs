//! A search term as index queries: parsed (`syntax.rs`), then each word analyzed as documents
//! are (`analyzer.rs`), so that both sides agree on terms.

use std::collections::{HashMap, HashSet};

use tantivy::{
    Searcher, Term,
    query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery},
    schema::{Field, IndexRecordOption},
};

use super::{analyzer, docsets::SeekingUnion, syntax};

/// Shortest word (in characters) that also matches as a prefix.
const PREFIX_MIN_CHARS: usize = 3;
/// Most longer words a prefix matches: the most frequent of them. A short prefix ("con") may
/// start thousands of words; each would cost a pass over its postings.
const MAX_LONGER_WORDS: usize = 32;
/// Most dictionary entries read, per segment, looking for them.
const MAX_DICTIONARY_READ: usize = 4096;
/// How much a longer word scores against a whole form.
const LONGER_WORD_BOOST: f32 = 0.1;

/// Which side of the intersection drives: the one with fewer documents, which the others
/// follow by seeking. Tantivy's own union is the faster one to drive; a seeking union is the
/// faster one to follow ([`super::docsets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lead {
    /// The words (a search over every room).
    Words,
    /// The asker's rooms.
    Scope,
}
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

    /// The clauses as queries on `text` of `searcher`'s index (whose dictionary says which
    /// longer words a prefix matches); `None` when nothing is asked for (no words, or only
    /// exclusions).
    pub(super) fn clauses(
        &self,
        searcher: &Searcher,
        text: Field,
        lead: Lead,
    ) -> Option<Vec<(Occur, Box<dyn Query>)>> {
        if !self.clauses.iter().any(|(negated, _)| !negated) {
            return None;
        }
        let clauses = self
            .clauses
            .iter()
            .map(|(negated, any_of)| {
                let alternatives: Vec<Box<dyn Query>> = any_of
                    .iter()
                    .map(|term| term.query(searcher, text, lead))
                    .collect();
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
    fn query(&self, searcher: &Searcher, text: Field, lead: Lead) -> Box<dyn Query> {
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
            .map(|forms| {
                let longer = match self.phrase {
                    false => longer_words(searcher, text, forms),
                    true => Vec::new(),
                };
                (Occur::Must, word_query(text, forms, longer, lead))
            })
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

/// One word: any of its forms, or one of the `longer` words it starts, scored below a whole
/// form.
fn word_query(text: Field, forms: &[String], longer: Vec<Term>, lead: Lead) -> Box<dyn Query> {
    let term =
        |t: Term| -> Box<dyn Query> { Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)) };
    let whole = forms.iter().map(|f| term(Term::from_field_text(text, f)));
    if lead == Lead::Scope && forms.len() + longer.len() > 1 {
        let parts = whole.map(|q| (q, 1.0));
        let longer = longer.into_iter().map(|t| (term(t), LONGER_WORD_BOOST));
        return Box::new(SeekingUnion::new(parts.chain(longer).collect()));
    }
    let longer = longer
        .into_iter()
        .map(|t| -> Box<dyn Query> { Box::new(BoostQuery::new(term(t), LONGER_WORD_BOOST)) });
    any(whole.chain(longer).collect())
}

/// The words of `searcher`'s dictionary that start with a word's first form (when it is long
/// enough) and are none of its forms: the [`MAX_LONGER_WORDS`] most frequent, as Synapse's
/// prefix search finds "batería" for "bat".
fn longer_words(searcher: &Searcher, text: Field, forms: &[String]) -> Vec<Term> {
    let Some(word) = forms.first().filter(|w| is_prefix_word(w)) else {
        return Vec::new();
    };
    let end = format!("{word}{}", char::MAX);
    let mut frequency: HashMap<Vec<u8>, u64> = HashMap::new();
    for segment in searcher.segment_readers() {
        let Ok(postings) = segment.inverted_index(text) else {
            continue;
        };
        let Ok(mut stream) = postings.terms().range().gt(word).lt(&end).into_stream() else {
            continue;
        };
        let mut read = 0;
        while read < MAX_DICTIONARY_READ && stream.advance() {
            read += 1;
            let key = stream.key();
            if forms.iter().any(|f| f.as_bytes() == key) {
                continue;
            }
            let freq = u64::from(stream.value().doc_freq);
            *frequency.entry(key.to_vec()).or_default() += freq;
        }
    }
    let mut words: Vec<(Vec<u8>, u64)> = frequency.into_iter().collect();
    // Most frequent first, then in the dictionary's order, so that equal inputs give equal
    // queries.
    words.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    words
        .into_iter()
        .take(MAX_LONGER_WORDS)
        .filter_map(|(w, _)| String::from_utf8(w).ok())
        .map(|w| Term::from_field_text(text, &w))
        .collect()
}

fn is_prefix_word(word: &str) -> bool {
    word.chars().count() >= PREFIX_MIN_CHARS && word.chars().all(char::is_alphanumeric)
}
