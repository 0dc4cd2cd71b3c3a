//! The transaction pusher: one per appservice, pushing the events it is interested in, in
//! stream order, at most 100 per transaction, one transaction in flight.
//!
//! Its state is durable (`state.rs`): a cursor (the stream position the appservice
//! acknowledged) and the queue of prepared transactions (id, upper position, exact body). A
//! transaction is on disk before it is first sent, so a retry, after a failure or a restart,
//! sends the same txnId with the same content; the cursor moves only once the appservice
//! acknowledged it. Nothing is lost, nothing duplicated.
//!
//! Two halves run side by side: the *preparer* (`prepare.rs`, a [`crate::stream::Consumer`])
//! collects the next transaction and waits for it to be durable while the *sender*
//! (`send.rs`) has the previous one in flight, so the flush and the round trip overlap instead
//! of adding up. At most [`QUEUE_DEPTH`] transactions are prepared ahead: an appservice that is
//! down leaves its backlog in the stream, not in the queue.
//!
//! They run on threads of their own: under load the client API keeps the main runtime's queues
//! full, and a pusher waiting behind hundreds of request tasks at every step (flush, send,
//! answer) would add tens of milliseconds of lag to each transaction. The senders of all
//! appservices share the caller's thread; each preparer has one, since reading and formatting
//! the stream is most of a pusher's CPU and overlaps there with its sender.

mod prepare;
mod send;
mod state;

use std::{collections::HashMap, future::Future, sync::Arc};

use futures_util::stream::{FuturesUnordered, StreamExt};
use state::Shared;

use super::{AppService, AppServices, outbound};
use crate::{rooms::RoomService, storage::Store, stream::Notifier, stream::Stream};

/// Transactions prepared ahead: the one in flight and the next.
const QUEUE_DEPTH: usize = 2;

/// What the pushers use of the server (`Services::appservice_pushers`).
pub struct Pushers<'a> {
    pub appservices: &'a AppServices,
    pub rooms: &'a RoomService,
    pub store: &'a Store,
    pub stream: &'a Stream,
    pub notifier: &'a Notifier,
}

/// One appservice's backlog, for operators (`/metrics`).
pub struct QueueDepth {
    pub appservice: String,
    /// Stream positions after the acknowledged cursor: what the appservice has yet to receive
    /// (or is of no interest to it; the pusher skips those without a transaction).
    pub behind: u64,
    /// Transactions prepared and not yet acknowledged (at most [`QUEUE_DEPTH`]).
    pub transactions: u64,
}

/// The backlog of each appservice with a URL to push to, from its durable state: a read per
/// appservice, for a scrape rather than a request path. An appservice whose pusher never ran
/// (or whose state cannot be read: the pusher logs that) is left out.
pub fn queue_depths(appservices: &AppServices, store: &Store, head: u64) -> Vec<QueueDepth> {
    appservices
        .all()
        .iter()
        .filter(|asv| has_url(asv))
        .filter_map(|asv| {
            let state = state::record(store, asv).ok().flatten()?;
            Some(QueueDepth {
                appservice: asv.id().to_owned(),
                behind: head.saturating_sub(state.cursor),
                transactions: state.pending.len() as u64,
            })
        })
        .collect()
}

/// Runs one pusher per appservice with a URL until the server stops, starting one for each
/// appservice registered meanwhile and stopping the pusher of one unregistered. Blocks: call
/// it on a thread of its own, which becomes the senders' thread.
pub fn run_pushers(p: &Pushers<'_>) {
    std::thread::scope(|scope| on_own_runtime(supervise(p, scope)));
}

