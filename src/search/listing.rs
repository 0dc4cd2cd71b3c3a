//! Which rooms a conversation listing's `q` matches (`GET /api/support/v1/conversations?q=`).
//!
//! Two ways, chosen by how many postings the words have:
//! - few (a rare word, an order number): every matching room at once, in one pass over them;
//! - many (a word a third of the messages hold): a batch of rooms at a time as the listing
//!   asks (the rooms that pass its other filters, as many as its page still needs), each batch
//!   a query on those rooms' own documents. Most rooms hold such a word, so a page is usually
//!   found with one question, where the pass would have read the postings of every room. A
//!   listing that asks about [`MAX_ROOM_QUERIES`] rooms this way (the word is common but in
//!   few rooms) takes the pass after all, so a listing costs at most about twice the pass.

use std::{
    collections::HashSet,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use ruma::RoomId;
use tantivy::{
    DocId, Score, Searcher, SegmentReader, Term,
    collector::{Collector, SegmentCollector},
    columnar::StrColumn,
    query::{BooleanQuery, Occur, Query},
    schema::Field,
};

use super::{
    SearchService,
    docsets::TermsFilter,
    internal,
    terms::{Lead, Words},
};
use crate::{error::Result, support::filter::RoomText};

/// Most rooms one answer holds.
const MAX_ROOMS: usize = 10_000;
/// Postings up to which the words' rooms are found in one pass (a millisecond or two).
const ONE_PASS_POSTINGS: u64 = 50_000;
/// Rooms asked about in batches before the pass is taken after all.
const MAX_ROOM_QUERIES: usize = 400;

impl SearchService {
    /// Which rooms have a document (a message, a name or topic, a conversation's details)
    /// matching `words`.
    pub(crate) fn room_text(&self, words: &str) -> Result<Arc<dyn RoomText>> {
        self.room_text_with(words, ONE_PASS_POSTINGS, MAX_ROOM_QUERIES)
    }

    fn room_text_with(
        &self,
        words: &str,
        one_pass_postings: u64,
        max_room_queries: usize,
    ) -> Result<Arc<dyn RoomText>> {
        let searcher = self.live().reader.searcher();
        let words = Words::of(words);
        let text = self.fields.text;
        let clauses = |lead| words.clauses(&searcher, text, lead).map(BooleanQuery::new);
        let (Some(pass), Some(each)) = (clauses(Lead::Words), clauses(Lead::Scope)) else {
            return Ok(Arc::new(Rooms::Known(HashSet::new())));
        };
        let mut postings = 0;
        pass.query_terms(&mut |term, _| {
            postings += searcher.doc_freq(term).unwrap_or(u64::MAX / 64);
        });
        if postings <= one_pass_postings {
            return Ok(Arc::new(Rooms::Known(all_rooms(&searcher, &pass)?)));
        }
        Ok(Arc::new(Rooms::InBatches(InBatches {
            searcher,
            room_id: self.fields.room_id,
            pass,
            each,
            asked: AtomicUsize::new(0),
            max_room_queries,
            all: OnceLock::new(),
        })))
    }
}

/// The rooms matching, or how to ask.
enum Rooms {
    Known(HashSet<String>),
    InBatches(InBatches),
}

struct InBatches {
    searcher: Searcher,
    room_id: Field,
    /// The words, for the pass over every room.
    pass: BooleanQuery,
    /// The words, to follow a batch of rooms' documents.
    each: BooleanQuery,
    asked: AtomicUsize,
    max_room_queries: usize,
    /// The pass's answer, once taken.
    all: OnceLock<HashSet<String>>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rooms::Known(rooms) => write!(f, "Rooms::Known({} rooms)", rooms.len()),
            Rooms::InBatches(b) => write!(f, "Rooms::InBatches({:?} asked)", b.asked),
        }
    }
}

impl RoomText for Rooms {
    fn may_match(&self, room: &RoomId) -> bool {
        match self {
            Rooms::Known(rooms) => rooms.contains(room.as_str()),
            Rooms::InBatches(b) => b.all.get().is_none_or(|all| all.contains(room.as_str())),
        }
    }

    fn matching(&self, rooms: &[&RoomId]) -> Result<Vec<bool>> {
        let among =
            |found: &HashSet<String>| rooms.iter().map(|r| found.contains(r.as_str())).collect();
        let b = match self {
            Rooms::Known(found) => return Ok(among(found)),
            Rooms::InBatches(b) => b,
        };
        if let Some(all) = b.all.get() {
            return Ok(among(all));
        }
        if b.asked.fetch_add(rooms.len(), Ordering::Relaxed) >= b.max_room_queries {
            let all = all_rooms(&b.searcher, &b.pass)?;
            return Ok(among(b.all.get_or_init(|| all)));
        }
        Ok(among(&b.among(rooms)?))
    }
}

