//! The search indexer: the stream consumer that keeps the index up to date.
//!
//! Documents go into tantivy's writer as events are handed over; they become searchable when
//! the writer commits. That commit is the consumer's cursor save ([`IndexCursor`]): it carries
//! the stream position as its payload, so the index and the position it covers reach the disk
//! together. The consumer saves at most every [`COMMIT_INTERVAL`], which bounds how far search
//! trails the stream, and a busy stream costs one commit per interval, not one per event.
//!
//! After a crash the consumer starts again from the last commit's position: the events after it
//! are indexed again, and since a document replaces its event's (by position), nothing doubles.
//!
//! A rebuild (`reindex.rs`) hands over a new generation; the indexer brings it up to where it
//! is itself (the few events of the last moments), commits it, and switches to it.

use std::{sync::Arc, time::Duration};

use parking_lot::Mutex;
use ruma::{EventId, RoomId};
use tantivy::{IndexWriter, collector::TopDocs, query::TermQuery, schema::IndexRecordOption};

use super::{
    Fields, Generation, SearchService, SearchServices,
    document::{Change, Doc, Key, change_of, new_body, pos_term},
    internal,
};
use crate::{
    error::Result,
    rooms::{Loaded, RoomService},
    stream::{Commit, Consumer, Cursor, Handler, Notifier, Stream},
    support::{Desk, trust},
};

const NAME: &str = "search indexer";
/// How often the index commits while events come in: search trails the stream by about this
/// plus one commit.
const COMMIT_INTERVAL: Duration = Duration::from_millis(250);
/// Indexing threads of the live writer: it indexes what comes in, a few documents at a time.
const LIVE_THREADS: usize = 1;
/// Most messages indexed under one edit that a redaction looks for (one, unless an edit was
/// indexed twice before a commit merged the copies away).
const MOST_EDITED: usize = 16;

/// What the indexer uses.
#[derive(Clone, Copy)]
pub(crate) struct IndexerView<'a> {
    pub(crate) search: &'a SearchService,
    pub(crate) rooms: &'a RoomService,
    /// Whose changes to a conversation count (`support::trust`).
    pub(crate) desk: Desk<'a>,
    pub(crate) stream: &'a Stream,
    pub(crate) notifier: &'a Notifier,
}

/// The live writer and the generation it writes, shared by the handler (which adds documents)
/// and the cursor (which commits them).
pub(crate) struct Sink {
    inner: Mutex<Live>,
}

struct Live {
    generation: Arc<Generation>,
    writer: IndexWriter,
}

impl Sink {
    pub(crate) fn open(search: &SearchService) -> Result<Arc<Sink>> {
        let generation = search.live();
        let writer = search.writer(&generation, LIVE_THREADS)?;
        Ok(Arc::new(Sink {
            inner: Mutex::new(Live { generation, writer }),
        }))
    }

    /// Commits what was added, with `pos` as the position it covers, and lets queries see it.
    async fn commit(self: &Arc<Self>, pos: u64) -> Result<()> {
        let sink = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut live = sink.inner.lock();
            commit_at(&mut live.writer, pos)?;
            live.generation.reload(pos)
        })
        .await
        .map_err(|e| internal("the commit's task failed", e))?
    }
}

/// Commits `writer` with `pos` as its payload.
pub(super) fn commit_at(writer: &mut IndexWriter, pos: u64) -> Result<()> {
    let mut prepared = writer
        .prepare_commit()
        .map_err(|e| internal("cannot commit the index", e))?;
    prepared.set_payload(&pos.to_string());
    prepared
        .commit()
        .map(|_| ())
        .map_err(|e| internal("cannot commit the index", e))
}

/// The indexer's position: the payload of the live generation's last commit.
struct IndexCursor(Arc<Sink>);

impl Cursor for IndexCursor {
    fn load(&self) -> Result<Option<u64>> {
        // A new index starts from the beginning of the stream: everything already stored is
        // indexed, not only what comes after.
        self.0.inner.lock().generation.committed_pos().map(Some)
    }

    async fn save(&self, pos: u64, _durable: bool) -> Result<()> {
        // A commit is always durable.
        self.0.commit(pos).await
    }
}

fn consumer<'a>(v: &IndexerView<'a>, sink: &Arc<Sink>) -> Consumer<'a, IndexCursor> {
    Consumer::new(NAME, v.stream, v.notifier, IndexCursor(sink.clone()))
        .save_interval(COMMIT_INTERVAL)
}

