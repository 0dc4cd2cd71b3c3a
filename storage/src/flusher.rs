//! The store's two background threads. The flusher makes the log durable (group commit); the
//! applier hands what the flusher synced to sled, and checkpoints. See the crate documentation
//! for why it is built so.
//!
//! They are separate so that a sync never waits behind sled: applying 50 ms of writes to sled,
//! and above all flushing sled at a checkpoint, takes milliseconds to hundreds of milliseconds
//! of one core, and every writer waiting for durability would wait that long too.

use std::sync::atomic::Ordering;

use super::{IVec, Inner, Result, wal};

/// Writes on disk but not yet in sled, in log order, as the flusher hands them to the applier.
#[derive(Default)]
pub(super) struct Synced {
    ops: Vec<(Vec<u8>, Option<IVec>)>,
    /// The ticket of the newest batch among `ops`.
    through: u64,
}

/// Syncs the log whenever a writer waits (or, unasked, within 200 ms of a write), covering
/// every batch applied before the sync began, then wakes the writers the sync covered.
///
/// Holds only a weak reference between syncs, so dropping the last [`crate::Store`] closes sled.
pub(super) fn flusher(inner: std::sync::Weak<Inner>) {
    // Taken from the pending log but not yet on disk (only after a failed sync).
    let mut unsynced = Vec::new();
    let mut unsynced_ops = Vec::new();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let asked = strong.flush_wanted.swap(false, Ordering::SeqCst);
        let taken = {
            let mut log = strong.log.lock().expect("log lock");
            if !asked && log.records.is_empty() {
                None
            } else {
                unsynced.append(&mut log.records);
                unsynced_ops.append(&mut log.ops);
                Some(log.applied)
            }
        };
        let Some(target) = taken else {
            drop(strong);
            // A writer sets the flag before unparking, so a wake-up is never lost; the timeout
            // bounds how long an unasked write stays off the disk, and how long a dropped store
            // keeps this thread around.
            std::thread::park_timeout(std::time::Duration::from_millis(200));
            continue;
        };
        let mut wal = strong.wal.lock().expect("wal lock");
        let started = std::time::Instant::now();
        let synced = if unsynced.is_empty() {
            Ok(())
        } else {
            wal.append_durable(&unsynced)
        };
        if let Err(e) = synced {
            // Retried in place, where the retry overwrites whatever part of this append
            // reached the file (see `Wal::append_durable`).
            tracing::error!(error = %e, "log sync failed; writers keep waiting");
            drop(wal);
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
        // Handed over before the log lock is released: a checkpoint rotates the log under that
        // lock, so every record of the segment it closes is then in the applier's hands.
        let wake_applier = {
            let mut synced = strong.synced.lock().expect("synced lock");
            synced.ops.append(&mut unsynced_ops);
            synced.through = target;
            synced.ops.len() >= SLED_APPLY_OPS || (wal.is_full() && !strong.holds.held())
        };
        drop(wal);
        if wake_applier {
            strong.applier.unpark();
        }
        let covered = {
            let mut d = strong.durable.lock().expect("durable lock");
            d.flushed = d.flushed.max(target);
            let later = d.waiting.split_off(&(target + 1));
            std::mem::replace(&mut d.waiting, later)
        };
        for tx in covered.into_values().flatten() {
            let _ = tx.send(());
        }
    }
}

/// Synced writes reach sled after this long or this many operations, whichever comes first:
/// each sled batch costs a disk write of sled's own, so fewer, larger ones are cheaper, and the
/// overlay readers search stays small.
pub(super) const SLED_APPLY_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
const SLED_APPLY_OPS: usize = 8192;

/// Applies what the flusher synced to sled every [`SLED_APPLY_EVERY`] (sooner when
/// much is waiting) and drops it from the overlay; checkpoints the log when its segment is full,
/// unless a backup needs its segments kept (the segment then grows until the backup ends: see
/// [`crate::backup`]).
pub(super) fn applier(inner: std::sync::Weak<Inner>) {
    // Taken from the flusher but not yet in sled (kept across a failed apply).
    let mut unapplied = Vec::new();
    let mut through = 0;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if let Err(e) = apply_synced(&strong, &mut unapplied, &mut through) {
            // Readers still find the writes in the overlay, and the log has them.
            tracing::error!(error = %e, "writing to sled failed; retrying");
        } else if strong.wal.lock().expect("wal lock").is_full()
            && let Err(e) = strong
                .holds
                .checkpoint_unless_held(|| checkpoint(&strong, &mut unapplied, &mut through))
        {
            tracing::error!(error = %e, "log checkpoint failed; the log keeps growing");
        }
        if let Err(e) = zero_ahead(&strong) {
            tracing::warn!(error = %e, "cannot zero-fill the log ahead; syncs grow the file");
        }
        drop(strong);
        std::thread::park_timeout(SLED_APPLY_EVERY);
    }
}

/// Takes what the flusher has synced and applies it to sled, then drops it from the overlay.
fn apply_synced(
    inner: &Inner,
    unapplied: &mut Vec<(Vec<u8>, Option<IVec>)>,
    through: &mut u64,
) -> Result<()> {
    {
        let mut synced = inner.synced.lock().expect("synced lock");
        unapplied.append(&mut synced.ops);
        *through = synced.through;
    }
    if unapplied.is_empty() {
        return Ok(());
    }
    super::apply_to_sled(
        &inner.db,
        unapplied.iter().map(|(k, v)| (k.as_slice(), v.clone())),
    )?;
    // sled has them before the overlay forgets them, so a reader always finds them in one.
    inner
        .overlay
        .remove_applied(*through, unapplied.iter().map(|(k, _)| k.as_slice()));
    unapplied.clear();
    Ok(())
}

/// Makes sled durable up to now and drops the log segments it covers. The log is rotated first,
/// under its lock, so every record of the closed segments has been handed over by the flusher;
/// applying those before flushing sled makes sled hold all of them. The flusher goes on syncing
/// into the new segment meanwhile.
fn checkpoint(
    inner: &Inner,
    unapplied: &mut Vec<(Vec<u8>, Option<IVec>)>,
    through: &mut u64,
) -> Result<()> {
    let closed = inner.wal.lock().expect("wal lock").rotate()?;
    // The new segment's first syncs need zero-filled space before sled's flush below.
    zero_ahead(inner)?;
    apply_synced(inner, unapplied, through)?;
    inner.db.flush()?;
    wal::Wal::remove_through(&inner.wal_dir, closed)?;
    Ok(())
}

/// Keeps zero-filled space ahead of the log's data (see [`wal::Wal::zero_ahead`]): each chunk
/// is written under the log's lock, so a sync waits for one chunk at most, and synced outside
/// it, so no sync waits for that.
fn zero_ahead(inner: &Inner) -> std::io::Result<()> {
    let mut grown = None;
    while let Some(file) = inner.wal.lock().expect("wal lock").zero_ahead()? {
        grown = Some(file);
    }
    match grown {
        Some(file) => file.sync_data(),
        None => Ok(()),
    }
}
