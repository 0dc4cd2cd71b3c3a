//! A pusher's durable state and what its two halves share.
//!
//! One record per appservice in the `AppserviceState` table: the cursor (everything up to it
//! was acknowledged or is of no interest), the next transaction id and the prepared
//! transactions, oldest first. Each transaction's body is stored once under its own key
//! ([`body_key`]) rather than rewritten with every change of the record.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::Notify;

use crate::{
    appservice::AppService,
    error::{Error, Result},
    storage::{Batch, Key, Store, Table, WriteTicket},
};

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PusherState {
    /// Everything up to here was acknowledged (or of no interest).
    pub cursor: u64,
    pub next_txn: u64,
    /// Prepared transactions, oldest first; the first is the one to send.
    #[serde(default, deserialize_with = "one_or_many")]
    pub pending: Vec<PendingTxn>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PendingTxn {
    pub txn_id: u64,
    pub upto: u64,
    /// Stored once under its own key ([`body_key`]), not rewritten with every change of the
    /// state; read inline only from states written before that.
    #[serde(default, skip_serializing)]
    pub body: String,
}

/// What the two halves share. The lock is never held across an await.
pub(super) struct Shared {
    pub state: Mutex<PusherState>,
    /// Whether a state was stored (else this is a new registration).
    pub stored: bool,
    /// The newest transaction id known to be on disk: the sender sends nothing newer.
    pub durable_txn: AtomicU64,
    /// A transaction became durable (wakes the sender).
    pub prepared: Notify,
    /// A transaction was acknowledged (wakes a preparer waiting for room in the queue).
    pub acked: Notify,
}

impl Shared {
    /// The stored state, or a new registration's.
    pub fn new(stored: Option<PusherState>) -> Self {
        let was_stored = stored.is_some();
        let state = match stored {
            Some(state) => state,
            None => PusherState {
                cursor: 0,
                next_txn: 1,
                pending: Vec::new(),
            },
        };
        Shared {
            // Whatever was loaded is on disk.
            durable_txn: AtomicU64::new(state.pending.last().map_or(0, |t| t.txn_id)),
            stored: was_stored,
            state: Mutex::new(state),
            prepared: Notify::new(),
            acked: Notify::new(),
        }
    }

    /// Changes the state and writes it with whatever else `change` adds to the batch, in one
    /// step under the lock so that writes reach the store in the order the changes were made.
    pub fn update<T>(
        &self,
        store: &Store,
        asv: &AppService,
        change: impl FnOnce(&mut PusherState, &mut Batch) -> T,
    ) -> Result<(T, WriteTicket)> {
        let mut state = self.state.lock();
        let mut batch = Batch::new();
        let out = change(&mut state, &mut batch);
        batch.put(
            Table::AppserviceState,
            asv.id().as_bytes().to_vec(),
            serde_json::to_vec(&*state).expect("state serializes"),
        );
        Ok((out, store.write(batch)?))
    }

    pub fn queued(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// Queues a transaction of `body` covering the stream up to `upto`: its id and the ticket
    /// of its write. The sender sends it once [`Shared::made_durable`] says it is on disk.
    pub fn prepare(
        &self,
        store: &Store,
        asv: &AppService,
        upto: u64,
        body: String,
    ) -> Result<(u64, WriteTicket)> {
        self.update(store, asv, |state, batch| {
            let txn_id = state.next_txn;
            state.next_txn += 1;
            batch.put(
                Table::AppserviceState,
                body_key(asv, txn_id),
                body.as_bytes().to_vec(),
            );
            state.pending.push(PendingTxn { txn_id, upto, body });
            txn_id
        })
    }

    /// The transaction `txn_id` (and every one before it) is on disk: the sender may send it.
    pub fn made_durable(&self, txn_id: u64) {
        self.durable_txn.store(txn_id, Ordering::SeqCst);
        self.prepared.notify_one();
    }

    /// The oldest prepared transaction, if it is on disk.
    pub fn front(&self) -> Option<PendingTxn> {
        let state = self.state.lock();
        state
            .pending
            .first()
            .filter(|t| t.txn_id <= self.durable_txn.load(Ordering::SeqCst))
            .cloned()
    }

    /// The appservice acknowledged `txn`: it leaves the queue and the cursor passes it. Not
    /// waited for: if the acknowledgement is lost in a crash, the same transaction is sent
    /// again and the appservice recognises its txnId.
    pub fn acknowledge(&self, store: &Store, asv: &AppService, txn: &PendingTxn) -> Result<()> {
        let _not_awaited = self.update(store, asv, |state, batch| {
            batch.delete(Table::AppserviceState, body_key(asv, txn.txn_id));
            state.pending.retain(|t| t.txn_id != txn.txn_id);
            state.cursor = state.cursor.max(txn.upto);
        })?;
        self.acked.notify_one();
        Ok(())
    }
}

/// Reads `pending` as stored now (a list) or as stored before transactions were prepared
/// ahead (one or none).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<PendingTxn>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Many(Vec<PendingTxn>),
        One(PendingTxn),
    }
    Ok(match Option::<Stored>::deserialize(d)? {
        None => Vec::new(),
        Some(Stored::Many(list)) => list,
        Some(Stored::One(txn)) => vec![txn],
    })
}