/// Opens the writer and fixes the indexer's starting position; returns the task to run it,
/// none when search is off (the cursor stays where it is, so turning search on again indexes
/// what came meanwhile). Call before the server serves, so that no event committed after it
/// started is missed.
pub(crate) async fn start(
    services: Arc<dyn SearchServices>,
) -> Result<Option<impl std::future::Future<Output = ()> + Send + 'static>> {
    let view = services.search_indexer();
    if !view.search.enabled() {
        return Ok(None);
    }
    let head = view.stream.head();
    if view.search.live().committed_pos()? > head {
        // An index ahead of the store covers another history: the store was restored from a
        // backup under an index kept elsewhere (`[search] path`). Start over from the store.
        tracing::warn!(
            head,
            "the search index is ahead of the store; rebuilding it"
        );
        view.search.start_over()?;
    }
    let sink = Sink::open(view.search)?;
    let from = consumer(&view, &sink).start().await?;
    Ok(Some(async move {
        let view = services.search_indexer();
        let indexer = Indexer {
            view,
            sink: &sink,
            services: services.clone(),
        };
        consumer(&view, &sink).run(from, view.rooms, indexer).await;
    }))
}

struct Indexer<'a> {
    view: IndexerView<'a>,
    sink: &'a Arc<Sink>,
    /// For the switch to a rebuilt generation, which runs on a blocking thread.
    services: Arc<dyn SearchServices>,
}

impl Handler for Indexer<'_> {
    type Event = Arc<Loaded>;

    async fn event(&mut self, pos: u64, event: Arc<Loaded>) -> Result<()> {
        let live = self.sink.inner.lock();
        Apply::new(&self.view, &live.writer, &live.generation).event(pos, &event)
    }

    async fn commit(&mut self, _upto: u64) -> Result<Commit> {
        // The cursor's save commits the writer: see the module documentation.
        Ok(Commit::Lazy)
    }

    fn wait(&mut self) -> impl std::future::Future<Output = ()> + Send {
        // Cancel-safe: a wake-up given while nobody waited is kept for the next wait.
        self.view.search.wake.notified()
    }

    async fn idle(&mut self, committed: u64) {
        let forgotten = self.view.search.take_forgotten();
        if !forgotten.is_empty() {
            {
                let live = self.sink.inner.lock();
                for room in &forgotten {
                    live.writer.delete_term(tantivy::Term::from_field_text(
                        self.view.search.fields.room_id,
                        room,
                    ));
                }
            }
            // Everything up to `committed` was added: the commit may say so.
            if let Err(e) = self.sink.commit(committed).await {
                tracing::error!(error = %e, "cannot remove deleted rooms from the search index");
            }
        }
        let Some(built) = self.view.search.reindex.take_built() else {
            return;
        };
        let services = self.services.clone();
        let sink = self.sink.clone();
        let switched = tokio::task::spawn_blocking(move || {
            switch(&services.search_indexer(), &sink, built, committed)
        });
        let outcome = match switched.await {
            Ok(outcome) => outcome,
            Err(e) => Err(internal("the switch's task failed", e)),
        };
        self.view.search.reindex.finished(outcome);
    }
}

/// Brings a rebuilt generation from where its build stopped up to `committed`, commits it and
/// makes it the live one, in place of the sink's.
fn switch(
    view: &IndexerView<'_>,
    sink: &Sink,
    built: super::reindex::Built,
    committed: u64,
) -> Result<u64> {
    let super::reindex::Built {
        generation,
        mut writer,
        upto,
    } = built;
    let mut at = upto;
    while at < committed {
        let events = view.rooms.events_in_range(at, committed, 1024)?;
        if events.is_empty() {
            break;
        }
        let apply = Apply::new(view, &writer, &generation);
        for (pos, event) in events {
            if let Err(e) = apply.event(pos, &event) {
                tracing::warn!(pos, error = %e, "event not indexed");
            }
            at = pos;
        }
    }
    let covered = committed.max(upto);
    commit_at(&mut writer, covered)?;
    generation.reload(covered)?;
    let generation = Arc::new(generation);
    let mut live = sink.inner.lock();
    let old = std::mem::replace(
        &mut *live,
        Live {
            generation: generation.clone(),
            writer,
        },
    );
    view.search.make_live(generation)?;
    drop(live);
    // The old writer's uncommitted documents are in the new generation too.
    drop(old);
    Ok(covered)
}

/// Applies changes to a writer, reading what they need from the store.
pub(super) struct Apply<'a> {
    rooms: &'a RoomService,
    desk: Desk<'a>,
    fields: Fields,
    writer: &'a IndexWriter,
    generation: &'a Generation,
}

impl<'a> Apply<'a> {
    pub(super) fn new(
        view: &IndexerView<'a>,
        writer: &'a IndexWriter,
        generation: &'a Generation,
    ) -> Self {
        Apply {
            rooms: view.rooms,
            desk: view.desk,
            fields: view.search.fields,
            writer,
            generation,
        }
    }

    pub(super) fn change(&self, change: Change) -> Result<()> {
        match change {
            Change::Put(doc) => self.put(&doc),
            Change::Refresh(id) => self.refresh(&id),
            Change::Redacted(id) => {
                if let Some(pos) = self.rooms.event_pos(&id)? {
                    self.writer.delete_term(pos_term(&self.fields, pos));
                }
                for edited in self.indexed_under_edit(&id)? {
                    self.refresh(&edited)?;
                }
                Ok(())
            }
            Change::Conversation(room, pos) => self.conversation(&room, pos),
        }
    }

