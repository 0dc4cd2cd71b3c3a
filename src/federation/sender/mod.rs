//! The federation sender: this server's events and ephemeral events to the other servers in
//! its rooms, as transactions (`PUT /_matrix/federation/v1/send/{txnId}`).
//!
//! - **Queueing** (`enqueue.rs`) is a [`crate::stream::Consumer`]: for each event this server
//!   created, it queues the event's position for every other server in the room
//!   (`queue.rs`), durably and in the same batch as its cursor, so nothing acknowledged to a
//!   client is lost for a peer and nothing is queued twice. Typing notices and read receipts
//!   of local users come from the notifier's ephemeral events into a bounded in-memory buffer
//!   per destination: ephemeral, as everywhere else.
//! - **Delivery** (this module): one worker per destination sends its queue in order, at most
//!   50 PDUs and 100 EDUs a transaction, one transaction in flight. A failed transaction is
//!   sent again *unchanged* (same id, same content: a peer that already handled it answers
//!   from its cache) after a backoff that doubles up to [`MAX_BACKOFF`], or at once when the
//!   destination contacts this server (it is back). PDUs leave the queue once acknowledged.
//!
//! One slow or unreachable destination holds only its own worker.

mod edus;
mod enqueue;
mod peers;
mod queue;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::http::Method;
use parking_lot::Mutex;
use ruma::{OwnedServerName, ServerName};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::{Federation, MAX_EDUS, MAX_PDUS};
use crate::{
    error::Result,
    rooms::RoomService,
    storage::Store,
    stream::{Backoff, Notifier, Stream},
};

pub(crate) use enqueue::start;

/// Ephemeral events kept per destination while it is unreachable; older ones are dropped.
const MAX_BUFFERED_EDUS: usize = 1_000;
/// The longest wait between attempts: a peer back from an outage gets its backlog within
/// this, or at once if it contacts this server first (as a restarted Charla does: `peers.rs`).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the sender uses of the server.
pub(crate) struct SenderView<'a> {
    pub(crate) federation: &'a Federation,
    pub(crate) rooms: &'a RoomService,
    pub(crate) store: &'a Store,
    pub(crate) stream: &'a Stream,
    pub(crate) notifier: &'a Notifier,
}

/// The destinations' shared state: how the queueing wakes a worker, and how an inbound request
/// from a destination tells its worker to stop waiting.
pub(crate) struct Outbox {
    slots: Mutex<HashMap<OwnedServerName, Arc<Slot>>>,
    /// New destinations, for the task that starts their workers.
    new: mpsc::UnboundedSender<NewDestination>,
    starting: Mutex<Option<mpsc::UnboundedReceiver<NewDestination>>>,
    /// Transaction ids: this process's start time and a counter, unique across restarts.
    boot_ms: u64,
    next_txn: AtomicU64,
    /// Lasting EDUs' sequences: from the start time in microseconds' worth of room, so that
    /// they keep increasing across restarts.
    next_edu: AtomicU64,
}

/// A destination whose worker is to start, with its slot.
type NewDestination = (OwnedServerName, Arc<Slot>);

