//! Full-text search over room events and support conversations, on tantivy.
//!
//! - What is indexed (`document.rs`): the text of `m.room.message` (`content.body`, under its
//!   newest edit), `m.room.name` and `m.room.topic`, the three keys of the Client-Server API,
//!   and one document per support conversation (its contact, labels and references). Encrypted
//!   events are not: the server never sees their text.
//! - How words match (`analyzer.rs`): case and accents do not matter, Spanish and English stems
//!   match each other's forms, e-mail addresses, order and phone numbers are whole tokens, CJK
//!   and emoji are kept.
//! - Who feeds it (`indexer.rs`): the project's one durable stream consumer. Its cursor is the
//!   index's own commit payload, so the index and the position it covers are written in one
//!   commit: a crash replays events into the index (a document replaces its event's, so nothing
//!   doubles), it never skips one.
//! - Who asks (`query.rs`): `/search` for Matrix clients, the support API for agents
//!   (`desk.rs`: the desk's conversations as each of its staff sees them). The asker's
//!   rooms and the stream ranges they may see go into the query itself, so that counts and pages
//!   are exact and nobody ever gets a hit they may not read.
//! - Rebuilding (`reindex.rs`): a new generation of the index is built from the store beside the
//!   live one, which keeps answering until the new one has caught up and replaces it.
//!
//! On disk: `<search path>/CURRENT` names the live generation, `<search path>/<n>/` holds it.
//! The index is derived data: a missing or unreadable one is rebuilt from the store.

pub(crate) mod analyzer;
pub(crate) mod desk;
mod docsets;
pub(crate) mod document;
pub(crate) mod indexer;
mod listing;
pub(crate) mod query;
pub(crate) mod reindex;
mod syntax;
mod terms;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::RwLock;
use tantivy::{
    Index, IndexReader, ReloadPolicy,
    schema::{
        FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
    },
};

use crate::{
    config::SearchConfig,
    error::{Error, Result},
};

pub(crate) use query::{Found, Hit, Order, PageKey, Scope, SearchRequest};

/// The index's fields. Built once per schema; every generation has the same.
#[derive(Clone, Copy)]
pub(crate) struct Fields {
    /// The room id: the asker's scope, and the groups of results.
    pub(crate) room_id: Field,
    /// The stream position: what identifies an event's document (a conversation's is its room
    /// and key), the recent order, the visible ranges, pages.
    pub(crate) pos: Field,
    pub(crate) sender: Field,
    /// The event type (`m.room.message`, …) for the filters' `types`.
    pub(crate) kind: Field,
    /// Which text it is: `content.body`, `content.name`, `content.topic` or `conversation`.
    pub(crate) key: Field,
    pub(crate) text: Field,
    /// The edit whose text a message is indexed under, so that redacting the edit can put the
    /// message's earlier text back.
    pub(crate) edit: Field,
    /// `true` for an event with a `url` in its content (files, images): the filters'
    /// `contains_url`.
    pub(crate) url: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut b = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer::TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            room_id: b.add_text_field("room_id", STRING | FAST),
            pos: b.add_u64_field("pos", INDEXED | FAST),
            sender: b.add_text_field("sender", STRING),
            kind: b.add_text_field("type", STRING),
            key: b.add_text_field("key", STRING),
            text: b.add_text_field("text", text),
            edit: b.add_text_field("edit", STRING),
            url: b.add_text_field("url", STRING),
        };
        (b.build(), fields)
    }
}

/// One generation of the index: what queries read.
pub(crate) struct Generation {
    pub(crate) number: u64,
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
    /// The stream position queries see up to: the last commit's, once the reader reloaded it.
    searchable: std::sync::atomic::AtomicU64,
}

impl Generation {
    /// Opens generation `number` under `root`, creating it empty if it is not there.
    fn open(root: &Path, number: u64) -> Result<Generation> {
        let dir = root.join(number.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| internal("cannot create the index folder", e))?;
        let (schema, _) = Fields::schema();
        let directory = tantivy::directory::MmapDirectory::open(&dir)
            .map_err(|e| internal("cannot open the index folder", e))?;
        let index = Index::open_or_create(directory, schema)
            .map_err(|e| internal("cannot open the index", e))?;
        analyzer::register(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| internal("cannot read the index", e))?;
        let generation = Generation {
            number,
            index,
            reader,
            searchable: 0.into(),
        };
        let committed = generation.committed_pos()?;
        generation
            .searchable
            .store(committed, std::sync::atomic::Ordering::Release);
        Ok(generation)
    }

