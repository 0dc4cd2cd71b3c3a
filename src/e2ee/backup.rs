//! Server-side key backup (`/room_keys/...`): versions, each holding encrypted session keys.
//!
//! A version record keeps its algorithm, `auth_data`, an `etag` that moves whenever its keys
//! change, and the key count, updated in the same batch as the keys (under the backup lock), so
//! answers never count. Keys may only be written to the current (latest) version.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::{E2eeService, parse_stored, to_bytes};
use crate::{
    error::{Error, Result},
    storage::{Batch, Key, Table, keys},
};

/// A backup version as `GET /room_keys/version` shows it.
#[derive(Debug, Clone)]
pub(crate) struct BackupInfo {
    pub version: String,
    /// `{"algorithm": ..., "auth_data": ...}`.
    pub algorithm: Value,
    pub etag: String,
    pub count: u64,
}

/// The answer to a change of a backup's keys.
#[derive(Debug)]
pub(crate) struct BackupKeysChange {
    pub etag: String,
    pub count: u64,
}

/// Session keys: room → session → backed-up key data.
pub(crate) type BackupKeys = BTreeMap<OwnedRoomId, BTreeMap<String, Value>>;

fn version_key(user: &UserId, version: u64) -> Vec<u8> {
    Key::new().str(user.as_str()).u64(version).into_vec()
}

fn keys_prefix(user: &UserId, version: u64) -> Key {
    Key::new().str(user.as_str()).u64(version)
}

