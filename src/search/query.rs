//! Asking the index: the words, what the asker may see, the filters, the order and a page.
//!
//! The search term is read as Synapse reads it (`syntax.rs`: words ANDed, quoted phrases,
//! `-word`, `OR`). A word matches any of its forms (the folded word and its stems), and a word
//! of three characters or more also matches as a prefix ("bat" finds "batería"), as Synapse's
//! full-text search does (`terms.rs`). The asker's scope is part of the query: their rooms, and
//! in a room whose history they may only partly read, only the stream ranges they may
//! ([`crate::rooms::Visibility::visible_ranges`]). So counts are exact and pages need no
//! filtering afterwards.
//!
//! Pages never repeat or skip a hit, also while events are indexed between two pages:
//! - in the recent order a page ends at a stream position and the next starts below it;
//! - in the rank order the first page fixes a ceiling (the newest position its searcher
//!   holds) and the next pages rank only what lies under it, skipping the hits already given.
//!   New events change the scores' statistics, but by the same factor for every hit of a
//!   one-word search, so the order under the ceiling holds.

use std::{cmp::Reverse, collections::HashSet, ops::Bound};

use tantivy::{
    DocAddress, DocId, Score, Searcher, SegmentReader, Term,
    collector::{Collector, Count, TopDocs},
    query::{
        BooleanQuery, ConstScoreQuery, EnableScoring, Occur, Query, RangeQuery, TermQuery,
        TermSetQuery,
    },
    schema::IndexRecordOption,
};

use super::{
    Fields, SearchService,
    docsets::TermsFilter,
    document::Key,
    internal,
    terms::{Lead, Words},
};
use ruma::{OwnedRoomId, UserId};

use crate::{error::Result, rooms::RoomService};

/// Deepest a rank-order page may start: each page ranks everything above it again.
const MAX_SKIP: usize = 10_000;

/// The order of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Best match first (BM25), then newest.
    Rank,
    /// Newest first.
    Recent,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageKey {
    /// The recent order: hits below this stream position.
    Below(u64),
    /// The rank order: the hits at or under `ceiling`, but the `skip` best.
    Ranked { skip: usize, ceiling: u64 },
}

impl PageKey {
    pub(crate) fn encode(&self) -> String {
        match self {
            PageKey::Below(pos) => format!("b{pos}"),
            PageKey::Ranked { skip, ceiling } => format!("r{skip}.{ceiling}"),
        }
    }

