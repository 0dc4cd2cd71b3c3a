//! Delivery: one sender per pusher with something queued (a future of the delivery task),
//! sending its notifications in order, one request in flight, so a gateway that is down or
//! slow delays only its own pushers.
//!
//! A failed request (no answer, or a non-2xx status) is retried with exponential backoff from
//! [`FIRST_RETRY`] up to [`MAX_RETRY`]; a pusher failing for longer than [`GIVE_UP_AFTER`]
//! drops the notification it is stuck on and goes on with the next (Synapse gives up after a
//! day too: a week-old notification is of no use). A `rejected` answer naming the pusher's
//! pushkey deletes the pusher, as the spec says.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use parking_lot::Mutex;
use reqwest::Url;
use ruma::api::client::push::PusherKind;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    Delivery, notification,
    outbox::{self, PusherKey},
};
use crate::{
    error::Result,
    ssrf::{GuardedClient, IpFilter},
    storage::Store,
};

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(3600);
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long a gateway may take to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = "Charla (push)";

/// The pushers whose sender runs. A sender reads its queue again before each request and
/// leaves the set only when the queue is empty, checked under the set's lock; the consumer
/// queues before it looks in the set, so every queued entry has a sender.
///
/// Senders wait on gateways and on the disk, hardly on the CPU, so they all run in one task
/// ([`Senders::run`]), each a future of its own: one slow gateway holds up only its pushers.
pub struct Senders {
    running: Mutex<HashSet<PusherKey>>,
    /// Pushers whose sender is to start, for [`Senders::run`].
    woken: mpsc::UnboundedSender<PusherKey>,
    /// Gateways are URLs users chose: requests go through the server's SSRF guard, with
    /// `[server] ip_range_*`, and redirects are not followed.
    http: GuardedClient,
}

impl Senders {
    /// The senders, and the channel [`Senders::run`] takes the pushers to start from.
    pub fn new(filter: IpFilter) -> (Self, mpsc::UnboundedReceiver<PusherKey>) {
        let (woken, woken_rx) = mpsc::unbounded_channel();
        let senders = Senders {
            running: Mutex::default(),
            woken,
            http: GuardedClient::new(filter, USER_AGENT, Some(REQUEST_TIMEOUT)),
        };
        (senders, woken_rx)
    }

    /// Makes sure the pusher's queue is being sent: starts its sender unless it runs.
    pub fn wake(&self, pusher: PusherKey) {
        let mut running = self.running.lock();
        if running.insert(pusher.clone()) {
            // `run` holds the receiver for as long as anyone can wake a sender.
            let _ = self.woken.send(pusher);
        }
    }

    /// Runs a sender for each pusher woken, until the server stops.
    pub async fn run(&self, d: &Delivery<'_>, mut woken: mpsc::UnboundedReceiver<PusherKey>) {
        let mut sending = FuturesUnordered::new();
        loop {
            tokio::select! {
                Some(pusher) = woken.recv() => sending.push(deliver(d, self, pusher)),
                Some(()) = sending.next(), if !sending.is_empty() => {}
                () = d.notifier.stopped() => return,
            }
        }
    }

    /// Ends the pusher's sender if its queue is still empty.
    fn retire(&self, store: &Store, pusher: &PusherKey) -> Result<bool> {
        let mut running = self.running.lock();
        if outbox::first(store, pusher)?.is_some() {
            return Ok(false);
        }
        running.remove(pusher);
        Ok(true)
    }
}

/// What became of one request.
enum Sent {
    Delivered,
    /// Delivered, and the gateway said this pushkey is no longer valid.
    Rejected,
    Failed(String),
}

