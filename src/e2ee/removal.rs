//! What deleting a device removes from the encryption tables: [`DeviceKeys`] is the
//! [`DeviceData`] the accounts layer is built with.

use ruma::{DeviceId, UserId};

use super::device_lists;
use crate::{
    error::Result,
    storage::{Batch, Key, Store, Table},
    users::DeviceData,
};

/// The encryption layer's part of deleting a device: its identity keys, the signatures on
/// them, its one-time and fallback keys and its to-device inbox go in the device's batch, which
/// is a device-list change.
pub(crate) struct DeviceKeys;

impl DeviceData for DeviceKeys {
    fn drop_device(
        &self,
        store: &Store,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<()> {
        let device_prefix = Key::new()
            .str(user.as_str())
            .str(device.as_str())
            .into_vec();
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

    fn device_list_changed(&self, batch: &mut Batch, pos: u64, user: &UserId) {
        device_lists::record(batch, pos, user);
    }
}