    pub(crate) fn decode(s: &str) -> Option<PageKey> {
        if let Some(pos) = s.strip_prefix('b') {
            return pos.parse().ok().map(PageKey::Below);
        }
        let (skip, ceiling) = s.strip_prefix('r')?.split_once('.')?;
        let skip: usize = skip.parse().ok().filter(|s| *s <= MAX_SKIP)?;
        Some(PageKey::Ranked {
            skip,
            ceiling: ceiling.parse().ok()?,
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

impl Scope {
    /// The rooms `user` is joined to that `wanted` keeps, each with the ranges of positions the
    /// user may see there ([`RoomService::visible_ranges`]).
    pub(crate) fn of_member(
        rooms: &RoomService,
        user: &UserId,
        wanted: impl Fn(&OwnedRoomId) -> bool,
    ) -> Result<Scope> {
        let mut scope = Vec::new();
        for room_id in rooms.joined_rooms(user)? {
            if !wanted(&room_id) {
                continue;
            }
            let room = rooms.room(&room_id)?;
            let ranges = rooms.visible_ranges(&room, user)?;
            scope.push((room_id.to_string(), ranges));
        }
        Ok(Scope::Rooms(scope))
    }
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
    /// Only events with (`true`) or without (`false`) a `url` in their content.
    pub(crate) contains_url: Option<bool>,
    pub(crate) order: Order,
    pub(crate) after: Option<PageKey>,
    pub(crate) limit: usize,
    /// Whether [`Found::count`] is wanted: counting reads every match, where a page of the
    /// recent order over every room may stop at the newest segments.
    pub(crate) count: bool,
}

/// One hit: the stream position of the event (of the conversation's last change, for a
/// conversation's document).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hit {
    pub(crate) pos: u64,
    /// How well it matches (BM25), whatever the order.
    pub(crate) score: f32,
}

/// What a search found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub(crate) hits: Vec<Hit>,
    /// Every match, on every page (0 unless [`SearchRequest::count`]).
    pub(crate) count: usize,
    /// Whether a page may follow.
    pub(crate) more: bool,
    /// The terms the wanted words match, for highlights.
    pub(crate) terms: HashSet<String>,
    /// The wanted words that also match as prefixes.
    pub(crate) prefixes: Vec<String>,
    /// The wanted words as the asker typed them.
    pub(crate) typed: Vec<String>,
    order: Option<Order>,
    /// The rank order's ceiling, and the hits before this page.
    ceiling: u64,
    skipped: usize,
}

impl Found {
    /// Where a page continues after the first `looked` hits of this one.
    pub(crate) fn after(&self, looked: usize) -> Option<PageKey> {
        match self.order? {
            Order::Recent => Some(PageKey::Below(self.hits.get(looked.checked_sub(1)?)?.pos)),
            Order::Rank => Some(PageKey::Ranked {
                skip: self.skipped + looked,
                ceiling: self.ceiling,
            }),
        }
    }

    /// Where the pages of one group (a room, a sender) continue, given how many of the group's
    /// hits this page and the group's pages before it showed: in the recent order, below this
    /// page's last hit (every hit of the group above it is on this page or before); in the
    /// rank order after the group's `shown` best under the same ceiling.
    pub(crate) fn group_after(&self, shown: usize) -> Option<PageKey> {
        match self.order? {
            Order::Recent => self.after(self.hits.len()),
            Order::Rank => Some(PageKey::Ranked {
                skip: shown,
                ceiling: self.ceiling,
            }),
        }
    }
}

impl SearchService {
    /// Runs a search on the live generation.
    pub(crate) fn search(&self, req: &SearchRequest<'_>) -> Result<Found> {
        let words = Words::of(req.words);
        let searcher = self.live().reader.searcher();
        let Some(query) = self.query(&searcher, req, &words) else {
            return Ok(Found::default());
        };
        let limit = req.limit.min(MAX_SKIP);
        let (hits, count, ceiling, skipped) = match req.order {
            Order::Recent => {
                let below = match req.after {
                    Some(PageKey::Below(pos)) => pos,
                    _ => u64::MAX,
                };
                let (hits, count) = if req.count {
                    top(&searcher, &query, limit + 1, 0, true, move |score, pos| {
                        (pos < below).then_some((pos, score))
                    })?
                } else {
                    (newest(&searcher, &query, limit + 1, below)?, 0)
                };
                (hits, count, 0, 0)
            }
            Order::Rank => {
                let (skip, ceiling) = match req.after {
                    Some(PageKey::Ranked { skip, ceiling }) => (skip, ceiling),
                    _ => (0, newest_position(&searcher)),
                };
                // Past the ceiling is left out by the collector: a range query would read the
                // whole position column.
                let (hits, count) = top(
                    &searcher,
                    &query,
                    limit + 1,
                    skip,
                    req.count,
                    move |score, pos| (pos <= ceiling).then_some((score, pos)),
                )?;
                (hits, count, ceiling, skip)
            }
        };
        let mut hits = hits;
        let more = hits.len() > limit;
        hits.truncate(limit);
        Ok(Found {
            hits,
            count,
            more,
            terms: words.terms,
            prefixes: words.prefixes,
            typed: words.typed,
            order: Some(req.order),
            ceiling,
            skipped,
        })
    }

    pub(super) fn query(
        &self,
        searcher: &Searcher,
        req: &SearchRequest<'_>,
        words: &Words,
    ) -> Option<Box<dyn Query>> {
        let f = &self.fields;
        if req.keys.is_empty() {
            return None;
        }
        let lead = match req.scope {
            Scope::All => Lead::Words,
            Scope::Rooms(_) => Lead::Scope,
        };
        let mut clauses = words.clauses(searcher, f.text, lead)?;
        let keys: Vec<&str> = req.keys.iter().map(|k| k.as_str()).collect();
        clauses.extend(one_of(f.key, &keys, &Key::ALL.map(Key::as_str)));
        if let Scope::Rooms(rooms) = req.scope {
            clauses.push((Occur::Must, scope_query(f, rooms)?));
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
            let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
            clauses.extend(one_of(f.kind, &kinds, &super::document::INDEXED_KINDS));
        }
        if let Some(wanted) = req.contains_url {
            let with_url = TermQuery::new(
                Term::from_field_text(f.url, "true"),
                IndexRecordOption::Basic,
            );
            let occur = if wanted { Occur::Must } else { Occur::MustNot };
            clauses.push((occur, filter(with_url)));
        }
        Some(Box::new(BooleanQuery::new(clauses)))
    }
}

/// The best `limit` hits after the `skip` best, by the key `key` gives each (`None` leaves a
/// hit out), and (when `count`) how many documents match in all.
fn top<K>(
    searcher: &Searcher,
    query: &dyn Query,
    limit: usize,
    skip: usize,
    count: bool,
    key: impl Fn(Score, u64) -> Option<K> + Clone + Send + Sync + 'static,
) -> Result<(Vec<Hit>, usize)>
where
    K: PartialOrd + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    let collector = by_key(limit, skip, key);
    let failed = |e| internal("cannot query the index", e);
    let (top, count) = match count {
        true => searcher
            .search(query, &(collector, Count))
            .map_err(failed)?,
        false => (searcher.search(query, &collector).map_err(failed)?, 0),
    };
    Ok((hits(top), count))
}

/// The collector of the best `limit` hits after the `skip` best by `key`, each with its score
/// and position.
fn by_key<K>(
    limit: usize,
    skip: usize,
    key: impl Fn(Score, u64) -> Option<K> + Clone + Send + Sync + 'static,
) -> impl Collector<Fruit = Keyed<K>>
where
    K: PartialOrd + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    TopDocs::with_limit(limit)
        .and_offset(skip)
        .tweak_score(move |segment: &SegmentReader| {
            let positions = segment
                .fast_fields()
                .u64("pos")
                .ok()
                .map(|c| c.first_or_default_col(0));
            let key = key.clone();
            move |doc: DocId, score: Score| {
                let pos = positions.as_ref().map_or(0, |c| c.get_val(doc));
                key(score, pos).map(|k| (k, score, pos))
            }
        })
}

