//! The inbox worker: turns accepted webhooks into Matrix events, and never drops one.
//!
//! Each round takes a batch of webhook bodies in arrival order, groups their messages by
//! customer (a lane, [`crate::lane`]), adds the customers whose held messages are due again
//! ([`crate::backlog`]), and works on the lanes concurrently while keeping each customer's
//! messages in order; then it applies the statuses, each message's as one change, messages
//! concurrently.
//!
//! Meta had its 200 for every body, so a failure never drops one ([`crate::failure`]):
//!
//! - the homeserver unreachable or failing, or refusing the bridge's token: the round is not
//!   committed, the batch stays in the inbox and the round is retried after a doubling pause
//!   (at most `max_retry_secs`), with one error line per pause saying what to fix;
//! - a refusal that concerns one customer (their puppet may not register, the portal is
//!   closed to the bridge): that customer's messages from the refused one on are held, in
//!   order, and retried with a doubling pause of their own, for as long as it takes; their
//!   later messages queue behind; everyone else goes on. One error line per round says how
//!   many customers wait, why and what to fix;
//! - a message the homeserver can never accept as it is: held and retried like a refusal,
//!   then, after [`crate::backlog::DEAD_LETTER_AFTER`] attempts, set aside in the dead-letter
//!   table (kept, logged, counted, and noticed to the agents in the portal), and the
//!   customer's next messages go on.
//!
//! A round ends in one write: its bodies leave the inbox, and what it held or set aside is
//! written with them, so a crash keeps either the bodies or their held entries. It is not
//! waited for: a crash before it is on disk replays the round, and the wamid dedupe and the
//! wamid-derived txnIds make the replay post nothing twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use appservice::HandlerError;
use charla_storage::Batch;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bridge::Bridge;
use crate::cloud::{Customer, Envelope, Status};
use crate::failure::{Failure, hint};
use crate::lane::{Lane, LaneReport, Waiting};
use crate::store::{HeldItem, InboxKey, StoreError};

/// Webhook bodies taken per round: enough that each customer has several messages in it, so
/// the round is not spent waiting on the one customer with the most.
const BATCH: usize = 1024;

/// Customers (or messages, for statuses) worked on at the same time.
const CONCURRENCY: usize = 128;

/// Held items of one customer tried per round: a long backlog (a portal closed to the bridge
/// for days) is read a part at a time, the rest (and the round's new messages) behind it.
const HELD_PER_ROUND: usize = 256;