    /// Lets queries see the last commit, which covers the stream up to `pos`.
    pub(crate) fn reload(&self, pos: u64) -> Result<()> {
        self.reader
            .reload()
            .map_err(|e| internal("cannot reload the index", e))?;
        self.searchable
            .store(pos, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The stream position queries see up to.
    pub(crate) fn searchable_pos(&self) -> u64 {
        self.searchable.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The stream position the last commit covers (`0` for a new index).
    pub(crate) fn committed_pos(&self) -> Result<u64> {
        let metas = self
            .index
            .load_metas()
            .map_err(|e| internal("cannot read the index's state", e))?;
        Ok(metas
            .payload
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0))
    }
}

/// What the indexer and rebuilds are given: a view of the services they use (`Services`
/// implements it), so that nothing here holds the whole server.
pub(crate) trait SearchServices: Send + Sync {
    fn search_indexer(&self) -> indexer::IndexerView<'_>;
}

/// Where the index stands (`GET /_charla/admin/v1/search`).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct IndexStatus {
    pub(crate) enabled: bool,
    pub(crate) generation: u64,
    /// The stream position the index covers: every event up to it is searchable.
    pub(crate) indexed_upto: u64,
    pub(crate) stream_head: u64,
    pub(crate) documents: u64,
    /// The live generation's files.
    pub(crate) size_bytes: u64,
    /// The rebuild in progress, or the last one since the server started.
    pub(crate) reindex: reindex::ReindexStatus,
}

/// The search service: the live generation and the rebuild in progress.
pub(crate) struct SearchService {
    root: PathBuf,
    enabled: bool,
    writer_memory: usize,
    pub(crate) fields: Fields,
    live: RwLock<Arc<Generation>>,
    pub(crate) reindex: reindex::Rebuilds,
    /// Deleted rooms whose documents the indexer is to remove.
    forgotten: parking_lot::Mutex<Vec<String>>,
    /// Wakes the indexer for work besides events: a deleted room, a finished rebuild.
    pub(crate) wake: tokio::sync::Notify,
}

const CURRENT: &str = "CURRENT";

impl SearchService {
    /// Opens the live generation (creating the first), and removes what an interrupted
    /// rebuild left behind.
    pub(crate) fn open(config: &SearchConfig, root: PathBuf) -> Result<SearchService> {
        std::fs::create_dir_all(&root)
            .map_err(|e| internal("cannot create the index folder", e))?;
        let number = match std::fs::read_to_string(root.join(CURRENT)) {
            Ok(s) => s.trim().parse().unwrap_or(1),
            Err(_) => 1,
        };
        let live = match Generation::open(&root, number) {
            Ok(live) => live,
            Err(e) => {
                // Derived data: start over from the store rather than refuse to start.
                tracing::error!(error = %e, "the search index cannot be opened; rebuilding it");
                let _ = std::fs::remove_dir_all(root.join(number.to_string()));
                Generation::open(&root, number)?
            }
        };
        remove_other_generations(&root, number);
        let (_, fields) = Fields::schema();
        Ok(SearchService {
            root,
            enabled: config.enabled,
            writer_memory: config.writer_memory_mb << 20,
            fields,
            live: RwLock::new(Arc::new(live)),
            reindex: reindex::Rebuilds::default(),
            forgotten: parking_lot::Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// `400` when search is off (`[search] enabled = false`), in Synapse's words.
    pub(crate) fn require_enabled(&self) -> Result<()> {
        match self.enabled {
            true => Ok(()),
            false => Err(Error::unknown("Search is disabled on this homeserver")),
        }
    }

    /// Where the index stands, against the stream's `head`.
    pub(crate) fn status(&self, head: u64) -> Result<IndexStatus> {
        let live = self.live();
        Ok(IndexStatus {
            enabled: self.enabled,
            generation: live.number,
            indexed_upto: live.searchable_pos(),
            stream_head: head,
            documents: live.reader.searcher().num_docs(),
            size_bytes: folder_size(&self.root.join(live.number.to_string())),
            reindex: self.reindex.status(),
        })
    }

    /// Removes a deleted room's documents (soon: the indexer does it and commits). Its events
    /// were rewritten without their text, so a rebuild does not bring them back, and until then
    /// searches skip them.
    pub(crate) fn forget_room(&self, room_id: &ruma::RoomId) {
        self.forgotten.lock().push(room_id.to_string());
        self.wake.notify_one();
    }

    pub(crate) fn take_forgotten(&self) -> Vec<String> {
        std::mem::take(&mut *self.forgotten.lock())
    }

    /// The generation queries read now.
    pub(crate) fn live(&self) -> Arc<Generation> {
        self.live.read().clone()
    }

    /// A writer on `generation`, with the configured memory and `threads` indexing threads.
    pub(crate) fn writer(
        &self,
        generation: &Generation,
        threads: usize,
    ) -> Result<tantivy::IndexWriter> {
        generation
            .index
            .writer_with_num_threads(threads, self.writer_memory.max(15 << 20) * threads)
            .map_err(|e| internal("cannot write the index", e))
    }

    /// A new, empty generation beside the live one, for a rebuild.
    fn next_generation(&self) -> Result<Generation> {
        let number = self.live().number + 1;
        let _ = std::fs::remove_dir_all(self.root.join(number.to_string()));
        Generation::open(&self.root, number)
    }

    /// Replaces the live generation with an empty one (before the indexer starts).
    fn start_over(&self) -> Result<()> {
        let empty = self.next_generation()?;
        self.make_live(Arc::new(empty))
    }

    /// Makes `generation` the live one, durably (`CURRENT` is replaced atomically), and removes
    /// the old one's files.
    fn make_live(&self, generation: Arc<Generation>) -> Result<()> {
        let tmp = self.root.join("CURRENT.tmp");
        std::fs::write(&tmp, generation.number.to_string())
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, self.root.join(CURRENT)))
            .and_then(|()| std::fs::File::open(&self.root)?.sync_all())
            .map_err(|e| internal("cannot switch the index", e))?;
        let number = generation.number;
        let old = std::mem::replace(&mut *self.live.write(), generation);
        drop(old);
        remove_other_generations(&self.root, number);
        Ok(())
    }
}

/// Removes every generation folder but `keep` (an interrupted rebuild's, a replaced one's).
/// Readers still holding an old generation keep its files open: their mappings stay valid.
fn remove_other_generations(root: &Path, keep: u64) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if n != keep
            && entry.path().is_dir()
            && let Err(e) = std::fs::remove_dir_all(entry.path())
        {
            tracing::warn!(error = %e, generation = n, "cannot remove an old search index");
        }
    }
}

