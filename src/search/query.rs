//! Asking the index: the words, what the asker may see, the filters, the order and a page.
//!
//! Words are ANDed; each matches any of its forms (the folded word and its stems), and a word of
//! three characters or more also matches as a prefix ("bat" finds "batería"), as Synapse's
//! full-text search does. The asker's scope is part of the query: their rooms, and in a room
//! whose history they may only partly read, only the stream ranges they may
//! ([`crate::rooms::Visibility::visible_ranges`]). So counts are exact and pages need no
//! filtering afterwards.
//!
//! Pages are keyset pages: a page ends at its last hit's `(score, position)` and the next one
//! starts strictly after it in the order, so a page never repeats a hit of the pages before it
//! and skips none, also while new events are indexed (in the recent order; in the rank order,
//! scores of later pages can shift when many documents arrive between two pages).

use std::{collections::HashSet, ops::Bound};

use tantivy::{
    DocId, Score, SegmentReader, Term,
    collector::{Collector, Count, SegmentCollector, TopDocs},
    columnar::StrColumn,
    query::{
        BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, RangeQuery,
        TermQuery, TermSetQuery,
    },
    schema::{Field, IndexRecordOption},
};

use super::{Fields, SearchService, analyzer, document::Key, internal};
use crate::error::Result;

/// Shortest word (in characters) that also matches as a prefix.
const PREFIX_MIN_CHARS: usize = 3;
/// Most words of a query that count: more would only cost.
const MAX_WORDS: usize = 16;
/// Most rooms a [`SearchService::matching_rooms`] answer holds.
pub(crate) const MAX_ROOMS: usize = 10_000;

/// The order of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Best match first (BM25), then newest.
    Rank,
    /// Newest first.
    Recent,
}

/// Where a page starts: strictly after this hit in the order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PageKey {
    pub(crate) score: f32,
    pub(crate) pos: u64,
}

impl PageKey {
    pub(crate) fn encode(&self) -> String {
        format!("{:08x}.{}", self.score.to_bits(), self.pos)
    }

    pub(crate) fn decode(s: &str) -> Option<PageKey> {
        let (score, pos) = s.split_once('.')?;
        Some(PageKey {
            score: f32::from_bits(u32::from_str_radix(score, 16).ok()?),
            pos: pos.parse().ok()?,
        })
    }
}

/// The rooms a search looks in.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// Every room (the support desk's admins).
    All,
    /// These rooms, each with the half-open ranges of positions the asker may see.
    Rooms(Vec<(String, Vec<(u64, u64)>)>),
}

/// One search.
#[derive(Debug, Clone)]
pub(crate) struct SearchRequest<'a> {
    pub(crate) words: &'a str,
    pub(crate) keys: &'a [Key],
    pub(crate) scope: &'a Scope,
    /// Only these senders, when given.
    pub(crate) senders: Option<&'a [String]>,
    pub(crate) not_senders: &'a [String],
    /// Only these event types, when given.
    pub(crate) kinds: Option<&'a [String]>,
    pub(crate) order: Order,
    pub(crate) after: Option<PageKey>,
    pub(crate) limit: usize,
}

/// One hit: the stream position of the event (of the conversation's last change, for a
/// conversation's document).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hit {
    pub(crate) pos: u64,
    /// How well it matches (BM25), whatever the order.
    pub(crate) score: f32,
    /// What the order sorts by before the position: the score in the rank order, 0 in the
    /// recent one.
    primary: f32,
}

impl Hit {
    /// Where the page after this hit starts.
    pub(crate) fn key(&self) -> PageKey {
        PageKey {
            score: self.primary,
            pos: self.pos,
        }
    }
}

/// What a search found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub(crate) hits: Vec<Hit>,
    /// Every match, on every page.
    pub(crate) count: usize,
    /// Whether a page may follow.
    pub(crate) more: bool,
    /// The terms the words match, for highlights.
    pub(crate) terms: HashSet<String>,
    /// The words that also match as prefixes.
    pub(crate) prefixes: Vec<String>,
}

