//! Read receipts (`m.read`, `m.read.private`, threaded or not), durable like events.
//!
//! Two tables: `Receipts` holds each user's current receipt per room, kind and thread (what an
//! initial sync sends, and where unread counts start); `ReceiptLog` holds every change under
//! its room and stream position, so an incremental sync reads only the changes after its token.
//! A receipt never moves backwards: one for an event older than the current one is ignored, as
//! Synapse does, so a slow client cannot resurrect read messages as unread.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::{Mutex, RwLock};
use ruma::{EventId, OwnedEventId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    rooms::RoomMeta,
    storage::{Batch, Key, Store, Table, keys},
    stream::Notifier,
    stream::Stream,
};

/// The receipt types the server stores (`m.fully_read` is room account data instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum ReceiptKind {
    #[serde(rename = "m.read")]
    Read,
    #[serde(rename = "m.read.private")]
    ReadPrivate,
}

impl ReceiptKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Read => "m.read",
            ReceiptKind::ReadPrivate => "m.read.private",
        }
    }
}

/// A user's current receipt of one kind and thread in a room.
#[derive(Debug, Serialize, Deserialize)]
struct Current {
    event_id: OwnedEventId,
    event_pos: u64,
    ts: u64,
}

/// One receipt change, under its room and stream position.
#[derive(Debug, Serialize, Deserialize)]
struct Change {
    kind: ReceiptKind,
    user: OwnedUserId,
    /// Empty for an unthreaded receipt.
    thread: String,
    event_id: OwnedEventId,
    ts: u64,
}

pub struct ReceiptService {
    store: Store,
    stream: Arc<Stream>,
    notifier: Arc<Notifier>,
    /// Room short id → position of its last receipt change; filled lazily from the log, so an
    /// incremental sync skips rooms without new receipts in memory.
    last_change: RwLock<HashMap<u64, u64>>,
    /// Serializes the check-then-write of receipts (never held across the flush).
    write: Mutex<()>,
}

fn current_key(room: u64, kind: ReceiptKind, user: &UserId, thread: &str) -> Vec<u8> {
    Key::new()
        .u64(room)
        .str(kind.as_str())
        .str(user.as_str())
        .str(thread)
        .into_vec()
}

impl ReceiptService {
    pub(crate) fn new(store: Store, stream: Arc<Stream>, notifier: Arc<Notifier>) -> Self {
        ReceiptService {
            store,
            stream,
            notifier,
            last_change: RwLock::default(),
            write: Mutex::new(()),
        }
    }

    /// Records `user`'s receipt for the event at `event_pos`; `thread` is `None` for an
    /// unthreaded receipt. The caller checked membership and that the event is in the room.
    pub(crate) async fn set(
        &self,
        room: &RoomMeta,
        user: &UserId,
        kind: ReceiptKind,
        thread: Option<&str>,
        event_id: &EventId,
        event_pos: u64,
    ) -> Result<()> {
        let thread = thread.unwrap_or("");
        let key = current_key(room.short, kind, user, thread);
        let ts = now_ms();
        let pending = {
            let _write = self.write.lock();
            if let Some(old) = self.store.get(Table::Receipts, &key)? {
                let old: Current = decode(&old)?;
                if old.event_pos >= event_pos {
                    return Ok(());
                }
            }
            let current = Current {
                event_id: event_id.to_owned(),
                event_pos,
                ts,
            };
            let change = Change {
                kind,
                user: user.to_owned(),
                thread: thread.to_owned(),
                event_id: event_id.to_owned(),
                ts,
            };
            let pending = self.stream.apply(|pos| {
                let mut batch = Batch::new();
                batch.put(Table::Receipts, key, encode(&current));
                batch.put(
                    Table::ReceiptLog,
                    Key::new().u64(room.short).u64(pos),
                    encode(&change),
                );
                batch
            })?;
            // Before the position turns visible: a sync that sees it must find the room.
            self.last_change.write().insert(room.short, pending.pos);
            pending
        };
        self.stream.finish(pending).await?;
        match kind {
            ReceiptKind::Read => {
                let mut receipt = json!({ "ts": ts });
                if !thread.is_empty() {
                    receipt["thread_id"] = thread.into();
                }
                let event = json!({
                    "type": "m.receipt",
                    "room_id": room.room_id,
                    "content": { event_id.as_str(): { "m.read": { user.as_str(): receipt } } },
                });
                self.notifier.publish_edu(Some(room.room_id.clone()), event);
                self.notifier
                    .wake(room.joined_members().iter().map(|u| &**u))
            }
            ReceiptKind::ReadPrivate => self.notifier.wake([user]),
        }
        Ok(())
    }