/// Versions are decimal numbers; anything else names no backup.
fn parse_version(version: &str) -> Option<u64> {
    version.parse().ok()
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// Checks `{"algorithm": string, "auth_data": object}`.
fn validate_algorithm(algorithm: &Value) -> Result<()> {
    let ok = algorithm
        .get("algorithm")
        .and_then(Value::as_str)
        .is_some_and(|a| !a.is_empty())
        && algorithm.get("auth_data").is_some_and(Value::is_object);
    if ok {
        Ok(())
    } else {
        Err(Error::bad_json(
            "algorithm must be a string and auth_data an object",
        ))
    }
}

/// Checks a backed-up session key's shape.
fn validate_key_data(data: &Value) -> Result<()> {
    let ok = data["first_message_index"].is_u64()
        && data["forwarded_count"].is_u64()
        && data["is_verified"].is_boolean()
        && data["session_data"].is_object();
    if ok {
        Ok(())
    } else {
        Err(Error::bad_json(
            "Key data needs first_message_index, forwarded_count, is_verified and session_data",
        ))
    }
}

/// The spec's rule for which of two backed-up keys of a session to keep: the verified one;
/// then the lower `first_message_index`; then the lower `forwarded_count`.
fn replaces(new: &Value, old: &Value) -> bool {
    let verified = |v: &Value| v["is_verified"].as_bool().unwrap_or(false);
    let index = |v: &Value| v["first_message_index"].as_u64().unwrap_or(u64::MAX);
    let forwarded = |v: &Value| v["forwarded_count"].as_u64().unwrap_or(u64::MAX);
    if verified(new) != verified(old) {
        return verified(new);
    }
    if index(new) != index(old) {
        return index(new) < index(old);
    }
    forwarded(new) < forwarded(old)
}

impl E2eeService {
    /// Creates a new backup version, which becomes the current one.
    pub(crate) async fn create_backup(&self, user: &UserId, algorithm: &Value) -> Result<String> {
        validate_algorithm(algorithm)?;
        let counter = Key::new()
            .str("backup_version")
            .str(user.as_str())
            .into_vec();
        let version = self.store.increment(Table::Global, &counter, 1)?;
        let record = json!({ "algorithm": algorithm, "etag": 0, "count": 0 });
        let mut batch = Batch::new();
        batch.put(
            Table::BackupVersions,
            version_key(user, version),
            to_bytes(&record),
        );
        self.store.write_durable(batch).await?;
        Ok(version.to_string())
    }

    fn version_record(&self, user: &UserId, version: u64) -> Result<Option<Value>> {
        self.get_json(Table::BackupVersions, &version_key(user, version))
    }

    /// The current version's number, if the user has a backup.
    fn current_version(&self, user: &UserId) -> Result<Option<u64>> {
        let prefix = Key::new().str(user.as_str()).into_vec();
        Ok(self
            .store
            .last_with_prefix(Table::BackupVersions, &prefix)?
            .map(|(k, _)| keys::trailing_u64(&k)))
    }

    /// A version (the current one for `None`); `M_NOT_FOUND` if there is none.
    pub(crate) fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<BackupInfo> {
        let number = match version {
            Some(v) => parse_version(v).ok_or_else(unknown_version)?,
            None => self
                .current_version(user)?
                .ok_or_else(|| Error::not_found("No current backup version"))?,
        };
        let record = self
            .version_record(user, number)?
            .ok_or_else(unknown_version)?;
        Ok(BackupInfo {
            version: number.to_string(),
            algorithm: record["algorithm"].clone(),
            etag: record["etag"].as_u64().unwrap_or(0).to_string(),
            count: record["count"].as_u64().unwrap_or(0),
        })
    }

    /// Replaces a version's `auth_data`; its algorithm cannot change.
    pub(crate) async fn update_backup(
        &self,
        user: &UserId,
        version: &str,
        algorithm: &Value,
    ) -> Result<()> {
        validate_algorithm(algorithm)?;
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let ticket = {
            let _guard = self.backup_lock.lock();
            let mut record = self
                .version_record(user, number)?
                .ok_or_else(unknown_version)?;
            if record["algorithm"]["algorithm"] != algorithm["algorithm"] {
                return Err(Error::invalid_param("Algorithm does not match"));
            }
            record["algorithm"] = algorithm.clone();
            let mut batch = Batch::new();
            batch.put(
                Table::BackupVersions,
                version_key(user, number),
                to_bytes(&record),
            );
            self.store.write(batch)?
        };
        self.store.durable(ticket).await?;
        Ok(())
    }

    /// Deletes a version and every key in it.
    pub(crate) async fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let ticket = {
            let _guard = self.backup_lock.lock();
            if self.version_record(user, number)?.is_none() {
                return Err(unknown_version());
            }
            let mut batch = Batch::new();
            batch.delete(Table::BackupVersions, version_key(user, number));
            let prefix = keys_prefix(user, number).into_vec();
            for entry in self.store.scan_prefix(Table::BackupKeys, &prefix) {
                batch.delete(Table::BackupKeys, entry?.0.to_vec());
            }
            self.store.write(batch)?
        };
        self.store.durable(ticket).await?;
        Ok(())
    }

    /// Stores session keys in the current version, keeping for each session the better key.
    /// `M_WRONG_ROOM_KEYS_VERSION` (with `current_version`) when `version` is not current.
    pub(crate) async fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: &BackupKeys,
    ) -> Result<BackupKeysChange> {
        for data in keys.values().flat_map(|s| s.values()) {
            validate_key_data(data)?;
        }
        let (ticket, change) = {
            let _guard = self.backup_lock.lock();
            let current = self.current_version(user)?;
            let number = parse_version(version);
            let Some(current) = current else {
                return Err(unknown_version());
            };
            if number != Some(current) {
                return Err(Error::Matrix {
                    status: StatusCode::FORBIDDEN,
                    errcode: "M_WRONG_ROOM_KEYS_VERSION",
                    message: "Wrong backup version".into(),
                    extra: Some(json!({ "current_version": current.to_string() })),
                });
            }
            let mut record = self
                .version_record(user, current)?
                .ok_or_else(unknown_version)?;
            let mut count = record["count"].as_u64().unwrap_or(0);
            let mut batch = Batch::new();
            for (room, sessions) in keys {
                for (session, data) in sessions {
                    let k = keys_prefix(user, current)
                        .str(room.as_str())
                        .str(session)
                        .into_vec();
                    match self.get_json(Table::BackupKeys, &k)? {
                        Some(old) if !replaces(data, &old) => continue,
                        Some(_) => {}
                        None => count += 1,
                    }
                    batch.put(Table::BackupKeys, k, to_bytes(data));
                }
            }
            self.finish_keys_change(user, current, &mut record, count, batch)?
        };
        if let Some(ticket) = ticket {
            self.store.durable(ticket).await?;
        }
        Ok(change)
    }

    /// Moves the etag if `batch` changes anything, records the count, and applies it.
    fn finish_keys_change(
        &self,
        user: &UserId,
        version: u64,
        record: &mut Value,
        count: u64,
        mut batch: Batch,
    ) -> Result<(Option<crate::storage::WriteTicket>, BackupKeysChange)> {
        let mut etag = record["etag"].as_u64().unwrap_or(0);
        let ticket = if batch.is_empty() {
            None
        } else {
            etag += 1;
            record["etag"] = json!(etag);
            record["count"] = json!(count);
            batch.put(
                Table::BackupVersions,
                version_key(user, version),
                to_bytes(record),
            );
            Some(self.store.write(batch)?)
        };
        Ok((
            ticket,
            BackupKeysChange {
                etag: etag.to_string(),
                count,
            },
        ))
    }

    /// Backed-up keys of a version: all, one room's, or one session's.
    pub(crate) fn backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<BackupKeys> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        if self.version_record(user, number)?.is_none() {
            return Err(unknown_version());
        }
        let prefix = keys_prefix(user, number).into_vec();
        let mut scan = keys_prefix(user, number);
        if let Some(room) = room {
            scan = scan.str(room.as_str());
            if let Some(session) = session {
                scan = scan.str(session);
            }
        }
        let mut out = BackupKeys::new();
        for entry in self.store.scan_prefix(Table::BackupKeys, &scan.into_vec()) {
            let (k, v) = entry?;
            let mut parts = keys::str_parts(&k[prefix.len()..]);
            let (Some(room), Some(session)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(room) = RoomId::parse(room) else {
                continue;
            };
            out.entry(room)
                .or_default()
                .insert(session.to_owned(), parse_stored(Table::BackupKeys, &v)?);
        }
        Ok(out)
    }

    /// Deletes backed-up keys of a version: all, one room's, or one session's.
    pub(crate) async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<BackupKeysChange> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let (ticket, change) = {
            let _guard = self.backup_lock.lock();
            let mut record = self
                .version_record(user, number)?
                .ok_or_else(unknown_version)?;
            let mut scan = keys_prefix(user, number);
            if let Some(room) = room {
                scan = scan.str(room.as_str());
                if let Some(session) = session {
                    scan = scan.str(session);
                }
            }
            let mut count = record["count"].as_u64().unwrap_or(0);
            let mut batch = Batch::new();
            for entry in self.store.scan_prefix(Table::BackupKeys, &scan.into_vec()) {
                batch.delete(Table::BackupKeys, entry?.0.to_vec());
                count = count.saturating_sub(1);
            }
            self.finish_keys_change(user, number, &mut record, count, batch)?
        };
        if let Some(ticket) = ticket {
            self.store.durable(ticket).await?;
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: u64, forwarded: u64, verified: bool) -> Value {
        json!({ "first_message_index": index, "forwarded_count": forwarded,
                "is_verified": verified, "session_data": {} })
    }

    #[test]
    fn the_spec_rule_picks_the_session_key_to_keep() {
        // Verified beats unverified, whatever the indexes.
        assert!(replaces(&key(9, 9, true), &key(0, 0, false)));
        assert!(!replaces(&key(0, 0, false), &key(9, 9, true)));
        // Then the lower first message index.
        assert!(replaces(&key(1, 5, false), &key(2, 0, false)));
        assert!(!replaces(&key(2, 0, false), &key(1, 5, false)));
        // Then the lower forwarded count; an equal key does not replace.
        assert!(replaces(&key(1, 0, true), &key(1, 1, true)));
        assert!(!replaces(&key(1, 1, true), &key(1, 1, true)));
    }
}
