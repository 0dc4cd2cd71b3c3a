//! The flusher thread: group-commit syncs of the write-ahead log, then the synced writes into
//! sled, and checkpoints. See the crate documentation for why it is built so.

use std::sync::atomic::Ordering;

use super::{IVec, Inner, Result, wal};

/// Syncs the log whenever a writer waits (or, unasked, within 200 ms of a write), covering
/// every batch applied before the sync began; then hands those batches to sled as one batch, and
/// checkpoints when a segment is full.
///
/// Holds only a weak reference between syncs, so dropping the last [`crate::Store`] closes sled.
pub(super) fn flusher(inner: std::sync::Weak<Inner>) {
    // Taken from the pending log but not yet on disk (only after a failed sync), and on disk
    // but not yet in sled.
    let mut unsynced = Vec::new();
    let mut unsynced_ops = Vec::new();
    let mut unapplied: Vec<(Vec<u8>, Option<IVec>)> = Vec::new();
    let mut last_apply = std::time::Instant::now();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let mut wal = strong.wal.lock().expect("wal lock");
        if !unapplied.is_empty() && last_apply.elapsed() >= SLED_APPLY_EVERY {
            apply_overlay(&strong, &mut unapplied, &mut wal);
            last_apply = std::time::Instant::now();
        }
        let asked = strong.flush_wanted.swap(false, Ordering::SeqCst);
        let (target, ops) = {
            let mut log = strong.log.lock().expect("log lock");
            if !asked && log.records.is_empty() {
                None
            } else {
                unsynced.append(&mut log.records);
                Some((log.applied, std::mem::take(&mut log.ops)))
            }
        }
        .unzip();
        let (Some(target), Some(ops)) = (target, ops) else {
            drop(wal);
            drop(strong);
            // A writer sets the flag before unparking, so a wake-up is never lost; the timeout
            // bounds how long an unasked write stays off the disk, and how long a dropped store
            // keeps this thread around.
            let timeout = if unapplied.is_empty() {
                std::time::Duration::from_millis(200)
            } else {
                SLED_APPLY_EVERY
            };
            std::thread::park_timeout(timeout);
            continue;
        };
        unsynced_ops.extend(ops);
        let started = std::time::Instant::now();
        let synced = if unsynced.is_empty() {
            Ok(())
        } else {
            wal.append_durable(&unsynced)
        };
        if let Err(e) = synced {
            // A partial append may have left a torn record, and replay stops a segment at its
            // first torn record: retry in a fresh segment.
            tracing::error!(error = %e, "log sync failed; writers keep waiting");
            if let Err(e) = wal.rotate() {
                tracing::error!(error = %e, "cannot start a new log segment");
            }
            strong.flush_wanted.store(true, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        tracing::trace!(
            target,
            bytes = unsynced.len(),
            micros = started.elapsed().as_micros() as u64,
            "synced"
        );
        unsynced.clear();
        unapplied.append(&mut unsynced_ops);
        let covered = {
            let mut d = strong.durable.lock().expect("durable lock");
            d.flushed = d.flushed.max(target);
            let later = d.waiting.split_off(&(target + 1));
            std::mem::replace(&mut d.waiting, later)
        };
        for tx in covered.into_values().flatten() {
            let _ = tx.send(());
        }
        if unapplied.len() >= SLED_APPLY_OPS || wal.is_full() {
            apply_overlay(&strong, &mut unapplied, &mut wal);
            last_apply = std::time::Instant::now();
        }
    }
}

/// Synced writes reach sled after this long or this many operations, whichever comes first:
/// each sled batch costs a disk write of sled's own, so fewer, larger ones are cheaper, and the
/// overlay readers search stays small.
pub(super) const SLED_APPLY_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
const SLED_APPLY_OPS: usize = 8192;

/// Hands synced writes to sled as one batch and drops them from the overlay; checkpoints the
/// log when its segment is full.
fn apply_overlay(inner: &Inner, unapplied: &mut Vec<(Vec<u8>, Option<IVec>)>, wal: &mut wal::Wal) {
    let through = inner.durable.lock().expect("durable lock").flushed;
    match apply_to_sled(&inner.db, unapplied) {
        Ok(()) => {
            inner
                .overlay
                .remove_applied(through, unapplied.iter().map(|(k, _)| k.as_slice()));
            unapplied.clear();
            if wal.is_full()
                && let Err(e) = checkpoint(&inner.db, wal)
            {
                tracing::error!(error = %e, "log checkpoint failed; the log keeps growing");
            }
        }
        // Readers still find the writes in the overlay, and the log has them.
        Err(e) => tracing::error!(error = %e, "writing to sled failed; retrying"),
    }
}

fn apply_to_sled(db: &sled::Db, ops: &[(Vec<u8>, Option<IVec>)]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for (key, value) in ops {
        match value {
            Some(v) => batch.insert(key.as_slice(), v.clone()),
            None => batch.remove(key.as_slice()),
        }
    }
    Ok(db.apply_batch(batch)?)
}

/// Makes sled durable up to now and drops the log segments it covers. Every record in the
/// closed segments is in sled: the flusher applies what it synced before it checkpoints.
fn checkpoint(db: &sled::Db, wal: &mut wal::Wal) -> Result<()> {
    let closed = wal.rotate()?;
    db.flush()?;
    wal.remove_through(closed)?;
    Ok(())
}
