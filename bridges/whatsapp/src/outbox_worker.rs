//! The outbox worker: sends queued jobs to WhatsApp, one lane per customer.
//!
//! Each customer (portal) is a lane: its oldest job is sent, and the next one starts only when
//! WhatsApp answered and the job's removal is on disk, so one customer's messages go out one
//! after the other, in order, and a crash can resend at most the job that was in flight. Lanes
//! run side by side (up to `send_concurrency`), nobody waits for a slow customer, and every
//! send takes a slot from the [`Pacer`] so the number never exceeds its throughput ceiling.
//!
//! The jobs live in memory, loaded from the outbox once at start and then handed over by
//! [`Bridge::enqueue`] after each durable write, so the outbox is never read again while running.
//!
//! A transient failure (unreachable, timeout, 5xx) or a rate limit keeps the job at the head of
//! its lane and pauses every lane, doubling the pause while it lasts (at most `max_retry_secs`);
//! the first success ends it. What a send changes in Matrix (status events, notices) is shown
//! afterwards, in order per room, without holding the lanes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ruma::OwnedRoomId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bridge::Bridge;
use crate::cloud::error::ErrorClass;
use crate::failure::Failure;
use crate::outbox::{Attempt, Effect};
use crate::pacing::Pacer;
use crate::store::{Job, OutboxKey};

/// Slots the pacer lets through back to back: 50 ms worth at 1,000 a second.
fn burst(per_second: f64) -> u32 {
    (per_second / 20.0).clamp(1.0, 1000.0) as u32
}

