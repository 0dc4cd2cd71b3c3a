//! The to-device inbox: `sendToDevice` stores one message per target device at a stream
//! position; `/sync` hands a device its messages in order, a batch at a time, and deletes them
//! once a later sync's token shows they arrived.

use std::collections::BTreeMap;

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use super::{E2eeService, to_bytes};
use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Table, keys},
    users::{Identity, UserService},
};

/// The most messages one sync delivers.
pub(crate) const MAX_PER_SYNC: usize = 100;
/// How long a retried transaction waits for its first attempt to be durable.
const TXN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a message goes: one device, or all of the user's devices (`*`).
pub(crate) enum Target {
    Device(OwnedDeviceId),
    AllDevices,
}

fn inbox_key(user: &UserId, device: &DeviceId, pos: u64) -> Vec<u8> {
    Key::new()
        .str(user.as_str())
        .str(device.as_str())
        .u64(pos)
        .into_vec()
}

impl E2eeService {
    /// `PUT /sendToDevice/{type}/{txnId}`: the messages for this server's users. A
    /// transaction id already used by this device is answered without sending again. Messages
    /// for unknown devices are dropped; those for other servers' users are the caller's (the
    /// federation sends them).
    pub(crate) async fn send_to_device(
        &self,
        users: &UserService,
        who: &Identity,
        event_type: &str,
        txn_id: &str,
        messages: Vec<(OwnedUserId, Target, Value)>,
    ) -> Result<()> {
        let sent_by = (&*who.user_id, who.device_id.as_str());
        self.deliver_to_devices(users, sent_by, event_type, txn_id, messages)
            .await
    }

    /// Messages another server's user sent to users of this one (`m.direct_to_device`); a
    /// `message_id` already delivered is not delivered again.
    pub(crate) async fn receive_remote_to_device(
        &self,
        users: &UserService,
        sender: &UserId,
        event_type: &str,
        message_id: &str,
        messages: Vec<(OwnedUserId, Target, Value)>,
    ) -> Result<()> {
        self.deliver_to_devices(users, (sender, ""), event_type, message_id, messages)
            .await
    }

    /// Stores each message in its devices' inboxes, once per `(sender, device, txn_id)`.
    async fn deliver_to_devices(
        &self,
        users: &UserService,
        (sender, sender_device): (&UserId, &str),
        event_type: &str,
        txn_id: &str,
        messages: Vec<(OwnedUserId, Target, Value)>,
    ) -> Result<()> {
        // Resolve targets before taking the lock: one event per (user, device).
        let mut deliveries: BTreeMap<(OwnedUserId, OwnedDeviceId), Vec<u8>> = BTreeMap::new();
        for (user, target, content) in messages {
            if !content.is_object() {
                return Err(Error::bad_json("to-device content must be an object"));
            }
            if user.server_name() != users.server_name {
                continue;
            }
            let devices: Vec<OwnedDeviceId> = users
                .devices(&user)?
                .into_iter()
                .map(|d| d.device_id)
                .filter(|d| match &target {
                    Target::AllDevices => true,
                    Target::Device(wanted) => d == wanted,
                })
                .collect();
            let event = json!({ "sender": sender, "type": event_type, "content": content });
            for device in devices {
                deliveries.insert((user.clone(), device), to_bytes(&event));
            }
        }
        let txn_key = Key::new()
            .str(sender.as_str())
            .str(sender_device)
            .str(txn_id)
            .into_vec();
        let pending = {
            let _guard = self.txn_lock.lock();
            if let Some(first) = self.store.get(Table::ToDeviceTxns, &txn_key)? {
                // A retry: answered once the first attempt is durable (it records its position;
                // records from before that are durable already).
                drop(_guard);
                if first.len() == 8
                    && !self
                        .stream
                        .wait_visible(keys::decode_u64(&first), TXN_WAIT)
                        .await
                {
                    return Err(Error::internal(
                        "the transaction's first attempt is not durable yet",
                    ));
                }
                return Ok(());
            }
            self.stream.apply(|pos| {
                let mut batch = Batch::new();
                batch.put(Table::ToDeviceTxns, txn_key, pos.to_be_bytes().to_vec());
                for ((user, device), event) in &deliveries {
                    batch.put(
                        Table::ToDeviceInbox,
                        inbox_key(user, device, pos),
                        event.clone(),
                    );
                }
                batch
            })?
        };
        self.stream.finish(pending).await?;
        let recipients: Vec<&UserId> = deliveries.keys().map(|(u, _)| &**u).collect();
        self.notifier.wake(recipients);
        Ok(())
    }

    /// Deletes the device's messages up to `acknowledged`, then returns the next ones up to
    /// `head` (at most [`MAX_PER_SYNC`]) with the position of the last one.
    pub(crate) fn to_device_batch(
        &self,
        user: &UserId,
        device: &DeviceId,
        acknowledged: u64,
        head: u64,
    ) -> Result<(Vec<Box<RawJsonValue>>, Option<u64>)> {
        let start = inbox_key(user, device, 0);
        if acknowledged > 0 {
            let end = inbox_key(user, device, acknowledged.saturating_add(1));
            let mut batch = Batch::new();
            for entry in self.store.range(Table::ToDeviceInbox, &start, &end) {
                batch.delete(Table::ToDeviceInbox, entry?.0.to_vec());
            }
            if !batch.is_empty() {
                // Not awaited: a crash before the flush only delivers them once more, and
                // clients drop to-device messages they already processed.
                let _ticket = self.store.write(batch)?;
            }
        }
        let from = inbox_key(user, device, acknowledged.saturating_add(1));
        let to = inbox_key(user, device, head.saturating_add(1));
        let mut events = Vec::new();
        let mut last = None;
        for entry in self
            .store
            .range(Table::ToDeviceInbox, &from, &to)
            .take(MAX_PER_SYNC)
        {
            let (k, v) = entry?;
            let raw = String::from_utf8(v.to_vec())
                .ok()
                .and_then(|s| RawJsonValue::from_string(s).ok())
                .ok_or_else(|| Error::internal("corrupt to-device message"))?;
            events.push(raw);
            last = Some(keys::trailing_u64(&k));
        }
        Ok((events, last))
    }
}