impl SearchService {
    /// Runs a search on the live generation.
    pub(crate) fn search(&self, req: &SearchRequest<'_>) -> Result<Found> {
        let words = Words::of(req.words);
        let Some(query) = self.query(req, &words) else {
            return Ok(Found::default());
        };
        let searcher = self.live().reader.searcher();
        let after = req.after;
        let recent = req.order == Order::Recent;
        let top = TopDocs::with_limit(req.limit + 1).tweak_score(move |segment: &SegmentReader| {
            let positions = segment
                .fast_fields()
                .u64("pos")
                .ok()
                .map(|c| c.first_or_default_col(0));
            move |doc: DocId, score: Score| {
                let pos = positions.as_ref().map_or(0, |c| c.get_val(doc));
                // The order's key, and the score beside it (which decides nothing: positions
                // are unique).
                let key = (if recent { 0.0 } else { score }, pos);
                match after {
                    Some(a) if key >= (a.score, a.pos) => None,
                    _ => Some((key.0, key.1, score)),
                }
            }
        });
        let (top, count) = searcher
            .search(&query, &(top, Count))
            .map_err(|e| internal("cannot query the index", e))?;
        let mut hits: Vec<Hit> = top
            .into_iter()
            .filter_map(|(key, _)| key)
            .map(|(primary, pos, score)| Hit {
                pos,
                score,
                primary,
            })
            .collect();
        let more = hits.len() > req.limit;
        hits.truncate(req.limit);
        Ok(Found {
            hits,
            count,
            more,
            terms: words.terms,
            prefixes: words.prefixes,
        })
    }

    /// The rooms with a document matching `words` (at most [`MAX_ROOMS`]), for listings of
    /// conversations that filter by text.
    pub(crate) fn matching_rooms(&self, words: &str) -> Result<HashSet<String>> {
        let scope = Scope::All;
        let req = SearchRequest {
            words,
            keys: &[Key::Body, Key::Name, Key::Topic, Key::Conversation],
            scope: &scope,
            senders: None,
            not_senders: &[],
            kinds: None,
            order: Order::Recent,
            after: None,
            limit: 0,
        };
        let words = Words::of(words);
        let Some(query) = self.query(&req, &words) else {
            return Ok(HashSet::new());
        };
        self.live()
            .reader
            .searcher()
            .search(&query, &RoomsCollector)
            .map_err(|e| internal("cannot query the index", e))
    }

    fn query(&self, req: &SearchRequest<'_>, words: &Words) -> Option<Box<dyn Query>> {
        let f = &self.fields;
        if words.groups.is_empty() || req.keys.is_empty() {
            return None;
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for group in &words.groups {
            clauses.push((Occur::Must, word_query(f.text, group)));
        }
        let keys = req
            .keys
            .iter()
            .map(|k| Term::from_field_text(f.key, k.as_str()));
        clauses.push((Occur::Must, filter(TermSetQuery::new(keys))));
        match req.scope {
            Scope::All => {}
            Scope::Rooms(rooms) => clauses.push((Occur::Must, filter(scope_query(f, rooms)?))),
        }
        if let Some(senders) = req.senders {
            let terms = senders.iter().map(|s| Term::from_field_text(f.sender, s));
            clauses.push((Occur::Must, filter(TermSetQuery::new(terms))));
        }
        if !req.not_senders.is_empty() {
            let terms = req
                .not_senders
                .iter()
                .map(|s| Term::from_field_text(f.sender, s));
            clauses.push((Occur::MustNot, Box::new(TermSetQuery::new(terms))));
        }
        if let Some(kinds) = req.kinds {
            let terms = kinds.iter().map(|k| Term::from_field_text(f.kind, k));
            clauses.push((Occur::Must, filter(TermSetQuery::new(terms))));
        }
        Some(Box::new(BooleanQuery::new(clauses)))
    }
}

/// A clause that restricts without adding to the score.
fn filter(q: impl Query) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(Box::new(q), 0.0))
}

