//! End-to-end encryption, server side: the server stores and routes opaque key material and
//! encrypted to-device messages; it never sees plaintext.
//!
//! One file per concern: device identity keys (`device_keys`), one-time and fallback keys
//! (`one_time_keys`), cross-signing keys and signatures (`cross_signing`), the device-list
//! change log that `/sync` and `/keys/changes` read (`device_lists`), the to-device inbox
//! (`to_device`), server-side key backup (`backup`), and the `/sync` hook (`sync`).
//!
//! Key material is stored as the JSON the client uploaded: the server only checks its shape and
//! who owns it, and hands it back unchanged (plus the signatures others made and the server's
//! `unsigned` fields).

mod backup;
mod cross_signing;
mod device_keys;
mod device_lists;
mod one_time_keys;
mod removal;
mod signatures;
pub(crate) mod sync;
mod to_device;

use std::{collections::HashSet, sync::Arc};

use parking_lot::Mutex;

use ruma::{OwnedUserId, UserId};
use serde_json::Value;

pub(crate) use backup::{BackupInfo, BackupKeys, BackupKeysChange};
pub(crate) use cross_signing::SigningKeys;
pub(crate) use device_keys::KeysQuery;
pub(crate) use removal::DeviceKeys;
pub(crate) use to_device::Target;

use crate::{
    error::{Error, Result},
    rooms::RoomService,
    storage::{StorageError, Store, Table},
    stream::Notifier,
    stream::Stream,
};

pub struct E2eeService {
    store: Store,
    stream: Arc<Stream>,
    notifier: Arc<Notifier>,
    /// Held while a claim picks and deletes keys, so two claims never take the same key. Only
    /// the in-memory apply happens under it; the wait for the disk does not. It guards where
    /// each device's next claim starts looking (see [`one_time_keys::ClaimCursors`]).
    claim_lock: Mutex<one_time_keys::ClaimCursors>,
    /// Held while a `sendToDevice` checks and records its transaction id.
    txn_lock: Mutex<()>,
    /// Held while a backup's keys and its record (etag, count) are read and rewritten.
    backup_lock: Mutex<()>,
}

impl E2eeService {
    pub(crate) fn new(store: Store, stream: Arc<Stream>, notifier: Arc<Notifier>) -> Self {
        E2eeService {
            store,
            stream,
            notifier,
            claim_lock: Mutex::default(),
            txn_lock: Mutex::default(),
            backup_lock: Mutex::default(),
        }
    }

    fn get_json(&self, table: Table, key: &[u8]) -> Result<Option<Value>> {
        match self.store.get(table, key)? {
            Some(bytes) => Ok(Some(parse_stored(table, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Wakes the long polls of everyone who shares a room with `user`, and of `user`.
    pub(crate) fn wake_peers(&self, rooms: &RoomService, user: &UserId) -> Result<()> {
        let peers = peers(rooms, user)?;
        self.notifier.wake(peers.iter().map(|u| &**u));
        Ok(())
    }
}

/// `user` and everyone joined to one of `user`'s joined rooms (from the in-memory room cache).
pub(crate) fn peers(rooms: &RoomService, user: &UserId) -> Result<HashSet<OwnedUserId>> {
    let mut out = HashSet::from([user.to_owned()]);
    for room_id in rooms.joined_rooms(user)? {
        out.extend(rooms.room(&room_id)?.joined_members());
    }
    Ok(out)
}

fn parse_stored(table: Table, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::Storage(StorageError::Corrupt {
            table: table.name(),
            detail: e.to_string(),
        })
    })
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialize")
}

/// A copy of a signed object without `signatures` and `unsigned`: what a signature covers, and
/// what must not change when someone uploads a signature for a stored key.
fn signed_part(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signatures");
        o.remove("unsigned");
    }
    v
}
