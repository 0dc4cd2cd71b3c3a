//! The inbox worker: turns accepted webhooks into Matrix events.
//!
//! It takes a batch of webhook bodies in arrival order, groups their messages by customer, and
//! works on the customers concurrently while keeping each customer's messages in order. Then it
//! applies the statuses, each message's as one change, messages concurrently. Only a fully
//! processed batch leaves the inbox; a failure (homeserver unreachable) retries the batch after
//! a pause, and the wamid dedupe and wamid-derived txnIds make the retry post nothing twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use appservice::HandlerError;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::bridge::Bridge;
use crate::cloud::{Envelope, InboundMessage, Status};
use crate::portal::Customer;

/// Webhook bodies taken per round: enough that each customer has several messages in it, so
/// the round is not spent waiting on the one customer with the most.
const BATCH: usize = 1024;

/// Customers (or messages, for statuses) worked on at the same time.
const CONCURRENCY: usize = 128;

/// Runs until `stopped` turns true.
pub async fn run(bridge: Arc<Bridge>, mut stopped: watch::Receiver<bool>) {
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
        if batch.is_empty() {
            tokio::select! {
                _ = bridge.inbox_wake.notified() => {}
                _ = stopped.changed() => {}
                // A notification can race with the check above; never sleep for ever.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let bodies: Vec<&[u8]> = batch.iter().map(|(_, v)| v.as_ref()).collect();
        match bridge.process(&bodies).await {
            Ok(()) => {
                failures = 0;
                let keys = batch.iter().map(|(key, _)| key.as_ref());
                if let Err(error) = bridge.store.remove_inbox(keys) {
                    tracing::error!(%error, "cannot remove processed webhooks");
                }
            }
            Err(error) => {
                failures += 1;
                let pause = Duration::from_millis(200u64 << failures.min(6));
                tracing::warn!(%error, ?pause, "webhook processing failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
    }
}

impl Bridge {
    /// Processes webhook bodies: every message, then every status.
    pub(crate) async fn process(&self, bodies: &[&[u8]]) -> Result<(), HandlerError> {
        let mut by_customer: Vec<(Customer, Vec<InboundMessage>)> = Vec::new();
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
                    let slot = *index.entry(key).or_insert_with(|| {
                        by_customer.push((customer.clone(), Vec::new()));
                        by_customer.len() - 1
                    });
                    if !customer.name.is_empty() {
                        by_customer[slot].0 = customer;
                    }
                    by_customer[slot].1.push(msg.clone());
                }
                statuses.extend(value.statuses.iter().cloned());
            }
        }
        let results: Vec<_> = futures_util::stream::iter(by_customer)
            .map(|(customer, messages)| self.bridge_customer(customer, messages))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for result in results {
            result?;
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
            .map(|statuses| self.apply_message_statuses(statuses))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for result in results {
            result?;
        }
        Ok(())
    }

    /// One customer's messages of a round, in order.
    async fn bridge_customer(
        &self,
        customer: Customer,
        messages: Vec<InboundMessage>,
    ) -> Result<(), HandlerError> {
        let portal = match self.ensure_portal(&customer).await {
            Ok(portal) => portal,
            Err(error) if !is_retryable(&error) => {
                tracing::warn!(%error, "messages dropped: the homeserver refused the portal");
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        for msg in &messages {
            if let Err(error) = self.bridge_message(&portal, msg).await {
                if is_retryable(&error) {
                    return Err(error);
                }
                tracing::warn!(wamid = %msg.id, %error, "message dropped: the homeserver refused it");
            }
        }
        Ok(())
    }

    /// One message's statuses of a round; a refusal by the homeserver drops them.
    async fn apply_message_statuses(&self, statuses: Vec<Status>) -> Result<(), HandlerError> {
        match self.apply_statuses(&statuses).await {
            Err(error) if !is_retryable(&error) => {
                let wamid = statuses.first().map(|s| s.id.as_str()).unwrap_or_default();
                tracing::warn!(%wamid, %error, "statuses dropped: the homeserver refused them");
                Ok(())
            }
            result => result,
        }
    }
}

/// Whether trying again may help: not for a homeserver's 4xx refusal (other than 429), which
/// would block the inbox for ever.
pub(crate) fn is_retryable(error: &HandlerError) -> bool {
    match error.downcast_ref::<appservice::Error>() {
        Some(appservice::Error::Matrix { status, .. }) => *status == 429 || *status >= 500,
        Some(appservice::Error::InvalidRequest(_) | appservice::Error::InvalidResponse(_)) => false,
        _ => true,
    }
}
