//! Devices: one per login, each holding the access token it was given.

use ruma::{DeviceId, OwnedDeviceId, UserId};
use serde::{Deserialize, Serialize};

use super::{UserService, tokens};
use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Store, Table},
};

/// What other services keep per device (its encryption keys, its to-device inbox), removed in
/// the batch that deletes the device, so a deleted device leaves nothing behind, also after a
/// crash. `e2ee` implements it and the composition root hands it to [`UserService::new`]: the
/// accounts layer calls the encryption layer without depending on it.
pub(crate) trait DeviceData: Send + Sync {
    /// Adds to `batch` the removal of everything kept for `device`.
    fn drop_device(
        &self,
        store: &Store,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<()>;

    /// Records in `batch`, committed at stream position `pos`, that `user`'s device list
    /// changed (their contacts stop encrypting for the deleted devices).
    fn device_list_changed(&self, batch: &mut Batch, pos: u64, user: &UserId);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Device {
    pub device_id: OwnedDeviceId,
    #[serde(default)]
    pub display_name: Option<String>,
    /// SHA-256 (hex) of the device's access token (`tokens`): the token is never stored.
    #[serde(default)]
    pub token_hash: String,
    /// The token itself, as stores from before token hashing kept it; read once, by the
    /// migration, and never written.
    #[serde(default, rename = "access_token", skip_serializing)]
    pub(super) legacy_token: Option<String>,
    #[serde(default)]
    pub last_seen_ts: Option<u64>,
    #[serde(default)]
    pub last_seen_ip: Option<String>,
}

impl UserService {
    pub(crate) fn devices(&self, user: &UserId) -> Result<Vec<Device>> {
        let prefix = Key::new().str(user.as_str()).into_vec();
        self.store
            .scan_prefix(Table::Devices, &prefix)
            .map(|e| {
                let (_, v) = e?;
                serde_json::from_slice(&v).map_err(|e| Error::internal(e.to_string()))
            })
            .collect()
    }

    pub(crate) fn device(&self, user: &UserId, device: &DeviceId) -> Result<Option<Device>> {
        let key = Key::new()
            .str(user.as_str())
            .str(device.as_str())
            .into_vec();
        match self.store.get(Table::Devices, &key)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| Error::internal(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    pub(crate) async fn rename_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        name: Option<String>,
    ) -> Result<()> {
        let mut record = self
            .device(user, device)?
            .ok_or_else(|| Error::not_found("Device not found"))?;
        record.display_name = name;
        let mut batch = Batch::new();
        batch.put(
            Table::Devices,
            Key::new().str(user.as_str()).str(device.as_str()),
            serde_json::to_vec(&record).expect("serializes"),
        );
        self.store.write_durable(batch).await?;
        Ok(())
    }

    /// Deletes devices and revokes their tokens, in one batch. Unknown devices are ignored, as
    /// the spec's `/delete_devices` allows. The devices' encryption keys and to-device inboxes
    /// go in the same batch, which is a device-list change (a stream position).
    pub(crate) async fn delete_devices(
        &self,
        user: &UserId,
        devices: &[OwnedDeviceId],
    ) -> Result<()> {
        let mut batch = Batch::new();
        let mut revoked = Vec::new();
        for device in devices {
            if let Some(record) = self.device(user, device)? {
                if let Some(hash) = tokens::from_hex(&record.token_hash) {
                    batch.delete(Table::Tokens, tokens::key(&hash));
                    revoked.push(hash);
                }
                batch.delete(
                    Table::Devices,
                    Key::new().str(user.as_str()).str(device.as_str()),
                );
                self.device_data
                    .drop_device(&self.store, &mut batch, user, device)?;
            }
        }
        if !batch.is_empty() {
            let committed = self
                .stream
                .commit(|pos| {
                    self.device_data.device_list_changed(&mut batch, pos, user);
                    batch
                })
                .await;
            // Also after a failed wait: the deletion may be applied in memory already.
            self.tokens.invalidate(revoked.iter());
            committed?;
            self.notifier.wake([user]);
        }
        Ok(())
    }
}