fn corrupt(detail: String) -> Error {
    Error::internal(format!("corrupt appservice state: {detail}"))
}

/// The appservice's stored state without the bodies of its transactions (for operators).
pub(super) fn record(store: &Store, asv: &AppService) -> Result<Option<PusherState>> {
    let Some(v) = store.get(Table::AppserviceState, asv.id().as_bytes())? else {
        return Ok(None);
    };
    serde_json::from_slice(&v).map_err(|e| corrupt(e.to_string()))
}

/// The appservice's stored state, with the bodies of its prepared transactions.
pub(super) fn load(store: &Store, asv: &AppService) -> Result<Option<PusherState>> {
    let Some(mut state) = record(store, asv)? else {
        return Ok(None);
    };
    for txn in state.pending.iter_mut().filter(|t| t.body.is_empty()) {
        let body = store
            .get(Table::AppserviceState, &body_key(asv, txn.txn_id))?
            .ok_or_else(|| corrupt(format!("transaction {} has no body", txn.txn_id)))?;
        txn.body = String::from_utf8(body.to_vec()).map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(Some(state))
}

/// Adds to `batch` a fresh pusher state for the appservice `id`, whose pusher starts after
/// stream position `cursor`, over whatever an earlier one of that id left (bodies included).
pub(super) fn fresh(store: &Store, id: &str, cursor: u64, batch: &mut Batch) -> Result<()> {
    forget(store, id, batch)?;
    let state = PusherState {
        cursor,
        next_txn: 1,
        pending: Vec::new(),
    };
    batch.put(
        Table::AppserviceState,
        id.as_bytes().to_vec(),
        serde_json::to_vec(&state).map_err(|e| Error::internal(e.to_string()))?,
    );
    Ok(())
}

/// Adds to `batch` the deletion of the pusher state of the appservice `id`, bodies included.
pub(super) fn forget(store: &Store, id: &str, batch: &mut Batch) -> Result<()> {
    batch.delete(Table::AppserviceState, id.as_bytes().to_vec());
    let bodies = Key::new().str(id).into_vec();
    for entry in store.scan_prefix(Table::AppserviceState, &bodies) {
        let (key, _) = entry?;
        batch.delete(Table::AppserviceState, key.to_vec());
    }
    Ok(())
}

/// Where a prepared transaction's body is stored, next to the state.
fn body_key(asv: &AppService, txn_id: u64) -> Vec<u8> {
    Key::new().str(asv.id()).u64(txn_id).into_vec()
}
