//! Account data (global and per room) and stored sync filters.
//!
//! Account data changes take a stream position like room events, so `/sync` finds what changed
//! since its token by comparing positions; a user has few entries, so reading them all is cheap.

use ruma::{RoomId, UserId, api::client::filter::FilterDefinition};
use serde_json::value::RawValue as RawJsonValue;

use super::UserService;
use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Table, keys},
};

/// One account data entry with the position of its last change.
#[derive(Debug)]
pub(crate) struct AccountDataChange {
    pub room_id: Option<ruma::OwnedRoomId>,
    pub kind: String,
    pub content: Box<RawJsonValue>,
    pub pos: u64,
}

fn key(user: &UserId, room: Option<&RoomId>, kind: &str) -> Vec<u8> {
    Key::new()
        .str(user.as_str())
        .str(room.map(|r| r.as_str()).unwrap_or(""))
        .str(kind)
        .into_vec()
}

impl UserService {
    /// Stores an account data entry and wakes the user's syncs.
    pub(crate) async fn set_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: &RawJsonValue,
    ) -> Result<()> {
        let k = key(user, room, kind);
        self.stream
            .commit(|pos| {
                let mut value = pos.to_be_bytes().to_vec();
                value.extend_from_slice(content.get().as_bytes());
                let mut batch = Batch::new();
                batch.put(Table::AccountData, k, value);
                batch
            })
            .await?;
        self.notifier.wake([user]);
        Ok(())
    }

    pub(crate) fn account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<Box<RawJsonValue>>> {
        match self.store.get(Table::AccountData, &key(user, room, kind))? {
            Some(v) => Ok(Some(parse_content(&v)?)),
            None => Ok(None),
        }
    }

    /// Every account data entry changed after `since` (all of them for `0`).
    pub(crate) fn account_data_since(
        &self,
        user: &UserId,
        since: u64,
    ) -> Result<Vec<AccountDataChange>> {
        let prefix = Key::new().str(user.as_str()).into_vec();
        let mut out = Vec::new();
        for entry in self.store.scan_prefix(Table::AccountData, &prefix) {
            let (k, v) = entry?;
            let pos = keys::decode_u64(&v);
            if pos <= since {
                continue;
            }
            let mut parts = keys::str_parts(&k[prefix.len()..]);
            let room = parts.next().unwrap_or_default();
            let kind = parts.next().unwrap_or_default().to_owned();
            let room_id = if room.is_empty() {
                None
            } else {
                Some(RoomId::parse(room).map_err(|e| Error::internal(e.to_string()))?)
            };
            out.push(AccountDataChange {
                room_id,
                kind,
                content: parse_content(&v)?,
                pos,
            });
        }
        Ok(out)
    }

    /// Stores a filter and returns its id.
    pub(crate) async fn create_filter(
        &self,
        user: &UserId,
        filter: &FilterDefinition,
    ) -> Result<String> {
        let id = self.store.increment(
            Table::Global,
            &Key::new().str("filter").str(user.as_str()).into_vec(),
            1,
        )?;
        let mut batch = Batch::new();
        batch.put(
            Table::Filters,
            Key::new().str(user.as_str()).u64(id),
            serde_json::to_vec(filter).expect("filters serialize"),
        );
        self.store.write_durable(batch).await?;
        Ok(id.to_string())
    }

    pub(crate) fn filter(&self, user: &UserId, id: &str) -> Result<Option<FilterDefinition>> {
        let Ok(n) = id.parse::<u64>() else {
            return Ok(None);
        };
        match self.store.get(
            Table::Filters,
            &Key::new().str(user.as_str()).u64(n).into_vec(),
        )? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| Error::internal(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }
}

fn parse_content(value: &[u8]) -> Result<Box<RawJsonValue>> {
    let text = std::str::from_utf8(&value[8.min(value.len())..])
        .map_err(|e| Error::internal(e.to_string()))?;
    RawJsonValue::from_string(text.to_owned()).map_err(|e| Error::internal(e.to_string()))
}