#[derive(Default)]
struct Slot {
    /// Something was queued.
    work: Notify,
    /// The destination contacted this server: retry now.
    contact: Notify,
    edus: Mutex<VecDeque<Value>>,
    /// An empty transaction is due, to tell the destination this server is back (`peers.rs`).
    announce: std::sync::atomic::AtomicBool,
    /// Recorded as a peer by this process already.
    recorded: std::sync::atomic::AtomicBool,
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        let (new, starting) = mpsc::unbounded_channel();
        Outbox {
            slots: Mutex::new(HashMap::new()),
            new,
            starting: Mutex::new(Some(starting)),
            boot_ms: u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get()),
            next_txn: AtomicU64::new(0),
            next_edu: AtomicU64::new(
                u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get()).saturating_mul(1_000),
            ),
        }
    }

    fn slot(&self, destination: &ServerName) -> Arc<Slot> {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get(destination) {
            return slot.clone();
        }
        let slot = Arc::new(Slot::default());
        slots.insert(destination.to_owned(), slot.clone());
        let _ = self.new.send((destination.to_owned(), slot.clone()));
        slot
    }

    /// Something was queued for `destination`.
    fn wake(&self, destination: &ServerName) {
        self.slot(destination).work.notify_one();
    }

    /// `destination` made an authenticated request: it is up, so a worker waiting out a
    /// backoff for it retries now.
    pub(crate) fn contacted(&self, destination: &ServerName) {
        if let Some(slot) = self.slots.lock().get(destination) {
            slot.contact.notify_one();
        }
    }

    pub(crate) fn push_edu(&self, destination: &ServerName, edu: Value) {
        let slot = self.slot(destination);
        {
            let mut edus = slot.edus.lock();
            if edus.len() >= MAX_BUFFERED_EDUS {
                edus.pop_front();
            }
            edus.push_back(edu);
        }
        slot.work.notify_one();
    }

    /// Queues EDUs that must reach their destinations across restarts (`queue.rs`), and wakes
    /// the destinations' workers. The write's ticket: the caller waits for it to be durable
    /// when it answers a client for these EDUs.
    pub(crate) fn push_lasting_edus(
        &self,
        store: &Store,
        edus: Vec<(OwnedServerName, Value)>,
    ) -> Result<crate::storage::WriteTicket> {
        let mut batch = crate::storage::Batch::new();
        for (destination, edu) in &edus {
            let seq = self.next_edu.fetch_add(1, Ordering::Relaxed);
            queue::put_edu(&mut batch, destination, seq, edu);
        }
        let ticket = store.write(batch)?;
        for (destination, _) in &edus {
            self.wake(destination);
        }
        Ok(ticket)
    }

    /// `origin` sent this server a transaction: it is a peer to greet after a restart.
    pub(crate) fn heard_from(&self, store: &Store, origin: &ServerName) {
        let slot = self.slot(origin);
        if !slot.recorded.swap(true, Ordering::Relaxed) {
            peers::record(store, origin);
        }
    }

    /// Sends `destination` an empty transaction, as soon as its worker can: a restarted
    /// server's hello, which makes a peer waiting out a backoff for it retry at once.
    fn announce(&self, destination: &ServerName) {
        let slot = self.slot(destination);
        slot.announce.store(true, Ordering::Relaxed);
        slot.work.notify_one();
    }

    fn txn_id(&self) -> String {
        let n = self.next_txn.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.boot_ms)
    }
}

/// Starts a worker for each destination as the sender first needs one, until the server
/// stops. `view` builds the sender's view of the server inside each worker's task.
pub(crate) async fn run_workers<S>(services: Arc<S>, view: fn(&S) -> Option<SenderView<'_>>)
where
    S: Send + Sync + 'static,
{
    let Some(v) = view(&services) else { return };
    let Some(mut starting) = v.federation.outbox.starting.lock().take() else {
        return;
    };
    loop {
        let next = tokio::select! {
            next = starting.recv() => next,
            () = v.notifier.stopped() => None,
        };
        let Some((destination, slot)) = next else {
            return;
        };
        let services = services.clone();
        tokio::spawn(async move {
            if let Some(v) = view(&services) {
                deliver(&v, &destination, &slot).await;
            }
        });
    }
}

/// A transaction: sent until acknowledged, unchanged.
struct InFlight {
    id: String,
    /// The queued PDUs and lasting EDUs it carries, removed from their queues once delivered.
    positions: Vec<u64>,
    sequences: Vec<u64>,
    body: Value,
}

/// One destination's worker.
async fn deliver(v: &SenderView<'_>, destination: &ServerName, slot: &Slot) {
    let mut backoff = Backoff::new(Duration::from_millis(500), MAX_BACKOFF);
    let mut in_flight: Option<InFlight> = None;
    loop {
        if in_flight.is_none() {
            match next_transaction(v, destination, slot) {
                Ok(next) => in_flight = next,
                Err(e) => tracing::warn!(%destination, error = %e, "federation queue unreadable"),
            }
        }
        let Some(txn) = &in_flight else {
            tokio::select! {
                () = slot.work.notified() => continue,
                () = v.notifier.stopped() => return,
            }
        };
        let path = format!("/_matrix/federation/v1/send/{}", txn.id);
        let sent = tokio::select! {
            sent = v.federation.client.send_signed(destination, Method::PUT, &path, Some(&txn.body)) => sent,
            () = v.notifier.stopped() => return,
        };
        match sent {
            Ok(answer) => {
                log_refusals(destination, &answer);
                if !slot.recorded.swap(true, Ordering::Relaxed) {
                    peers::record(v.store, destination);
                }
                if let Err(e) =
                    queue::remove(v.store, destination, (&txn.positions, &txn.sequences))
                {
                    tracing::warn!(%destination, error = %e, "cannot dequeue sent PDUs");
                }
                in_flight = None;
                backoff.reset();
            }
            Err(e) if refused_for_good(&e) => {
                // Sending it again would be refused again, and hold up everything after it.
                tracing::warn!(%destination, error = %e, "transaction refused; dropped");
                if let Err(e) =
                    queue::remove(v.store, destination, (&txn.positions, &txn.sequences))
                {
                    tracing::warn!(%destination, error = %e, "cannot dequeue refused PDUs");
                }
                in_flight = None;
                backoff.reset();
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::info!(%destination, error = %e, retry_in = ?wait, "transaction failed");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = slot.contact.notified() => backoff.reset(),
                    () = v.notifier.stopped() => return,
                }
            }
        }
    }
}