/// What [`by_key`] collects: each hit's key (with its score and position) and address.
type Keyed<K> = Vec<(Option<(K, Score, u64)>, DocAddress)>;

fn hits<K>(top: Keyed<K>) -> Vec<Hit> {
    top.into_iter()
        .filter_map(|(key, _)| key)
        .map(|(_, score, pos)| Hit { pos, score })
        .collect()
}

/// The recent order's newest `limit` hits below `below`, uncounted, reading the segments newest
/// first and stopping at the first that cannot hold a newer hit than those found: a common
/// word's newest hits are in the small segments of the last minutes, and the large merged
/// segments of the past are not read.
fn newest(searcher: &Searcher, query: &dyn Query, limit: usize, below: u64) -> Result<Vec<Hit>> {
    let failed = |e| internal("cannot query the index", e);
    let weight = query
        .weight(EnableScoring::enabled_from_searcher(searcher))
        .map_err(failed)?;
    let readers = searcher.segment_readers();
    let mut segments: Vec<(u64, u64, usize)> = readers
        .iter()
        .enumerate()
        .filter_map(|(ord, segment)| {
            let positions = segment.fast_fields().u64("pos").ok()?;
            Some((positions.min_value(), positions.max_value(), ord))
        })
        .collect();
    segments.sort_unstable_by_key(|&(_, newest, _)| Reverse(newest));
    let collector = by_key(limit, 0, move |score, pos| {
        (pos < below).then_some((pos, score))
    });
    let mut found: Vec<Hit> = Vec::new();
    for (oldest, newest, ord) in segments {
        if oldest >= below {
            continue;
        }
        if found.len() >= limit && found.last().is_some_and(|h| h.pos > newest) {
            break;
        }
        let fruit = collector
            .collect_segment(weight.as_ref(), ord as u32, &readers[ord])
            .and_then(|fruit| collector.merge_fruits(vec![fruit]))
            .map_err(failed)?;
        found.extend(hits(fruit));
        found.sort_unstable_by_key(|h| Reverse(h.pos));
        found.truncate(limit);
    }
    Ok(found)
}

