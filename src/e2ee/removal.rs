//! What deleting a device removes from the encryption tables.

use ruma::UserId;

use super::device_lists;
use crate::{
    error::Result,
    storage::{Batch, Key, Store, Table},
};

/// Adds to `batch` the removal of a device's identity keys, the signatures on them, its
/// one-time and fallback keys and its to-device inbox. The caller commits the batch with
/// [`record_device_list_change`] so the user's contacts stop encrypting for the device.
///
/// A free function over the store so that `UserService::delete_devices` can put it in the
/// same batch as the device's own deletion.
pub fn drop_device(store: &Store, batch: &mut Batch, user: &UserId, device: &str) -> Result<()> {
    let device_prefix = Key::new().str(user.as_str()).str(device).into_vec();
    batch.delete(Table::DeviceKeys, device_prefix.clone());
    for table in [
        Table::OneTimeKeys,
        Table::FallbackKeys,
        Table::ToDeviceInbox,
        Table::KeySignatures,
    ] {
        for entry in store.scan_prefix(table, &device_prefix) {
            batch.delete(table, entry?.0.to_vec());
        }
    }
    Ok(())
}

/// Records in `batch` (committed at `pos`) that `user`'s device list changed.
pub fn record_device_list_change(batch: &mut Batch, pos: u64, user: &UserId) {
    device_lists::record(batch, pos, user);
}
