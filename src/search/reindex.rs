//! Rebuilding the index from the store (`charla admin reindex`).
//!
//! A rebuild writes a new generation beside the live one, from every event of the stream up to
//! the head when it started, as the store holds them now: redacted events are already without
//! text, and each message is indexed under its newest edit, so edits and redactions need no
//! replay. The live generation keeps answering meanwhile. When the build is done it is handed
//! to the indexer, which adds the events of the last moments, commits, and switches
//! (`indexer.rs`): queries move to the new generation at once, and the old one's files go.
//!
//! One rebuild at a time; its progress is kept for `GET /_charla/admin/v1/search/reindex`.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use ruma::OwnedRoomId;
use serde::Serialize;
use tantivy::IndexWriter;

use super::{
    Generation, SearchService, SearchServices,
    document::{Change, Key, change_of},
    indexer::{Apply, IndexerView, commit_at},
};
use crate::error::{Error, Result};

/// Events read from the store at once.
const CHUNK: usize = 4096;

/// Where a rebuild stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReindexState {
    /// None ran since the server started.
    #[default]
    Idle,
    /// Reading the store into the new generation.
    Building,
    /// Built; the indexer is bringing it up to date and switching to it.
    Switching,
    Done,
    Failed,
}

/// A rebuild's progress, as the admin API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ReindexStatus {
    pub(crate) state: ReindexState,
    /// Stream positions read so far, of `total`.
    pub(crate) done: u64,
    /// The stream's head when the rebuild started.
    pub(crate) total: u64,
    /// Documents written into the new generation.
    pub(crate) documents: u64,
    pub(crate) generation: u64,
    pub(crate) started_ms: Option<u64>,
    pub(crate) finished_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// A finished build, waiting for the indexer to switch to it.
pub(crate) struct Built {
    pub(super) generation: Generation,
    pub(super) writer: IndexWriter,
    /// The stream position it covers.
    pub(super) upto: u64,
}

/// The rebuild in progress and the last one's outcome.
#[derive(Default)]
pub(crate) struct Rebuilds {
    status: Mutex<ReindexStatus>,
    built: Mutex<Option<Built>>,
}

impl Rebuilds {
    pub(crate) fn status(&self) -> ReindexStatus {
        self.status.lock().clone()
    }

    pub(super) fn take_built(&self) -> Option<Built> {
        self.built.lock().take()
    }

    /// The indexer switched (to the position given) or could not.
    pub(super) fn finished(&self, outcome: Result<u64>) {
        let mut status = self.status.lock();
        status.finished_ms = Some(now_ms());
        match outcome {
            Ok(upto) => {
                status.state = ReindexState::Done;
                status.done = upto;
                tracing::info!(documents = status.documents, upto, "search index rebuilt");
            }
            Err(e) => {
                status.state = ReindexState::Failed;
                status.error = Some(e.to_string());
                tracing::error!(error = %e, "the rebuilt search index could not be switched to");
            }
        }
    }

    fn fail(&self, e: &Error) {
        let mut status = self.status.lock();
        status.state = ReindexState::Failed;
        status.error = Some(e.to_string());
        status.finished_ms = Some(now_ms());
        tracing::error!(error = %e, "rebuilding the search index failed");
    }
}

/// Starts a rebuild in the background; a conflict (409) while one is running.
pub(crate) fn start(services: Arc<dyn SearchServices>) -> Result<ReindexStatus> {
    let view = services.search_indexer();
    // The indexer switches to the new generation; without it nothing would.
    view.search.require_enabled()?;
    let total = view.stream.head();
    {
        let mut status = view.search.reindex.status.lock();
        if matches!(
            status.state,
            ReindexState::Building | ReindexState::Switching
        ) {
            return Err(Error::Matrix {
                status: http::StatusCode::CONFLICT,
                errcode: "M_UNKNOWN",
                message: "A rebuild of the search index is already running".into(),
                extra: None,
            });
        }
        *status = ReindexStatus {
            state: ReindexState::Building,
            total,
            generation: view.search.live().number + 1,
            started_ms: Some(now_ms()),
            ..ReindexStatus::default()
        };
    }
    let status = view.search.reindex.status();
    tokio::task::spawn_blocking(move || {
        let view = services.search_indexer();
        match build(&view, total) {
            Ok(built) => {
                let rebuilds = &view.search.reindex;
                rebuilds.status.lock().state = ReindexState::Switching;
                *rebuilds.built.lock() = Some(built);
                view.search.wake.notify_one();
            }
            Err(e) => view.search.reindex.fail(&e),
        }
    });
    Ok(status)
}

/// Builds a new generation from the events in `(0, upto]`.
fn build(view: &IndexerView<'_>, upto: u64) -> Result<Built> {
    let search: &SearchService = view.search;
    let generation = search.next_generation()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let mut writer = search.writer(&generation, threads)?;
    // No merging while the build writes: it would merge the same documents again and again.
    // The segments are merged once it is live (the default policy again, below).
    writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
    let mut conversations: HashMap<OwnedRoomId, u64> = HashMap::new();
    let mut at = 0;
    let mut documents = 0;
    {
        let apply = Apply::new(view, &writer, &generation);
        while at < upto {
            let events = view.rooms.events_in_range(at, upto, CHUNK)?;
            let Some(&(last, _)) = events.last() else {
                break;
            };
            for (pos, event) in events {
                match change_of(&event.pdu, pos) {
                    Some(Change::Put(doc)) if doc.key == Key::Body => {
                        apply.put(&apply.under_current_edit(&event, doc)?)?;
                        documents += 1;
                    }
                    Some(Change::Put(doc)) => {
                        apply.put(&doc)?;
                        documents += 1;
                    }
                    Some(Change::Conversation(room, pos)) => {
                        conversations.insert(room, pos);
                    }
                    // The store already shows edits and redactions.
                    Some(Change::Refresh(_) | Change::Redacted(_)) | None => {}
                }
            }
            at = last;
            let mut status = search.reindex.status.lock();
            status.done = at;
            status.documents = documents;
        }
        for (room, pos) in conversations {
            apply.change(Change::Conversation(room, pos))?;
            documents += 1;
        }
    }
    commit_at(&mut writer, upto)?;
    writer.set_merge_policy(Box::new(tantivy::indexer::LogMergePolicy::default()));
    search.reindex.status.lock().documents = documents;
    generation.reload(upto)?;
    Ok(Built {
        generation,
        writer,
        upto,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