/// The bytes of the files in `dir` (an index generation holds no subfolders).
fn folder_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("search: {what}: {e}"))
}

/// A search service over a crafted corpus, for the tests of the queries.
#[cfg(test)]
pub(crate) mod fixture {
    use std::path::Path;

    use tantivy::{TantivyDocument, indexer::NoMergePolicy};

    use super::{SearchService, document::Key};
    use crate::config::SearchConfig;

    /// A service in `dir` holding `docs` (room, message) at positions 1, 2, …, written in
    /// `segments` commits of equal share (so in as many segments), the oldest first.
    pub(crate) fn service(dir: &Path, docs: &[(&str, &str)], segments: usize) -> SearchService {
        let search = SearchService::open(&SearchConfig::default(), dir.to_owned()).unwrap();
        let live = search.live();
        let mut writer = search.writer(&live, 1).unwrap();
        writer.set_merge_policy(Box::new(NoMergePolicy));
        let f = search.fields;
        let share = docs.len().div_ceil(segments.max(1));
        for (i, (room, text)) in docs.iter().enumerate() {
            let mut doc = TantivyDocument::new();
            doc.add_text(f.room_id, room);
            doc.add_u64(f.pos, i as u64 + 1);
            doc.add_text(f.kind, "m.room.message");
            doc.add_text(f.key, Key::Body.as_str());
            doc.add_text(f.sender, "@someone:x");
            doc.add_text(f.text, text);
            writer.add_document(doc).unwrap();
            if (i + 1) % share == 0 {
                writer.commit().unwrap();
            }
        }
        writer.commit().unwrap();
        live.reload(docs.len() as u64).unwrap();
        search
    }
}