/// Keeps a pusher running for each registered appservice with a URL. A registration seen again
/// under an id whose earlier pusher is still stopping waits for it: they share the id's state.
async fn supervise<'scope>(p: &'scope Pushers<'_>, scope: &'scope std::thread::Scope<'scope, '_>) {
    let mut changes = p.appservices.watch();
    // By id: the appservice and whether its pusher ended. One that ended without being
    // unregistered (its state would not load) is not started again.
    let mut running: HashMap<String, (Arc<AppService>, bool)> = HashMap::new();
    let mut pushers = FuturesUnordered::new();
    loop {
        changes.borrow_and_update();
        running.retain(|_, (asv, ended)| !(*ended && asv.is_retired()));
        for asv in p.appservices.all().iter().filter(|asv| has_url(asv)) {
            if !running.contains_key(asv.id()) {
                running.insert(asv.id().to_owned(), (asv.clone(), false));
                pushers.push(pusher(p, scope, asv.clone()));
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            Some(id) = pushers.next() => {
                if let Some((_, ended)) = running.get_mut(&id) {
                    *ended = true;
                }
            }
            () = p.notifier.stopped() => {
                // Each pusher returns on its own: wait for them to leave their state saved.
                while pushers.next().await.is_some() {}
                return;
            }
        }
    }
}

/// One appservice's pusher, until the server stops or the appservice is unregistered (then its
/// state goes with it). The preparer runs on a thread of its own, the sender here. Returns the
/// appservice's id.
async fn pusher<'scope>(
    p: &'scope Pushers<'_>,
    scope: &'scope std::thread::Scope<'scope, '_>,
    asv: Arc<AppService>,
) -> String {
    let id = asv.id().to_owned();
    let shared = match state::load(p.store, &asv) {
        Ok(stored) => Arc::new(Shared::new(stored)),
        Err(e) => {
            tracing::error!(appservice = id, error = %e, "appservice pusher stopped");
            return id;
        }
    };
    let (done, preparer_done) = tokio::sync::oneshot::channel::<()>();
    let (prepare_asv, prepare_shared) = (asv.clone(), shared.clone());
    let preparer = std::thread::Builder::new()
        .name("charla-as-prepare".into())
        .spawn_scoped(scope, move || {
            on_own_runtime(until_retired(
                &prepare_asv,
                prepare::run(p, &prepare_asv, &prepare_shared),
            ));
            let _ = done.send(());
        });
    if let Err(e) = preparer {
        tracing::error!(appservice = id, error = %e, "cannot start the appservice pusher");
        return id;
    }
    until_retired(&asv, send::run(p, &asv, &shared)).await;
    let _ = preparer_done.await;
    if asv.is_retired() {
        // What it wrote while stopping goes too, unless the id was registered again (that
        // registration wrote its own fresh state): decided under the registrations' lock.
        let _no_change = p.appservices.changing.lock().await;
        if p.appservices.by_id(&id).is_none()
            && let Err(e) = forget(p.store, &id).await
        {
            tracing::error!(appservice = id, error = %e, "cannot drop an unregistered appservice's state");
        }
    }
    id
}

/// Runs `work` until it ends or the appservice is unregistered.
async fn until_retired(asv: &AppService, work: impl Future<Output = ()>) {
    tokio::select! {
        () = work => {}
        () = asv.retired() => {}
    }
}

/// Drops an appservice's pusher state (its cursor and prepared transactions) durably.
async fn forget(store: &Store, id: &str) -> crate::error::Result<()> {
    let mut batch = crate::storage::Batch::new();
    drop_state(store, id, &mut batch)?;
    store.write_durable(batch).await?;
    Ok(())
}

/// Adds to `batch` the deletion of an unregistered appservice's pusher state.
pub(super) fn drop_state(
    store: &Store,
    id: &str,
    batch: &mut crate::storage::Batch,
) -> crate::error::Result<()> {
    state::forget(store, id, batch)
}

/// Adds to `batch` the pusher state of a newly registered appservice: it is sent the events
/// after stream position `from`, not an earlier appservice's backlog under the same id.
pub(super) fn start_state(
    store: &Store,
    id: &str,
    from: u64,
    batch: &mut crate::storage::Batch,
) -> crate::error::Result<()> {
    state::fresh(store, id, from, batch)
}

fn has_url(asv: &AppService) -> bool {
    outbound::endpoint(asv, "transactions").is_some()
}

/// Runs `work` to its end on a runtime of this thread.
fn on_own_runtime<F: Future>(work: F) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            runtime.block_on(work);
        }
        Err(e) => tracing::error!(error = %e, "cannot start the appservice pushers' runtime"),
    }
}
