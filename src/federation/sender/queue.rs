//! Each destination's durable queue of PDUs to send: `FederationQueue` keys of the destination
//! and the PDU's stream position, in order. Written with the sender's cursor in one batch
//! (`enqueue.rs`), removed once the destination acknowledged the transaction that carried them.

use ruma::{OwnedServerName, ServerName};

use crate::{
    error::Result,
    storage::{Batch, Key, Store, Table, keys, keys::SEP},
};

fn prefix(destination: &ServerName) -> Key {
    Key::new().str(destination.as_str())
}

/// Queues the PDU at `pos` for `destination`.
pub(super) fn put(batch: &mut Batch, destination: &ServerName, pos: u64) {
    batch.put(
        Table::FederationQueue,
        prefix(destination).u64(pos),
        Vec::new(),
    );
}

/// The positions of the first `limit` PDUs queued for `destination`, in order.
pub(super) fn peek(store: &Store, destination: &ServerName, limit: usize) -> Result<Vec<u64>> {
    store
        .scan_prefix(Table::FederationQueue, &prefix(destination).into_vec())
        .take(limit)
        .map(|entry| Ok(keys::trailing_u64(&entry?.0)))
        .collect()
}

/// Removes what a transaction delivered. Not waited for: if a crash loses it, the PDUs go out
/// again and the destination drops them as known.
pub(super) fn remove(store: &Store, destination: &ServerName, positions: &[u64]) -> Result<()> {
    let mut batch = Batch::new();
    for pos in positions {
        batch.delete(Table::FederationQueue, prefix(destination).u64(*pos));
    }
    let _not_awaited = store.write(batch)?;
    Ok(())
}

/// The destinations with something queued, one seek each rather than a walk of every entry.
pub(super) fn destinations(store: &Store) -> Result<Vec<OwnedServerName>> {
    let mut found = Vec::new();
    let mut from = Vec::new();
    loop {
        let Some(entry) = store
            .range(Table::FederationQueue, &from, &[0xFF; 300])
            .next()
            .transpose()?
        else {
            return Ok(found);
        };
        let key = entry.0;
        let Some(end) = key.iter().position(|b| *b == SEP) else {
            return Ok(found);
        };
        if let Ok(name) = ServerName::parse(String::from_utf8_lossy(&key[..end]).as_ref()) {
            found.push(name);
        }
        // Past every key of this destination: its name, then a byte above the separator's.
        from = key[..end].to_vec();
        from.push(SEP);
        from.extend_from_slice(&[0xFF; 9]);
    }
}