/// The clause that keeps the documents whose `field` is one of `wanted`, of the values
/// `universe` lists (the first the most common): matching all of a common value costs a pass
/// over its postings on every query, so when the common value is wanted the clause excludes
/// the (rare) others instead; nothing when everything is wanted.
fn one_of(
    field: tantivy::schema::Field,
    wanted: &[&str],
    universe: &[&str],
) -> Option<(Occur, Box<dyn Query>)> {
    let others: Vec<&str> = universe
        .iter()
        .filter(|v| !wanted.contains(v))
        .copied()
        .collect();
    let terms = |values: &[&str]| -> Vec<Term> {
        values
            .iter()
            .map(|v| Term::from_field_text(field, v))
            .collect()
    };
    if others.is_empty() {
        None
    } else if universe
        .first()
        .is_some_and(|common| wanted.contains(common))
    {
        Some((Occur::MustNot, Box::new(TermSetQuery::new(terms(&others)))))
    } else {
        Some((Occur::Must, filter(TermSetQuery::new(terms(wanted)))))
    }
}

/// A clause that restricts without adding to the score.
fn filter(q: impl Query) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(Box::new(q), 0.0))
}

/// The newest stream position a searcher holds: the rank order's ceiling for later pages.
fn newest_position(searcher: &Searcher) -> u64 {
    searcher
        .segment_readers()
        .iter()
        .filter_map(|segment| segment.fast_fields().u64("pos").ok())
        .map(|column| column.max_value())
        .max()
        .unwrap_or(0)
}

/// The asker's rooms, unscored: whole rooms in one filter, partly visible ones with their
/// ranges. `None` when nothing is visible.
fn scope_query(f: &Fields, rooms: &[(String, Vec<(u64, u64)>)]) -> Option<Box<dyn Query>> {
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
    if parts.is_empty() {
        return (!whole.is_empty())
            .then(|| -> Box<dyn Query> { Box::new(TermsFilter::new(whole)) });
    }
    if !whole.is_empty() {
        parts.push((Occur::Should, Box::new(TermsFilter::new(whole))));
    }
    Some(filter(BooleanQuery::new(parts)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::fixture;

    #[test]
    fn the_newest_segments_first_page_the_recent_order_as_counting_all_does() {
        let dir = tempfile::tempdir().unwrap();
        // Position i + 1: room i mod 3; "hola" in rooms 0 and 2, in four segments.
        let docs: Vec<(String, String)> = (0..60)
            .map(|i| {
                let word = if i % 3 == 1 { "adios" } else { "hola" };
                (format!("!r{}:x", i % 3), format!("{word} {i}"))
            })
            .collect();
        let docs: Vec<(&str, &str)> = docs.iter().map(|(r, t)| (r.as_str(), t.as_str())).collect();
        let search = fixture::service(dir.path(), &docs, 4);
        let mine = Scope::Rooms(vec![
            ("!r0:x".into(), vec![(0, u64::MAX)]),
            ("!r2:x".into(), vec![(0, 30)]),
        ]);
        let all = |pos: u64| (pos - 1) % 3 != 1;
        let in_mine = |pos: u64| (pos - 1).is_multiple_of(3) || ((pos - 1) % 3 == 2 && pos < 30);
        for (scope, wanted) in [(Scope::All, &all as &dyn Fn(u64) -> bool), (mine, &in_mine)] {
            let want: Vec<u64> = (1..=60).rev().filter(|p| wanted(*p)).collect();
            for count in [false, true] {
                let (mut got, mut after) = (Vec::new(), None);
                loop {
                    let found = search
                        .search(&SearchRequest {
                            words: "hola",
                            keys: &[Key::Body],
                            scope: &scope,
                            senders: None,
                            not_senders: &[],
                            kinds: None,
                            contains_url: None,
                            order: Order::Recent,
                            after,
                            limit: 7,
                            count,
                        })
                        .unwrap();
                    assert_eq!(found.count, if count { want.len() } else { 0 });
                    got.extend(found.hits.iter().map(|h| h.pos));
                    if !found.more {
                        break;
                    }
                    after = found.after(found.hits.len());
                }
                assert_eq!(got, want, "{scope:?} count {count}");
            }
        }
    }

    #[test]
    fn page_keys_round_trip_and_refuse_what_is_not_one() {
        for key in [
            PageKey::Below(0),
            PageKey::Below(u64::MAX),
            PageKey::Ranked {
                skip: 40,
                ceiling: 123_456_789,
            },
        ] {
            assert_eq!(PageKey::decode(&key.encode()), Some(key));
        }
        for bad in ["", "b", "bx", "r1", "r1.x", "rx.1", "r10001.5", "x12"] {
            assert_eq!(PageKey::decode(bad), None, "{bad}");
        }
    }
}
