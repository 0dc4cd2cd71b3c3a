//! The servers this one delivered to lately, remembered across restarts, so that a restarted
//! server says hello to each (an empty transaction, `Outbox::announce`): a peer that queued
//! events for it while it was down sees it is back and sends them at once, instead of at the
//! end of its backoff.

use ruma::{OwnedServerName, ServerName};

use crate::{
    error::Result,
    storage::{Batch, Key, Store, Table, keys},
};

/// Peers not delivered to for this long are not greeted.
const FORGET_AFTER_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// The most peers greeted at a start, the most recent first.
const MAX_GREETED: usize = 1_000;

fn prefix() -> Key {
    Key::new().str("peer")
}

/// Records that `destination` took a transaction now. Not waited for: losing it only skips a
/// hello.
pub(super) fn record(store: &Store, destination: &ServerName) {
    let mut batch = Batch::new();
    batch.put(
        Table::FederationState,
        prefix().str(destination.as_str()),
        now_ms().to_be_bytes().to_vec(),
    );
    if let Err(e) = store.write(batch) {
        tracing::debug!(%destination, error = %e, "peer not recorded");
    }
}

/// The peers delivered to in the last 30 days, most recent first, at most [`MAX_GREETED`].
pub(super) fn recent(store: &Store) -> Result<Vec<OwnedServerName>> {
    let prefix = prefix().into_vec();
    let now = now_ms();
    let mut peers = Vec::new();
    for entry in store.scan_prefix(Table::FederationState, &prefix) {
        let (key, value) = entry?;
        let seen = keys::decode_u64(&value);
        let name = keys::str_parts(&key[prefix.len()..])
            .next()
            .unwrap_or_default();
        if now.saturating_sub(seen) < FORGET_AFTER_MS
            && let Ok(name) = ServerName::parse(name)
        {
            peers.push((seen, name));
        }
    }
    peers.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
    Ok(peers
        .into_iter()
        .take(MAX_GREETED)
        .map(|(_, n)| n)
        .collect())
}

fn now_ms() -> u64 {
    u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get())
}
