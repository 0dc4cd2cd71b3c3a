//! The durable side of push delivery: the consumer's stream cursor and each pusher's queue of
//! notifications still to send, both in the `PushGateway` table.
//!
//! A notification is queued in the same batch that moves the cursor past its event, and that
//! batch is waited for, so a restart resumes after the last event whose notifications are on
//! disk: none is lost and none is queued twice. An entry leaves its queue once the gateway
//! answered 2xx, so a crash between that answer and the delete sends that one entry again.

use ruma::{OwnedUserId, UserId, api::client::push::PusherIds};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Store, Table, keys},
    stream::NamedCursor,
};

const CURSOR: &str = "cursor";
const QUEUE: &str = "queue";

/// Which pusher a queue belongs to: the user and the pusher's app id and pushkey.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PusherKey {
    pub user: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
}

impl PusherKey {
    pub fn new(user: &UserId, ids: &PusherIds) -> Self {
        PusherKey {
            user: user.to_owned(),
            app_id: ids.app_id.clone(),
            pushkey: ids.pushkey.clone(),
        }
    }

    pub fn ids(&self) -> PusherIds {
        PusherIds::new(self.pushkey.clone(), self.app_id.clone())
    }

    fn prefix(&self) -> Key {
        Key::new()
            .str(QUEUE)
            .str(self.user.as_str())
            .str(&self.app_id)
            .str(&self.pushkey)
    }
}

/// What a queue entry is about; orders a badge update after an event at the same position.
#[derive(Debug, Clone, Copy)]
pub enum EntryKind {
    Event = 0,
    Badge = 1,
}

/// One queued notification: the `notification` object without `devices` (added at send time
/// from the pusher as it is then), and the tweaks of the event's actions (`None` for a badge
/// update, whose device carries none).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    pub notification: Map<String, Value>,
    #[serde(default)]
    pub tweaks: Option<Map<String, Value>>,
}

/// The consumer's cursor: a position under `cursor`.
pub fn cursor(store: &Store) -> NamedCursor<'_> {
    NamedCursor::new(store, Table::PushGateway, Key::new().str(CURSOR).into_vec())
}

pub fn put_entry(batch: &mut Batch, pusher: &PusherKey, pos: u64, kind: EntryKind, q: &Queued) {
    batch.put(
        Table::PushGateway,
        pusher.prefix().u64(pos).u64(kind as u64),
        serde_json::to_vec(q).expect("notification serializes"),
    );
}

/// The oldest queued entry of the pusher: its storage key and content.
pub fn first(store: &Store, pusher: &PusherKey) -> Result<Option<(Vec<u8>, Queued)>> {
    let Some(entry) = store
        .scan_prefix(Table::PushGateway, &pusher.prefix().into_vec())
        .next()
    else {
        return Ok(None);
    };
    let (k, v) = entry?;
    let queued = serde_json::from_slice(&v)
        .map_err(|e| Error::internal(format!("corrupt push queue entry: {e}")))?;
    Ok(Some((k.to_vec(), queued)))
}

pub async fn remove(store: &Store, key: Vec<u8>) -> Result<()> {
    let mut batch = Batch::new();
    batch.delete(Table::PushGateway, key);
    store.write_durable(batch).await?;
    Ok(())
}

/// Drops everything queued for the pusher (it was deleted or rejected).
pub async fn clear(store: &Store, pusher: &PusherKey) -> Result<()> {
    let mut batch = Batch::new();
    for entry in store.scan_prefix(Table::PushGateway, &pusher.prefix().into_vec()) {
        batch.delete(Table::PushGateway, entry?.0.to_vec());
    }
    if !batch.is_empty() {
        store.write_durable(batch).await?;
    }
    Ok(())
}

/// The pushers with something queued, for the senders started at boot.
pub fn queued_pushers(store: &Store) -> Result<Vec<PusherKey>> {
    let prefix = Key::new().str(QUEUE).into_vec();
    let mut out: Vec<PusherKey> = Vec::new();
    for entry in store.scan_prefix(Table::PushGateway, &prefix) {
        let (k, _) = entry?;
        let mut parts = keys::str_parts(&k[prefix.len()..]);
        let (Some(user), Some(app_id), Some(pushkey)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(user) = UserId::parse(user) else {
            continue;
        };
        let key = PusherKey {
            user,
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
        };
        if out.last() != Some(&key) {
            out.push(key);
        }
    }
    Ok(out)
}
