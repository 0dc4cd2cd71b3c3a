//! Each destination's durable queues: PDUs to send (`FederationQueue` keys of the destination
//! and the PDU's stream position, in order, written with the sender's cursor in one batch by
//! `enqueue.rs`), and the EDUs that must survive a restart (`FederationEdus`: the destination
//! and a sequence, the EDU as value): to-device messages, whose loss loses an E2EE key share,
//! and device list and signing key updates, without which a peer trusts stale keys. Both are
//! removed once the destination acknowledged the transaction that carried them. Typing,
//! receipts and presence stay in memory: they are about now.

use ruma::{OwnedServerName, ServerName};

use serde_json::Value;

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

/// The destinations with something queued in `table` (PDUs, or EDUs that must last), one seek
/// each rather than a walk of every entry.
pub(super) fn destinations(store: &Store, table: Table) -> Result<Vec<OwnedServerName>> {
    let mut found = Vec::new();
    let mut from = Vec::new();
    loop {
        let Some(entry) = store.range(table, &from, &[0xFF; 300]).next().transpose()? else {
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

/// Queues `edu` for `destination` under `seq` (increasing, also across restarts).
pub(super) fn put_edu(batch: &mut Batch, destination: &ServerName, seq: u64, edu: &Value) {
    batch.put(
        Table::FederationEdus,
        prefix(destination).u64(seq),
        serde_json::to_vec(edu).expect("JSON serializes"),
    );
}

/// The first `limit` EDUs queued for `destination`, with their sequences, in order.
pub(super) fn peek_edus(
    store: &Store,
    destination: &ServerName,
    limit: usize,
) -> Result<Vec<(u64, Value)>> {
    let mut out = Vec::new();
    for entry in store
        .scan_prefix(Table::FederationEdus, &prefix(destination).into_vec())
        .take(limit)
    {
        let (key, value) = entry?;
        match serde_json::from_slice(&value) {
            Ok(edu) => out.push((keys::trailing_u64(&key), edu)),
            Err(e) => tracing::warn!(%destination, error = %e, "a queued EDU is unreadable"),
        }
    }
    Ok(out)
}

/// Removes what a transaction delivered: PDUs by position, EDUs by sequence. Not waited for:
/// if a crash loses it, they go out again and the destination drops what it has.
pub(super) fn remove(
    store: &Store,
    destination: &ServerName,
    (positions, sequences): (&[u64], &[u64]),
) -> Result<()> {
    let mut batch = Batch::new();
    for pos in positions {
        batch.delete(Table::FederationQueue, prefix(destination).u64(*pos));
    }
    for seq in sequences {
        batch.delete(Table::FederationEdus, prefix(destination).u64(*seq));
    }
    let _not_awaited = store.write(batch)?;
    Ok(())
}