/// Runs until `stopped` turns true.
pub async fn run(bridge: Arc<Bridge>, mut stopped: watch::Receiver<bool>) {
    let mut waiting = Waiting::load(&bridge);
    let mut failures = 0u32;
    loop {
        if *stopped.borrow() {
            return;
        }
        let batch = match bridge.store.inbox_batch(BATCH) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, "cannot read the inbox");
                Vec::new()
            }
        };
        let now = Instant::now();
        let due = waiting.due(now);
        if batch.is_empty() && due.is_empty() {
            // A notification can race with the check above; never sleep for ever.
            let until = waiting
                .next_due()
                .map_or(now + Duration::from_secs(1), |due| {
                    due.min(now + Duration::from_secs(1))
                });
            tokio::select! {
                _ = bridge.inbox_wake.notified() => {}
                _ = stopped.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            continue;
        }
        let bodies: Vec<&[u8]> = batch.iter().map(|(_, v)| v.as_ref()).collect();
        match bridge.round(&bodies, &waiting, &due).await {
            Ok(reports) => {
                failures = 0;
                bridge.backlog.round_succeeded();
                let keys = batch.into_iter().map(|(key, _)| key).collect();
                bridge.commit(keys, reports, &mut waiting);
            }
            Err(error) => {
                failures += 1;
                let pause = Duration::from_millis(200u64 << failures.min(10))
                    .min(bridge.config.max_retry());
                let fix = hint(&error);
                tracing::error!(
                    %error,
                    fix,
                    ?pause,
                    waiting = bridge.store.inbox_waiting(),
                    "WhatsApp messages cannot reach Matrix; they are kept and retried"
                );
                bridge.backlog.round_failed(format!("{error} ({fix})"));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
    }
}

impl Bridge {
    /// One round: the batch's messages and the due held ones, lane by lane, then the batch's
    /// statuses. An error is one that blocks everyone: nothing of the round is committed.
    async fn round(
        &self,
        bodies: &[&[u8]],
        waiting: &Waiting,
        due: &[String],
    ) -> Result<Vec<LaneReport>, HandlerError> {
        let (mut lanes, statuses) = self.parse(bodies, waiting)?;
        for key in due {
            let (held, more) = self.store.held_items(key, HELD_PER_ROUND)?;
            let attempts = waiting.attempts(key);
            let slot = match lanes.iter().position(|lane| &lane.key == key) {
                Some(slot) => slot,
                None => {
                    lanes.push(Lane::new(key.clone()));
                    lanes.len() - 1
                }
            };
            lanes[slot].take_held(held, more, attempts);
        }
        let results: Vec<_> = futures_util::stream::iter(lanes)
            .map(|lane| self.run_lane(lane))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut reports = HashMap::new();
        for result in results {
            let report = result?;
            reports.insert(report.key.clone(), report);
        }
        // Statuses of different messages do not depend on each other; one message's go in order.
        let mut by_message: Vec<Vec<Status>> = Vec::new();
        let mut slots: HashMap<String, usize> = HashMap::new();
        for status in statuses {
            let slot = *slots.entry(status.id.clone()).or_insert_with(|| {
                by_message.push(Vec::new());
                by_message.len() - 1
            });
            by_message[slot].push(status);
        }
        let results: Vec<_> = futures_util::stream::iter(by_message)
            .map(|statuses| async move {
                let result = self.apply_statuses(&statuses).await;
                (statuses, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (statuses, result) in results {
            let Err(error) = result else { continue };
            if Failure::of(&error).blocks_everyone() {
                return Err(error);
            }
            // Refused in the portal (the bot or puppet was removed): held in its lane.
            let wamid = statuses.first().map(|s| s.id.clone()).unwrap_or_default();
            let lane = self
                .store
                .message(&wamid)?
                .map(|link| link.portal)
                .unwrap_or_default();
            reports
                .entry(lane.clone())
                .or_insert_with(|| {
                    let mut report = LaneReport::new(lane.clone());
                    report.waited = waiting.is_waiting(&lane);
                    report
                })
                .refused(HeldItem::Statuses { statuses }, &error);
        }
        Ok(reports.into_values().collect())
    }

    /// The batch's messages as lanes (in the order customers first appear), and its statuses.
    fn parse(
        &self,
        bodies: &[&[u8]],
        waiting: &Waiting,
    ) -> Result<(Vec<Lane>, Vec<Status>), HandlerError> {
        let mut lanes: Vec<Lane> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut statuses: Vec<Status> = Vec::new();
        for body in bodies {
            let envelope: Envelope = match serde_json::from_slice(body) {
                Ok(e) => e,
                Err(error) => {
                    // Signed by Meta but not a webhook we understand: retrying will not help.
                    tracing::warn!(%error, "skipping a webhook body that does not parse");
                    continue;
                }
            };
            for value in envelope.values() {
                if !value.metadata.phone_number_id.is_empty()
                    && value.metadata.phone_number_id != self.config.phone_number_id
                {
                    tracing::debug!(phone = %value.metadata.phone_number_id, "webhook for another number");
                    continue;
                }
                for error in &value.errors {
                    tracing::warn!(code = error.code, reason = %error.reason(), "WhatsApp reported an error");
                }
                for msg in &value.messages {
                    let Some(customer) = Customer::of_message(
                        value,
                        msg.from.as_deref(),
                        msg.from_user_id.as_deref(),
                    ) else {
                        tracing::warn!(wamid = %msg.id, "message without a sender");
                        continue;
                    };
                    let key = self.portal_key(&customer)?;
                    let slot = *index.entry(key.clone()).or_insert_with(|| {
                        let mut lane = Lane::new(key.clone());
                        // A customer whose held messages are not due yet: theirs queue behind.
                        lane.waits = waiting.is_waiting(&key);
                        lanes.push(lane);
                        lanes.len() - 1
                    });
                    lanes[slot].push(customer, msg.clone());
                }
                statuses.extend(value.statuses.iter().cloned());
            }
        }
        Ok((lanes, statuses))
    }

    /// Ends a round in one write: the bodies leave the inbox, the lanes' held items and dead
    /// letters are written; then the worker's lane states and the gauges follow.
    fn commit(&self, inbox_keys: Vec<InboxKey>, reports: Vec<LaneReport>, waiting: &mut Waiting) {
        let mut batch = Batch::new();
        let removed = self.store.remove_inbox(&mut batch, &inbox_keys);
        let mut dead = 0;
        let written = reports.iter().try_for_each(|report| {
            for key in &report.released {
                self.store.release_held(&mut batch, key);
            }
            for item in &report.hold {
                self.store.hold(&mut batch, &report.key, item)?;
            }
            for letter in &report.dead {
                self.store.dead_letter(&mut batch, letter)?;
                dead += 1;
            }
            Ok::<_, StoreError>(())
        });
        if let Err(error) = written.and_then(|()| Ok(self.store.db.write(batch)?)) {
            // Nothing of the round is written: its bodies stay and are processed again.
            tracing::error!(%error, "cannot record a processed round of webhooks");
            return;
        }
        self.store.inbox_removed(removed);
        for report in &reports {
            for letter in &report.dead {
                tracing::error!(
                    wamid = letter.item.wamid(),
                    attempts = letter.attempts,
                    error = %letter.error,
                    "the homeserver cannot take a WhatsApp message: set aside in the bridge's \
                     dead letters"
                );
            }
        }
        self.backlog.add_dead_letters(dead);
        waiting.apply(&reports, self.config.max_retry(), &self.backlog);
    }
}