/// The asker's rooms: whole rooms in one term set, partly visible ones with their ranges.
/// `None` when nothing is visible.
fn scope_query(f: &Fields, rooms: &[(String, Vec<(u64, u64)>)]) -> Option<impl Query> {
    let mut whole = Vec::new();
    let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for (room, ranges) in rooms {
        let term = Term::from_field_text(f.room_id, room);
        match ranges.as_slice() {
            [] => {}
            [(0, u64::MAX)] => whole.push(term),
            ranges => {
                let ranges: Vec<(Occur, Box<dyn Query>)> = ranges
                    .iter()
                    .map(|(from, to)| {
                        let q: Box<dyn Query> = Box::new(RangeQuery::new(
                            Bound::Included(Term::from_field_u64(f.pos, *from)),
                            Bound::Excluded(Term::from_field_u64(f.pos, *to)),
                        ));
                        (Occur::Should, q)
                    })
                    .collect();
                let in_room: Vec<(Occur, Box<dyn Query>)> = vec![
                    (
                        Occur::Must,
                        Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                    ),
                    (Occur::Must, Box::new(BooleanQuery::new(ranges))),
                ];
                parts.push((Occur::Should, Box::new(BooleanQuery::new(in_room))));
            }
        }
    }
    if !whole.is_empty() {
        parts.push((Occur::Should, Box::new(TermSetQuery::new(whole))));
    }
    (!parts.is_empty()).then(|| BooleanQuery::new(parts))
}

/// One word: any of its forms, or (long enough) as a prefix, scored below a whole form.
fn word_query(text: Field, forms: &[String]) -> Box<dyn Query> {
    let mut any: Vec<(Occur, Box<dyn Query>)> = forms
        .iter()
        .map(|form| {
            let q: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(text, form),
                IndexRecordOption::WithFreqs,
            ));
            (Occur::Should, q)
        })
        .collect();
    if let Some(word) = forms.first().filter(|w| is_prefix_word(w)) {
        let prefix = FuzzyTermQuery::new_prefix(Term::from_field_text(text, word), 0, false);
        any.push((
            Occur::Should,
            Box::new(BoostQuery::new(Box::new(prefix), 0.1)),
        ));
    }
    Box::new(BooleanQuery::new(any))
}

fn is_prefix_word(word: &str) -> bool {
    word.chars().count() >= PREFIX_MIN_CHARS && word.chars().all(char::is_alphanumeric)
}

/// A query's words, analyzed as documents are.
struct Words {
    groups: Vec<Vec<String>>,
    terms: HashSet<String>,
    prefixes: Vec<String>,
}

impl Words {
    fn of(text: &str) -> Words {
        let mut groups = analyzer::query_words(text);
        groups.truncate(MAX_WORDS);
        let terms = groups.iter().flatten().cloned().collect();
        let prefixes = groups
            .iter()
            .filter_map(|g| g.first())
            .filter(|w| is_prefix_word(w))
            .cloned()
            .collect();
        Words {
            groups,
            terms,
            prefixes,
        }
    }
}

/// Collects the distinct rooms of the matching documents, from the `room_id` column.
struct RoomsCollector;

struct SegmentRooms {
    column: Option<StrColumn>,
    ords: HashSet<u64>,
}

impl Collector for RoomsCollector {
    type Fruit = HashSet<String>;
    type Child = SegmentRooms;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentRooms> {
        Ok(SegmentRooms {
            column: segment.fast_fields().str("room_id")?,
            ords: HashSet::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HashSet<String>>) -> tantivy::Result<HashSet<String>> {
        let mut all = HashSet::new();
        for rooms in fruits {
            all.extend(rooms.into_iter().take(MAX_ROOMS.saturating_sub(all.len())));
        }
        Ok(all)
    }
}

impl SegmentCollector for SegmentRooms {
    type Fruit = HashSet<String>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(column) = &self.column
            && self.ords.len() < MAX_ROOMS
        {
            self.ords.extend(column.term_ords(doc));
        }
    }

    fn harvest(self) -> HashSet<String> {
        let Some(column) = self.column else {
            return HashSet::new();
        };
        let mut rooms = HashSet::with_capacity(self.ords.len());
        for ord in self.ords {
            let mut room = String::new();
            if let Ok(true) = column.ord_to_str(ord, &mut room) {
                rooms.insert(room);
            }
        }
        rooms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_keys_round_trip_exactly() {
        for key in [
            PageKey { score: 0.0, pos: 0 },
            PageKey {
                score: 3.1415927,
                pos: 123_456_789,
            },
            PageKey {
                score: f32::MIN_POSITIVE,
                pos: u64::MAX,
            },
        ] {
            assert_eq!(PageKey::decode(&key.encode()), Some(key));
        }
        assert_eq!(PageKey::decode("zz.1"), None);
        assert_eq!(PageKey::decode("3f800000"), None);
        assert_eq!(PageKey::decode("3f800000.x"), None);
    }
}