    /// Position of the room's last receipt change.
    pub(crate) fn last_change(&self, room: u64) -> Result<u64> {
        if let Some(pos) = self.last_change.read().get(&room) {
            return Ok(*pos);
        }
        let prefix = Key::new().u64(room).into_vec();
        let pos = self
            .store
            .last_with_prefix(Table::ReceiptLog, &prefix)?
            .map_or(0, |(k, _)| keys::trailing_u64(&k));
        self.last_change.write().entry(room).or_insert(pos);
        Ok(pos)
    }

    /// Where the user's unread messages start: the position of the newest event their main
    /// timeline receipts (public or private, unthreaded or `main`) point at.
    pub(crate) fn read_up_to(&self, room: u64, user: &UserId) -> Result<u64> {
        let mut pos = 0;
        for kind in [ReceiptKind::Read, ReceiptKind::ReadPrivate] {
            for thread in ["", "main"] {
                if let Some(v) = self
                    .store
                    .get(Table::Receipts, &current_key(room, kind, user, thread))?
                {
                    pos = pos.max(decode::<Current>(&v)?.event_pos);
                }
            }
        }
        Ok(pos)
    }

    /// The position each of the user's receipts in the room points at, by thread (`""` for the
    /// unthreaded one), public or private, whichever is newer.
    pub(crate) fn read_up_to_by_thread(
        &self,
        room: u64,
        user: &UserId,
    ) -> Result<BTreeMap<String, u64>> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for kind in [ReceiptKind::Read, ReceiptKind::ReadPrivate] {
            let prefix = Key::new()
                .u64(room)
                .str(kind.as_str())
                .str(user.as_str())
                .into_vec();
            for entry in self.store.scan_prefix(Table::Receipts, &prefix) {
                let (k, v) = entry?;
                let thread = keys::str_parts(&k[prefix.len()..])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let pos = decode::<Current>(&v)?.event_pos;
                let slot = out.entry(thread).or_default();
                *slot = (*slot).max(pos);
            }
        }
        Ok(out)
    }

    /// The `m.receipt` event `viewer` gets for the room: receipts changed in `(since, head]`,
    /// or all current ones for an initial sync. `None` when there is nothing to send.
    pub(crate) fn receipt_event(
        &self,
        room: u64,
        viewer: &UserId,
        since: Option<u64>,
        head: u64,
    ) -> Result<Option<Value>> {
        // (kind, user, thread) → (event, ts): the latest change of each wins.
        let mut latest: BTreeMap<(ReceiptKind, OwnedUserId, String), (OwnedEventId, u64)> =
            BTreeMap::new();
        let visible =
            |kind: ReceiptKind, user: &UserId| kind == ReceiptKind::Read || user == viewer;
        match since {
            Some(since) => {
                if self.last_change(room)? <= since {
                    return Ok(None);
                }
                let from = Key::new().u64(room).u64(since + 1).into_vec();
                let to = Key::new().u64(room).u64(head.saturating_add(1)).into_vec();
                for entry in self.store.range(Table::ReceiptLog, &from, &to) {
                    let (_, v) = entry?;
                    let c: Change = decode(&v)?;
                    if visible(c.kind, &c.user) {
                        latest.insert((c.kind, c.user, c.thread), (c.event_id, c.ts));
                    }
                }
            }
            None => {
                let prefix = Key::new().u64(room).into_vec();
                for entry in self.store.scan_prefix(Table::Receipts, &prefix) {
                    let (k, v) = entry?;
                    let mut parts = keys::str_parts(&k[prefix.len()..]);
                    let (Some(kind), Some(user), Some(thread)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let kind = match kind {
                        "m.read" => ReceiptKind::Read,
                        _ => ReceiptKind::ReadPrivate,
                    };
                    let Ok(user) = UserId::parse(user) else {
                        continue;
                    };
                    if visible(kind, &user) {
                        let c: Current = decode(&v)?;
                        latest.insert((kind, user, thread.to_owned()), (c.event_id, c.ts));
                    }
                }
            }
        }
        if latest.is_empty() {
            return Ok(None);
        }
        let mut content: BTreeMap<String, BTreeMap<&str, BTreeMap<String, Value>>> =
            BTreeMap::new();
        for ((kind, user, thread), (event_id, ts)) in latest {
            let mut receipt = json!({ "ts": ts });
            if !thread.is_empty() {
                receipt["thread_id"] = thread.into();
            }
            content
                .entry(event_id.to_string())
                .or_default()
                .entry(kind.as_str())
                .or_default()
                .insert(user.to_string(), receipt);
        }
        Ok(Some(json!({ "type": "m.receipt", "content": content })))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("receipts serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt receipt: {e}")))
}