/// The next transaction for `destination`: its first queued PDUs and buffered EDUs, if any.
fn next_transaction(
    v: &SenderView<'_>,
    destination: &ServerName,
    slot: &Slot,
) -> Result<Option<InFlight>> {
    let positions = queue::peek(v.store, destination, MAX_PDUS)?;
    let mut pdus = Vec::with_capacity(positions.len());
    for pos in &positions {
        pdus.push(v.rooms.event(*pos)?.stored.pdu.clone());
    }
    let lasting = queue::peek_edus(v.store, destination, MAX_EDUS)?;
    let sequences: Vec<u64> = lasting.iter().map(|(seq, _)| *seq).collect();
    let mut edus: Vec<Value> = lasting.into_iter().map(|(_, edu)| edu).collect();
    {
        let mut buffered = slot.edus.lock();
        let n = buffered.len().min(MAX_EDUS - edus.len());
        edus.extend(buffered.drain(..n));
    }
    if pdus.is_empty() && edus.is_empty() && !slot.announce.swap(false, Ordering::Relaxed) {
        return Ok(None);
    }
    let body = json!({
        "origin": v.federation.server_name,
        "origin_server_ts": ruma::MilliSecondsSinceUnixEpoch::now(),
        "pdus": pdus,
        "edus": edus,
    });
    Ok(Some(InFlight {
        id: v.federation.outbox.txn_id(),
        positions,
        sequences,
        body,
    }))
}

/// Whether a failed transaction is refused for what it is (a 4xx but 401, which may be the
/// peer failing to fetch this server's keys for now, and 429, which asks to wait), rather
/// than for the moment (unreachable, 5xx).
fn refused_for_good(e: &super::client::PeerError) -> bool {
    matches!(e, super::client::PeerError::Status(_, status, _)
        if (400..500).contains(status) && *status != 401 && *status != 429)
}

/// A destination refusing some PDUs is its decision; it is logged, not retried.
fn log_refusals(destination: &ServerName, answer: &Value) {
    let Some(pdus) = answer.get("pdus").and_then(Value::as_object) else {
        return;
    };
    for (event_id, result) in pdus {
        if let Some(error) = result.get("error") {
            tracing::info!(%destination, %event_id, %error, "a peer refused a PDU");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::client::PeerError;

    #[test]
    fn only_a_refusal_for_what_the_transaction_is_drops_it() {
        let status = |code| PeerError::Status(ruma::owned_server_name!("peer"), code, Value::Null);
        assert!(refused_for_good(&status(400)));
        assert!(refused_for_good(&status(403)));
        for code in [401, 429, 500, 502] {
            assert!(!refused_for_good(&status(code)), "{code}");
        }
        let down = PeerError::Unreachable(ruma::owned_server_name!("peer"), "refused".into());
        assert!(!refused_for_good(&down));
    }
}
