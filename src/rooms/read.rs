//! Reading events back: timeline ranges and the client format with its `unsigned` data.

use std::sync::Arc;

use ruma::{DeviceId, MilliSecondsSinceUnixEpoch, UserId};
use serde_json::value::RawValue as RawJsonValue;

use super::{Loaded, RoomService, aggregations::Bundling};
use crate::{
    error::Result,
    events::{ClientFormat, Unsigned},
    storage::{Key, Table, keys},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Forward,
    Backward,
}

/// Who is looking: decides `unsigned.transaction_id`, which only the sending device sees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventView<'a> {
    pub(crate) user: &'a UserId,
    pub(crate) device: Option<&'a DeviceId>,
    pub(crate) format: ClientFormat,
}

impl<'a> EventView<'a> {
    /// The view of the device behind a request.
    pub(crate) fn of(user: &'a UserId, device: &'a DeviceId, format: ClientFormat) -> Self {
        EventView {
            user,
            device: Some(device),
            format,
        }
    }
}

impl RoomService {
    /// Positions of a room's events, starting after/before `from`.
    ///
    /// Tokens are stream positions with one meaning in both directions: a token `t` sits after
    /// every event at `<= t`. So `Forward` from `t` yields positions `> t`, `Backward` from `t`
    /// yields positions `<= t`, newest first. Only visible (durable) positions are returned.
    pub(crate) fn timeline_positions(
        &self,
        short: u64,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let head = self.stream.head();
        let (lo, hi) = match direction {
            Direction::Forward => (from.saturating_add(1), head.saturating_add(1)),
            Direction::Backward => (0, from.min(head).saturating_add(1)),
        };
        if lo >= hi {
            return Ok(Vec::new());
        }
        let lo_key = Key::new().u64(short).u64(lo).into_vec();
        let hi_key = Key::new().u64(short).u64(hi).into_vec();
        let range = self.store.range(Table::Timeline, &lo_key, &hi_key);
        match direction {
            Direction::Forward => trailing_positions(range, limit),
            Direction::Backward => trailing_positions(range.rev(), limit),
        }
    }

    /// The event at `pos` in the client format.
    pub(crate) fn client_event(&self, pos: u64, view: EventView<'_>) -> Result<Box<RawJsonValue>> {
        self.format_event(&*self.event(pos)?, view)
    }

    /// The events of any room in `(after, upto]`, at most `limit`, oldest first: how stream
    /// consumers (the support bot, appservice pushers) read. Close to the head the cache has
    /// them all; further behind it is one range read, and the cache is used but not filled, so
    /// a backlog streaming past does not evict what clients read.
    pub(crate) fn events_in_range(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Arc<Loaded>)>> {
        if let Some(recent) = self.events.appended(after, upto, limit) {
            return Ok(recent);
        }
        self.stream_range(after, upto)
            .take(limit)
            .map(|entry| {
                let (key, bytes) = entry?;
                let pos = keys::decode_u64(key.as_ref());
                match self.events.get(pos) {
                    Some(hit) => Ok((pos, hit)),
                    None => Ok((pos, Arc::new(Loaded::parse(bytes.as_ref())?))),
                }
            })
            .collect()
    }

    /// The stored events in `(after, upto]`, in stream order.
    fn stream_range(
        &self,
        after: u64,
        upto: u64,
    ) -> impl Iterator<Item = crate::storage::Result<(impl AsRef<[u8]>, impl AsRef<[u8]>)>> {
        let from = (after + 1).to_be_bytes();
        let to = upto.saturating_add(1).max(after + 1).to_be_bytes();
        self.store.range(Table::Events, &from, &to)
    }

    /// Formats an already loaded event, computing `unsigned` from what the store knows.
    pub(crate) fn format_event(
        &self,
        event: &Loaded,
        view: EventView<'_>,
    ) -> Result<Box<RawJsonValue>> {
        self.format_event_with(event, view, Bundling::Full)
    }

