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

use std::{future::Future, sync::Arc};

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

/// Whether any appservice has a URL to push to.
pub fn any_to_push(appservices: &AppServices) -> bool {
    appservices.all().iter().any(|asv| has_url(asv))
}

/// Runs one pusher per appservice with a URL until the server stops. Blocks: call it on a
/// thread of its own, which becomes the senders' thread.
pub fn run_pushers(p: &Pushers<'_>) {
    let pushers: Vec<(&Arc<AppService>, Shared)> = p
        .appservices
        .all()
        .iter()
        .filter(|asv| has_url(asv))
        .filter_map(|asv| match state::load(p.store, asv) {
            Ok(stored) => Some((asv, Shared::new(stored))),
            Err(e) => {
                tracing::error!(appservice = asv.id(), error = %e, "appservice pusher stopped");
                None
            }
        })
        .collect();
    std::thread::scope(|scope| {
        for (asv, shared) in &pushers {
            let preparer = std::thread::Builder::new()
                .name("charla-as-prepare".into())
                .spawn_scoped(scope, move || on_own_runtime(prepare::run(p, asv, shared)));
            if let Err(e) = preparer {
                tracing::error!(appservice = asv.id(), error = %e, "cannot start the appservice pusher");
            }
        }
        on_own_runtime(futures_util::future::join_all(
            pushers
                .iter()
                .map(|(asv, shared)| send::run(p, asv, shared)),
        ));
    });
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
