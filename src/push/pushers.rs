//! Pushers: where a user's devices want push notifications sent. Stored and listed here;
//! `gateway/` delivers to the `http` ones.
//!
//! Each stored pusher also carries `pushkey_ts` (seconds, when it was last set), which the push
//! gateway receives. The gateway consumer asks for every event whether a room member has an
//! `http` pusher at all, so the set of such users is kept in memory, rebuilt after any change.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::RwLock;
use ruma::{
    OwnedUserId, UserId,
    api::client::push::{Pusher, PusherIds, PusherKind},
};

use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Store, Table, keys},
};

pub struct PusherStore {
    store: Store,
    /// Users with at least one `http` pusher (`None` until first asked or after a change), and
    /// a generation moved by every change, so a scan that raced a change is not kept.
    http_users: RwLock<(u64, Option<Arc<HashSet<OwnedUserId>>>)>,
}

/// A stored pusher with when it was last set.
pub struct StoredPusher {
    pub pusher: Pusher,
    /// Seconds since the epoch; 0 for pushers stored before the time was kept.
    pub pushkey_ts: u64,
    /// The stream position when it was set: only later events are pushed to it (as Synapse
    /// does), so a new device is not sent what happened before it asked.
    pub since_pos: u64,
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
        PusherStore {
            store,
            http_users: RwLock::default(),
        }
    }

    pub fn list(&self, user: &UserId) -> Result<Vec<Pusher>> {
        Ok(self
            .list_stored(user)?
            .into_iter()
            .map(|p| p.pusher)
            .collect())
    }

    pub fn list_stored(&self, user: &UserId) -> Result<Vec<StoredPusher>> {
        let prefix = Key::new().str(user.as_str()).into_vec();
        self.store
            .scan_prefix(Table::Pushers, &prefix)
            .map(|entry| decode(&entry?.1))
            .collect()
    }

    /// The user's pusher with these ids, if it still exists.
    pub fn get(&self, user: &UserId, ids: &PusherIds) -> Result<Option<StoredPusher>> {
        self.store
            .get(Table::Pushers, &key(user, ids))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// The users who have at least one `http` pusher.
    pub fn http_users(&self) -> Result<Arc<HashSet<OwnedUserId>>> {
        let generation = {
            let cached = self.http_users.read();
            if let Some(users) = &cached.1 {
                return Ok(users.clone());
            }
            cached.0
        };
        let mut users = HashSet::new();
        for entry in self.store.scan_prefix(Table::Pushers, &[]) {
            let (k, v) = entry?;
            let Some(user) = keys::str_parts(&k).next() else {
                continue;
            };
            if matches!(decode(&v)?.pusher.kind, PusherKind::Http(_))
                && let Ok(user) = UserId::parse(user)
            {
                users.insert(user);
            }
        }
        let users = Arc::new(users);
        let mut cached = self.http_users.write();
        if cached.0 == generation {
            cached.1 = Some(users.clone());
        }
        Ok(users)
    }

    fn forget_http_users(&self) {
        let mut cached = self.http_users.write();
        *cached = (cached.0 + 1, None);
    }

    /// Adds or replaces the user's pusher with this app id and pushkey, to receive events
    /// after stream position `since_pos`. Without `append`, the same app id and pushkey
    /// registered by other users go (a device changed hands), as the spec says.
    pub async fn set(
        &self,
        user: &UserId,
        pusher: &Pusher,
        append: bool,
        since_pos: u64,
    ) -> Result<()> {
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
        let mut value = serde_json::to_value(pusher).expect("pusher serializes");
        value["pushkey_ts"] = now_secs().into();
        value["since_pos"] = since_pos.into();
        let value = serde_json::to_vec(&value).expect("pusher serializes");
        batch.put(Table::Pushers, key(user, &pusher.ids), value);
        batch.put(
            Table::PusherKeys,
            Key::from_vec(ids_key(&pusher.ids)).str(user.as_str()),
            Vec::new(),
        );
        self.store.write_durable(batch).await?;
        self.forget_http_users();
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
        self.forget_http_users();
        Ok(())
    }
}

fn decode(v: &[u8]) -> Result<StoredPusher> {
    let corrupt = |e: serde_json::Error| Error::internal(format!("corrupt pusher: {e}"));
    let value: serde_json::Value = serde_json::from_slice(v).map_err(corrupt)?;
    let pushkey_ts = value["pushkey_ts"].as_u64().unwrap_or(0);
    let since_pos = value["since_pos"].as_u64().unwrap_or(0);
    Ok(StoredPusher {
        pusher: serde_json::from_value(value).map_err(corrupt)?,
        pushkey_ts,
        since_pos,
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