    /// [`RoomService::format_event`] with only some of the bundled aggregations (bundled
    /// events themselves: see `aggregations.rs`).
    pub(super) fn format_event_with(
        &self,
        event: &Loaded,
        view: EventView<'_>,
        bundling: Bundling,
    ) -> Result<Box<RawJsonValue>> {
        let (stored, pdu) = (&event.stored, &event.pdu);
        let now = MilliSecondsSinceUnixEpoch::now().get();
        let age = i64::from(now) - i64::from(pdu.origin_server_ts.get());
        let mut unsigned = Unsigned {
            age: Some(age.max(0)),
            ..Unsigned::default()
        };
        if let (Some(txn), Some(viewer_device)) = (&stored.txn, view.device)
            && view.user == pdu.sender
            && txn.device == viewer_device
        {
            unsigned.transaction_id = Some(&txn.txn_id);
        }
        let prev = match stored.prev_state {
            Some(pos) => Some(self.event(pos)?),
            None => None,
        };
        if let Some(prev) = prev.as_ref().map(|e| &e.pdu) {
            unsigned.prev_content = Some(&prev.content);
            unsigned.prev_sender = Some(&prev.sender);
            unsigned.replaces_state = Some(&prev.event_id);
        }
        let redaction = match stored.redacted_by {
            Some(pos) => {
                // The redaction itself is shown without its own unsigned data, as Synapse does.
                let r = self.event(pos)?;
                Some(
                    r.pdu
                        .to_client(ClientFormat::WithRoomId, &Unsigned::default()),
                )
            }
            None => None,
        };
        unsigned.redacted_because = redaction.as_deref();
        let relations = self.bundled_aggregations(event, view, bundling)?;
        unsigned.relations = relations.as_deref();
        Ok(pdu.to_client(view.format, &unsigned))
    }
}

/// The positions that end the keys of index entries (`…, position`), at most `limit`.
fn trailing_positions<K: AsRef<[u8]>, V>(
    entries: impl Iterator<Item = crate::storage::Result<(K, V)>>,
    limit: usize,
) -> Result<Vec<u64>> {
    entries
        .take(limit)
        .map(|e| {
            e.map(|(k, _)| keys::trailing_u64(k.as_ref()))
                .map_err(Into::into)
        })
        .collect()
}

/// `(type, state_key)` of the state events shown to invitees (the spec's recommended set).
const STRIPPED_STATE: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

impl RoomService {
    /// The current state's keys and positions, without loading the events.
    pub(crate) fn current_state_keys(&self, short: u64) -> Result<Vec<(String, String, u64)>> {
        let prefix = Key::new().u64(short).into_vec();
        let mut out = Vec::new();
        for entry in self.store.scan_prefix(Table::RoomState, &prefix) {
            let (key, value) = entry?;
            let mut parts = keys::str_parts(&key[prefix.len()..]);
            let (Some(kind), Some(state_key)) = (parts.next(), parts.next()) else {
                continue;
            };
            out.push((
                kind.to_owned(),
                state_key.to_owned(),
                keys::decode_u64(&value),
            ));
        }
        Ok(out)
    }

    /// Stripped state for an invite: a few room descriptors plus the invitee's member event.
    pub(crate) fn stripped_state(
        &self,
        room: &super::RoomMeta,
        user: &UserId,
    ) -> Result<Vec<Box<RawJsonValue>>> {
        #[derive(serde::Serialize)]
        struct Stripped<'a> {
            content: &'a RawJsonValue,
            sender: &'a UserId,
            state_key: &'a str,
            #[serde(rename = "type")]
            kind: String,
        }
        // Another server's room: what it sent with the invite, and the invite.
        let remote = self.remote_invite_state(room, user)?;
        let descriptors: &[&str] = if remote.is_some() {
            &[]
        } else {
            &STRIPPED_STATE
        };
        let mut out = remote.unwrap_or_default();
        let keys = descriptors
            .iter()
            .map(|k| (*k, ""))
            .chain([("m.room.member", user.as_str())]);
        for (kind, state_key) in keys {
            if let Some(pdu) = self.state_pdu(room.short, kind, state_key)? {
                let stripped = Stripped {
                    content: &pdu.content,
                    sender: &pdu.sender,
                    state_key: pdu.state_key.as_deref().unwrap_or_default(),
                    kind: pdu.kind.to_string(),
                };
                out.push(serde_json::value::to_raw_value(&stripped).expect("serializes"));
            }
        }
        Ok(out)
    }
}

/// Stream consumers (`stream::Consumer`) read the rooms' events.
impl crate::stream::Source for RoomService {
    type Event = Arc<Loaded>;

    fn read(&self, after: u64, upto: u64, limit: usize) -> Result<Vec<(u64, Arc<Loaded>)>> {
        self.events_in_range(after, upto, limit)
    }
}
