//! Pushers: where a user's devices want push notifications sent. Stored and listed; delivery
//! to push gateways is not built yet.

use ruma::{
    UserId,
    api::client::push::{Pusher, PusherIds},
};

use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Store, Table, keys},
};

pub struct PusherStore {
    store: Store,
}

fn key(user: &UserId, ids: &PusherIds) -> Vec<u8> {
    Key::new()
        .str(user.as_str())
        .str(&ids.app_id)
        .str(&ids.pushkey)
        .into_vec()
}

fn ids_key(ids: &PusherIds) -> Vec<u8> {
    Key::new().str(&ids.app_id).str(&ids.pushkey).into_vec()
}

impl PusherStore {
    pub fn new(store: Store) -> Self {
        PusherStore { store }
    }

    pub fn list(&self, user: &UserId) -> Result<Vec<Pusher>> {
        let prefix = Key::new().str(user.as_str()).into_vec();
        self.store
            .scan_prefix(Table::Pushers, &prefix)
            .map(|entry| {
                let (_, v) = entry?;
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt pusher: {e}")))
            })
            .collect()
    }

    /// Adds or replaces the user's pusher with this app id and pushkey. Without `append`, the
    /// same app id and pushkey registered by other users go (a device changed hands), as the
    /// spec says.
    pub async fn set(&self, user: &UserId, pusher: &Pusher, append: bool) -> Result<()> {
        let mut batch = Batch::new();
        if !append {
            let prefix = ids_key(&pusher.ids);
            for entry in self.store.scan_prefix(Table::PusherKeys, &prefix) {
                let (k, _) = entry?;
                let other = keys::str_parts(&k[prefix.len()..])
                    .next()
                    .unwrap_or_default();
                if other != user.as_str()
                    && let Ok(other) = UserId::parse(other)
                {
                    batch.delete(Table::Pushers, key(&other, &pusher.ids));
                    batch.delete(Table::PusherKeys, k.to_vec());
                }
            }
        }
        let value = serde_json::to_vec(pusher).expect("pusher serializes");
        batch.put(Table::Pushers, key(user, &pusher.ids), value);
        batch.put(
            Table::PusherKeys,
            Key::from_vec(ids_key(&pusher.ids)).str(user.as_str()),
            Vec::new(),
        );
        self.store.write_durable(batch).await?;
        Ok(())
    }

    pub async fn delete(&self, user: &UserId, ids: &PusherIds) -> Result<()> {
        let mut batch = Batch::new();
        batch.delete(Table::Pushers, key(user, ids));
        batch.delete(
            Table::PusherKeys,
            Key::from_vec(ids_key(ids)).str(user.as_str()),
        );
        self.store.write_durable(batch).await?;
        Ok(())
    }
}