/// Runs until `stopped` turns true; jobs in flight then finish first.
pub async fn run(bridge: Arc<Bridge>, mut stopped: watch::Receiver<bool>) {
    let mut lanes = load_queued(&bridge);
    let rate = bridge.config.sends_per_second;
    let mut pacer = Pacer::new(rate, burst(rate));
    let mut effects = Effects::default();
    show_left_over(&bridge, &mut effects);
    let mut in_flight = FuturesUnordered::new();
    let mut backoff = Backoff::default();
    loop {
        lanes.add_fresh(&bridge);
        let stopping = *stopped.borrow();
        if stopping && in_flight.is_empty() {
            break;
        }
        let now = Instant::now();
        let mut wake_at = backoff.until.filter(|until| *until > now);
        if !stopping && wake_at.is_none() {
            wake_at = start_sends(&bridge, &mut lanes, &mut pacer, &mut in_flight, now);
        }
        tokio::select! {
            Some(joined) = in_flight.next(), if !in_flight.is_empty() => match joined {
                Ok(sent) => answered(&bridge, sent, &mut lanes, &mut backoff, &mut effects),
                // A bug; the lane stays busy, its jobs wait for a restart.
                Err(_) => tracing::error!("a WhatsApp send task panicked"),
            },
            _ = bridge.outbox_wake.notified() => {}
            _ = stopped.changed(), if !stopping => {}
            _ = tokio::time::sleep_until(wake_at.unwrap_or(now)), if wake_at.is_some() => {}
            // A notification can race with the check above; never sleep for ever.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    effects.finish().await;
}

/// The jobs queued before the start, in lanes. Rooms told before a restart that their
/// messages are pending are told again when they leave.
fn load_queued(bridge: &Bridge) -> Lanes {
    let mut lanes = Lanes::default();
    match bridge.store.outbox_jobs() {
        Ok(jobs) => {
            bridge
                .pending_rooms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(
                    jobs.iter()
                        .filter(|(_, job)| job.told_pending)
                        .map(|(_, job)| job.room_id.clone()),
                );
            for (key, job) in jobs {
                lanes.add(key, job);
            }
        }
        Err(error) => tracing::error!(%error, "cannot read the outbox"),
    }
    lanes
}

/// Shows the answers recorded before a crash and not shown yet: their statuses, their
/// failures.
fn show_left_over(bridge: &Arc<Bridge>, effects: &mut Effects) {
    match bridge.store.shows() {
        Ok(shows) => {
            for (key, shown) in shows {
                effects.show(bridge, Effect::Show(key, shown));
            }
        }
        Err(error) => tracing::error!(%error, "cannot read the outcomes left to show"),
    }
}

/// One send, as its task returns it.
struct Sent {
    key: OutboxKey,
    job: Job,
    outcome: Attempt,
    started: Instant,
}

/// Starts the next job of ready lanes while there is room in flight and the pacer has slots;
/// returns when the pacer has the next one, if it ran out.
fn start_sends(
    bridge: &Arc<Bridge>,
    lanes: &mut Lanes,
    pacer: &mut Pacer,
    in_flight: &mut FuturesUnordered<JoinHandle<Sent>>,
    now: Instant,
) -> Option<Instant> {
    while in_flight.len() < bridge.config.send_concurrency && lanes.has_ready() {
        if let Err(free_at) = pacer.take(now) {
            return Some(free_at);
        }
        let Some((key, job)) = lanes.start_next() else {
            break;
        };
        in_flight.push(tokio::spawn(send(bridge.clone(), key, job)));
    }
    None
}

/// Sends one job, and removes it from the outbox (with what the answer records) if WhatsApp
/// answered for good.
async fn send(bridge: Arc<Bridge>, key: OutboxKey, job: Job) -> Sent {
    let started = Instant::now();
    let outcome = bridge.attempt(&job).await;
    let done = match &outcome {
        Ok(_) => true,
        Err(error) => !error.class().is_retried(),
    };
    if done {
        bridge.finish_job(&key, &job, &outcome).await;
    }
    Sent {
        key,
        job,
        outcome,
        started,
    }
}

/// Ends a send's lane attempt by its outcome: accepted or refused for good (the job left the
/// outbox), or postponed (kept at the head of its lane, every lane paused).
fn answered(
    bridge: &Arc<Bridge>,
    sent: Sent,
    lanes: &mut Lanes,
    backoff: &mut Backoff,
    effects: &mut Effects,
) {
    let Sent {
        key,
        mut job,
        outcome,
        started,
    } = sent;
    match outcome {
        Ok(wamid) => {
            backoff.succeeded(started);
            lanes.finish(&job.portal, Some(key));
            if let Some(effect) = Effect::answered(key, job, &Ok(wamid)) {
                effects.show(bridge, effect);
            }
        }
        Err(error) if error.class().is_retried() => {
            tracing::info!(%error, attempts = job.attempts + 1, "WhatsApp send postponed");
            backoff.failed(error.class(), started, bridge.config.max_retry());
            job.attempts += 1;
            if !job.told_pending && job.event_id.is_some() {
                job.told_pending = true;
                effects.show(bridge, Effect::Pending(job.clone(), error.reason()));
            }
            if let Err(error) = bridge.store.update_outbox(&key, &job) {
                tracing::error!(%error, "cannot update a queued job");
            }
            let portal = job.portal.clone();
            lanes.put_back(key, job);
            lanes.finish(&portal, None);
        }
        Err(error) => {
            tracing::warn!(%error, "WhatsApp refused a message");
            lanes.finish(&job.portal, Some(key));
            if let Some(effect) = Effect::answered(key, job, &Err(error)) {
                effects.show(bridge, effect);
            }
        }
    }
}

impl ErrorClass {
    /// Whether the job stays queued and is tried again.
    fn is_retried(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::RateLimited)
    }
}

/// The queued jobs, per customer.
#[derive(Default)]
struct Lanes {
    jobs: HashMap<String, BTreeMap<OutboxKey, Job>>,
    /// Lanes with a job in flight.
    busy: HashSet<String>,
    /// Idle lanes with jobs, in the order they became ready.
    ready: VecDeque<String>,
}

impl Lanes {
    /// Adds a job (again: a job handed over and also read at start is one job).
    fn add(&mut self, key: OutboxKey, job: Job) {
        let portal = job.portal.clone();
        let lane = self.jobs.entry(portal.clone()).or_default();
        let was_empty = lane.is_empty();
        lane.insert(key, job);
        if was_empty && !self.busy.contains(&portal) {
            self.ready.push_back(portal);
        }
    }

    /// Adds the jobs queued since the worker last looked. A job queued while the outbox was
    /// read at start may come both ways; once sent, it is gone from the outbox and must not
    /// come back.
    fn add_fresh(&mut self, bridge: &Bridge) {
        for (key, job) in bridge.take_fresh_jobs() {
            if bridge.store.outbox_has(&key) {
                self.add(key, job);
            }
        }
    }

    fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The oldest job of the next ready lane, which is busy until [`Lanes::finish`].
    fn start_next(&mut self) -> Option<(OutboxKey, Job)> {
        let portal = self.ready.pop_front()?;
        let (key, job) = self.jobs.get(&portal)?.first_key_value()?;
        let started = (*key, job.clone());
        self.busy.insert(portal);
        Some(started)
    }

    /// Keeps a job that will be tried again, as it is now.
    fn put_back(&mut self, key: OutboxKey, job: Job) {
        self.jobs
            .entry(job.portal.clone())
            .or_default()
            .insert(key, job);
    }

    /// Ends the lane's attempt; `done` is the job that left the outbox.
    fn finish(&mut self, portal: &str, done: Option<OutboxKey>) {
        self.busy.remove(portal);
        let Some(lane) = self.jobs.get_mut(portal) else {
            return;
        };
        if let Some(key) = done {
            lane.remove(&key);
        }
        if lane.is_empty() {
            self.jobs.remove(portal);
        } else {
            self.ready.push_back(portal.to_owned());
        }
    }
}

/// The pause of every lane while WhatsApp fails.
#[derive(Default)]
struct Backoff {
    failures: u32,
    /// When the current pause began, and when it ends.
    since: Option<Instant>,
    until: Option<Instant>,
    class: Option<ErrorClass>,
}

impl Backoff {
    /// Whether an answer is news: attempts started before the last pause began answer for the
    /// same moment as the failure that caused it.
    fn is_news(&self, started: Instant) -> bool {
        self.since.is_none_or(|since| started >= since)
    }

    fn succeeded(&mut self, started: Instant) {
        if self.is_news(started) {
            self.failures = 0;
            self.class = None;
        }
    }

    fn failed(&mut self, class: ErrorClass, started: Instant, max: Duration) {
        if !self.is_news(started) {
            return;
        }
        self.failures += 1;
        if class == ErrorClass::RateLimited {
            self.class = Some(class);
        }
        let base = match self.class.unwrap_or(class) {
            ErrorClass::RateLimited => Duration::from_secs(2),
            _ => Duration::from_millis(250),
        };
        let pause = base.saturating_mul(1 << self.failures.min(10)).min(max);
        let now = Instant::now();
        self.since = Some(now);
        self.until = Some(now + pause);
    }
}

/// Attempts at showing one effect while the homeserver is unavailable; a record left after
/// them is shown again at the next start.
const SHOW_ATTEMPTS: u32 = 8;

/// Shows what sends changed in Matrix, in order per room, without holding the lanes.
#[derive(Default)]
struct Effects {
    /// The last effect shown per room; the next one waits for it.
    last: HashMap<OwnedRoomId, JoinHandle<()>>,
}

impl Effects {
    fn show(&mut self, bridge: &Arc<Bridge>, effect: Effect) {
        let room = effect.room_id().clone();
        let before = self.last.remove(&room);
        let bridge = bridge.clone();
        let task = tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            let mut attempts = 0;
            loop {
                attempts += 1;
                match bridge.show(&effect).await {
                    Ok(()) => {
                        if let Some(key) = effect.record()
                            && let Err(error) = bridge.store.forget_show(key)
                        {
                            tracing::warn!(%error, "cannot forget a shown outcome");
                        }
                        break;
                    }
                    Err(error)
                        if attempts < SHOW_ATTEMPTS
                            && Failure::of(&error) == Failure::Unavailable =>
                    {
                        let pause = Duration::from_millis(250 << attempts.min(8))
                            .min(bridge.config.max_retry());
                        tokio::time::sleep(pause).await;
                    }
                    Err(error) => {
                        // The record (if any) stays: shown again at the next start.
                        tracing::warn!(%error, "cannot show a delivery state in Matrix");
                        break;
                    }
                }
            }
        });
        self.last.insert(room, task);
        if self.last.len() > 4096 {
            self.last.retain(|_, task| !task.is_finished());
        }
    }

    async fn finish(self) {
        for (_, task) in self.last {
            let _ = task.await;
        }
    }
}