impl InBatches {
    /// Those of `rooms` with a live document matching the words.
    fn among(&self, rooms: &[&RoomId]) -> Result<HashSet<String>> {
        let terms = rooms
            .iter()
            .map(|r| Term::from_field_text(self.room_id, r.as_str()));
        let query = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermsFilter::new(terms.collect())) as Box<dyn Query>,
            ),
            (Occur::Must, Box::new(self.each.clone())),
        ]);
        all_rooms(&self.searcher, &query)
    }
}

/// Every room with a document `query` matches (at most [`MAX_ROOMS`]).
fn all_rooms(searcher: &Searcher, query: &dyn Query) -> Result<HashSet<String>> {
    searcher
        .search(query, &RoomsCollector)
        .map_err(|e| internal("cannot query the index", e))
}

/// Collects the distinct rooms of the matching documents, from the `room_id` column: a bit per
/// term of the segment's dictionary, so a common word's many hits cost a bit each.
struct RoomsCollector;

struct SegmentRooms {
    column: Option<StrColumn>,
    seen: Vec<u64>,
}

impl Collector for RoomsCollector {
    type Fruit = HashSet<String>;
    type Child = SegmentRooms;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentRooms> {
        let column = segment.fast_fields().str("room_id")?;
        let terms = column.as_ref().map_or(0, |c| c.num_terms());
        Ok(SegmentRooms {
            column,
            seen: vec![0; terms.div_ceil(64)],
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
        if let Some(column) = &self.column {
            for ord in column.term_ords(doc) {
                if let Some(word) = self.seen.get_mut((ord / 64) as usize) {
                    *word |= 1 << (ord % 64);
                }
            }
        }
    }

    fn harvest(self) -> HashSet<String> {
        let Some(column) = self.column else {
            return HashSet::new();
        };
        // One pass over the dictionary, in ordinal order: a lookup per ordinal would decode
        // its block from the start each time.
        let mut rooms = HashSet::new();
        let Ok(mut terms) = column.dictionary().stream() else {
            return rooms;
        };
        while rooms.len() < MAX_ROOMS && terms.advance() {
            let ord = terms.term_ord();
            let seen = self
                .seen
                .get((ord / 64) as usize)
                .is_some_and(|word| word & (1 << (ord % 64)) != 0);
            if seen && let Ok(room) = std::str::from_utf8(terms.key()) {
                rooms.insert(room.to_owned());
            }
        }
        rooms
    }
}

#[cfg(test)]
mod tests {
    use ruma::room_id;

    use super::*;
    use crate::search::fixture;

    #[test]
    fn room_by_room_and_in_one_pass_the_same_rooms_match() {
        let dir = tempfile::tempdir().unwrap();
        let docs = [
            ("!a:x", "hola, mi pedido no llega"),
            ("!b:x", "the battery is broken"),
            ("!c:x", "HOLA otra vez"),
            ("!a:x", "gracias"),
            ("!d:x", "nada que ver"),
        ];
        let search = fixture::service(dir.path(), &docs, 2);
        let rooms = [
            room_id!("!a:x"),
            room_id!("!b:x"),
            room_id!("!c:x"),
            room_id!("!d:x"),
            room_id!("!e:x"),
        ];
        let answers = |text: &Arc<dyn RoomText>| -> Vec<bool> {
            // Asked in two batches, so that the third setting takes the pass for the second.
            let mut answers = text.matching(&rooms[..2]).unwrap();
            answers.extend(text.matching(&rooms[2..]).unwrap());
            answers
        };
        for (words, want) in [
            ("hola", [true, false, true, false, false]),
            ("hola pedido", [true, false, false, false, false]),
            ("bat", [false, true, false, false, false]),
            ("hola -pedido", [false, false, true, false, false]),
            ("zzz", [false; 5]),
        ] {
            // In one pass, in batches, and in a batch until the next asks for the pass.
            for (one_pass, max_queries) in [(u64::MAX, 0), (0, usize::MAX), (0, 2)] {
                let text = search.room_text_with(words, one_pass, max_queries).unwrap();
                assert_eq!(answers(&text), want, "{words} {one_pass} {max_queries}");
                // What may match before a record is read never leaves a match out.
                for (room, wanted) in rooms.iter().zip(want) {
                    assert!(text.may_match(room) || !wanted, "{words} {room}");
                }
            }
        }
    }
}