    /// Adds `doc` in place of the one it replaces: its event's, or its conversation's.
    pub(super) fn put(&self, doc: &Doc) -> Result<()> {
        match doc.key {
            Key::Conversation => self.remove_conversation(&doc.room_id)?,
            _ => {
                self.writer.delete_term(pos_term(&self.fields, doc.pos));
            }
        }
        self.writer
            .add_document(doc.to_tantivy(&self.fields))
            .map(|_| ())
            .map_err(|e| internal("cannot add to the index", e))
    }

    /// Removes a room's conversation document.
    fn remove_conversation(&self, room_id: &str) -> Result<()> {
        let term = |field, value: &str| -> Box<dyn tantivy::query::Query> {
            Box::new(TermQuery::new(
                tantivy::Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let query = tantivy::query::BooleanQuery::new(vec![
            (
                tantivy::query::Occur::Must,
                term(self.fields.room_id, room_id),
            ),
            (
                tantivy::query::Occur::Must,
                term(self.fields.key, Key::Conversation.as_str()),
            ),
        ]);
        self.writer
            .delete_query(Box::new(query))
            .map(|_| ())
            .map_err(|e| internal("cannot remove from the index", e))
    }

    /// Indexes a message again, under its newest text (its latest valid edit, or its own).
    fn refresh(&self, event_id: &EventId) -> Result<()> {
        let Some(pos) = self.rooms.event_pos(event_id)? else {
            return Ok(());
        };
        let event = self.rooms.event(pos)?;
        match change_of(&event.pdu, pos) {
            Some(Change::Put(doc)) if doc.key == Key::Body => {
                self.put(&self.under_current_edit(&event, doc)?)
            }
            _ => {
                self.writer.delete_term(pos_term(&self.fields, pos));
                Ok(())
            }
        }
    }

    /// A message's document under its newest text: the latest valid edit's, if any (a lookup
    /// only for messages the relations index marked as having children).
    pub(super) fn under_current_edit(&self, event: &Loaded, doc: Doc) -> Result<Doc> {
        if let Some(edit) = self.rooms.current_edit(event)?
            && let Some(body) = new_body(&edit.pdu)
        {
            return Ok(doc.edited(edit.pdu.event_id.clone(), &body));
        }
        Ok(doc)
    }

    /// Applies what the event at `pos` changes. A message is indexed under its newest text:
    /// replayed after a crash, it may have been edited since.
    pub(super) fn event(&self, pos: u64, event: &Loaded) -> Result<()> {
        match change_of(&event.pdu, pos) {
            Some(Change::Put(doc)) if doc.key == Key::Body => {
                self.put(&self.under_current_edit(event, doc)?)
            }
            Some(change) => self.change(change),
            None => Ok(()),
        }
    }

    /// The messages indexed under the text of `edit`.
    fn indexed_under_edit(&self, edit: &EventId) -> Result<Vec<ruma::OwnedEventId>> {
        let searcher = self.generation.reader.searcher();
        let query = TermQuery::new(
            tantivy::Term::from_field_text(self.fields.edit, edit.as_str()),
            IndexRecordOption::Basic,
        );
        let top = TopDocs::with_limit(MOST_EDITED).order_by_u64_field("pos", tantivy::Order::Desc);
        let hits = searcher
            .search(&query, &top)
            .map_err(|e| internal("cannot query the index", e))?;
        let mut out = Vec::new();
        for pos in hits.into_iter().filter_map(|(pos, _)| pos) {
            out.push(self.rooms.event(pos)?.pdu.event_id.clone());
        }
        Ok(out)
    }

    /// Writes a conversation's document again from the room's state as the desk set it (its
    /// contact, labels, references): the event is read, not the desk's index, which the desk
    /// writes after the event and may not have yet.
    fn conversation(&self, room_id: &RoomId, pos: u64) -> Result<()> {
        let Some((c, _)) = trust::conversation(&self.desk, room_id)? else {
            return self.remove_conversation(room_id.as_str());
        };
        let contact = &c.contact;
        let text: Vec<&str> = [
            &contact.name,
            &contact.phone,
            &contact.id,
            &contact.organisation,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .chain(c.labels.iter().map(String::as_str))
        .chain(
            [&c.product_id, &c.order_id]
                .into_iter()
                .flatten()
                .map(String::as_str),
        )
        .collect();
        self.put(&Doc {
            room_id: room_id.to_string(),
            pos,
            sender: String::new(),
            kind: crate::support::CONVERSATION_EVENT.to_owned(),
            key: Key::Conversation,
            text: text.join(" "),
            edit: None,
            has_url: false,
        })
    }
}