/// Sends the pusher's queue until it is empty. Dropped when the server stops.
async fn deliver(d: &Delivery<'_>, senders: &Senders, pusher: PusherKey) {
    let mut retry = FIRST_RETRY;
    let mut failing_since: Option<Instant> = None;
    loop {
        let wait = match step(d, senders, &pusher).await {
            Ok(Some(Sent::Delivered | Sent::Rejected)) => {
                retry = FIRST_RETRY;
                failing_since = None;
                continue;
            }
            Ok(None) => match senders.retire(d.store, &pusher) {
                Ok(true) => return,
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "push sender cannot read its queue");
                    retry
                }
            },
            Ok(Some(Sent::Failed(e))) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                tracing::warn!(user = %pusher.user, app_id = pusher.app_id, error = e, retry_in = ?retry, "push gateway request failed");
                if since.elapsed() >= GIVE_UP_AFTER {
                    if let Err(e) = drop_front(d.store, &pusher).await {
                        tracing::error!(error = %e, "push sender cannot drop a notification");
                    }
                    failing_since = None;
                }
                retry
            }
            Err(e) => {
                tracing::error!(error = %e, "push sender: storage error");
                retry
            }
        };
        tokio::time::sleep(wait).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Sends the oldest queued notification; `None` when the queue is empty.
async fn step(d: &Delivery<'_>, senders: &Senders, pusher: &PusherKey) -> Result<Option<Sent>> {
    let Some((key, queued)) = outbox::first(d.store, pusher)? else {
        return Ok(None);
    };
    let stored = d.push.pushers.get(&pusher.user, &pusher.ids())?;
    let Some((stored, PusherKind::Http(data))) = stored.map(|p| {
        let kind = p.pusher.kind.clone();
        (p, kind)
    }) else {
        // The pusher was deleted (or is no longer an http one): its queue goes with it.
        outbox::clear(d.store, pusher).await?;
        return Ok(Some(Sent::Delivered));
    };
    let body = notification::body(
        &queued,
        &data,
        &pusher.app_id,
        &pusher.pushkey,
        stored.pushkey_ts,
    );
    let sent = post(&senders.http, &data.url, &body, &pusher.pushkey).await;
    match sent {
        Sent::Delivered => outbox::remove(d.store, key).await?,
        Sent::Rejected => {
            tracing::info!(user = %pusher.user, app_id = pusher.app_id, "push gateway rejected the pushkey: pusher removed");
            d.push.pushers.delete(&pusher.user, &pusher.ids()).await?;
            outbox::clear(d.store, pusher).await?;
        }
        Sent::Failed(_) => {}
    }
    Ok(Some(sent))
}

async fn drop_front(store: &Store, pusher: &PusherKey) -> Result<()> {
    if let Some((key, _)) = outbox::first(store, pusher)? {
        outbox::remove(store, key).await?;
    }
    Ok(())
}

/// POSTs the body; a 2xx is delivered, and its `rejected` list is checked for our pushkey. A
/// redirect is a failure like any other non-2xx: a gateway has one fixed URL.
async fn post(http: &GuardedClient, url: &str, body: &Value, pushkey: &str) -> Sent {
    let url = match Url::parse(url) {
        Ok(url) => url,
        Err(e) => return Sent::Failed(format!("invalid URL: {e}")),
    };
    let request = match http.request(reqwest::Method::POST, &url) {
        Ok(request) => request,
        Err(refused) => return Sent::Failed(refused.to_string()),
    };
    let res = match request.json(body).send().await {
        Ok(res) => res,
        Err(e) => {
            return Sent::Failed(match GuardedClient::refused_by_resolver(&e) {
                Some(refused) => refused.to_string(),
                None => e.to_string(),
            });
        }
    };
    if !res.status().is_success() {
        return Sent::Failed(format!("status {}", res.status()));
    }
    // A gateway answering 2xx without a JSON body accepted the notification all the same.
    let answer: Value = res.json().await.unwrap_or(Value::Null);
    let rejected = answer["rejected"]
        .as_array()
        .is_some_and(|keys| keys.iter().any(|k| k.as_str() == Some(pushkey)));
    if rejected {
        Sent::Rejected
    } else {
        Sent::Delivered
    }
}
