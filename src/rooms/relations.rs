//! Event relationships: the index of each parent's children, kept in step with the timeline.
//!
//! An event whose content carries `m.relates_to` with a `rel_type` becomes a child of the event
//! it names. The index (`Relations`) is keyed by the parent's event id, the `rel_type` and the
//! child's position, so every read is a range scan of one parent: all its children, the children
//! of one type, or (for bundled aggregations) only the aggregated types. Keying by event id lets
//! the client format find an event's children without first looking up its position.
//!
//! The index is written in the child's own batch, under the room's append lock, and a redaction
//! of a child removes its entry in the redaction's batch: room version 11 redaction strips
//! `m.relates_to`, so the relationship is broken (spec: "Aggregations of child events").
//!
//! Threads have a second index (`ThreadRoots`): per room, the position of each thread's latest
//! reply and its root, so `/threads` (`threads.rs`) lists roots by latest activity with one
//! reverse scan. A reply moves its root's entry; redacting the latest reply moves it back to the
//! previous one.
//!
//! The first child a parent gets of a type the server bundles (edit, thread reply, reference)
//! also rewrites the parent with its `aggregated` mark, so formatting an event only looks at
//! this index when the event has such children (`aggregations.rs`).
//!
//! Relations to unknown events or to events of another room are accepted but not indexed: the
//! spec says such relationships are ignored.

use ruma::{
    EventId, OwnedEventId, OwnedUserId, UserId,
    events::{TimelineEventType, relation::RelationType},
};
use serde::Deserialize;

use super::{RoomMeta, RoomService, StoredEvent, Visibility, read::Direction};
use crate::{
    error::{Error, Result},
    events::Pdu,
    storage::{Batch, Key, Table, keys},
};

/// The parts of `content["m.relates_to"]` the server reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RelatesTo {
    pub(crate) rel_type: RelationType,
    pub(crate) event_id: OwnedEventId,
    #[serde(default)]
    pub(crate) key: Option<String>,
}

/// The relationship an event declares: `None` without a well-formed `m.relates_to` carrying a
/// `rel_type` (rich replies have none, and malformed relationships are ignored per the spec).
/// The one reading of relationships: the relations index, bundled aggregations and per-thread
/// unread counts all go through it, so they agree on what relates to what (as Synapse's
/// `relation_from_event`).
pub(crate) fn relation_of(pdu: &Pdu) -> Option<RelatesTo> {
    #[derive(Deserialize)]
    struct Content {
        #[serde(rename = "m.relates_to")]
        relates_to: Option<serde_json::Value>,
    }
    let content: Content = pdu.content_as().ok()?;
    let relation: RelatesTo = serde_json::from_value(content.relates_to?).ok()?;
    (!relation.rel_type.as_str().is_empty()).then_some(relation)
}

/// One indexed child of a parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) pos: u64,
    pub(crate) rel_type: RelationType,
    pub(crate) kind: TimelineEventType,
    pub(crate) sender: OwnedUserId,
    /// The annotation key (`m.annotation` only).
    pub(crate) key: Option<String>,
}

pub(super) fn child_prefix(parent: &EventId) -> Key {
    Key::new().str(parent.as_str())
}

fn child_key(parent: &EventId, rel_type: &RelationType, pos: u64) -> Vec<u8> {
    child_prefix(parent)
        .str(rel_type.as_str())
        .u64(pos)
        .into_vec()
}

fn thread_key(room: u64, latest: u64, root: u64) -> Vec<u8> {
    Key::new().u64(room).u64(latest).u64(root).into_vec()
}

/// Decodes a `Relations` entry (key without the parent prefix).
pub(super) fn decode_child(rest: &[u8], value: &[u8]) -> Option<Child> {
    let (rel, pos) = rest.split_at(rest.len().checked_sub(8)?);
    let rel_type = RelationType::from(keys::str_parts(rel).next()?);
    let mut parts = value.split(|b| *b == keys::SEP);
    let mut next = || parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let kind = TimelineEventType::from(next()?);
    let sender = UserId::parse(next()?).ok()?;
    let key = next().filter(|k| !k.is_empty()).map(str::to_owned);
    Some(Child {
        pos: keys::decode_u64(pos),
        rel_type,
        kind,
        sender,
        key,
    })
}

/// What an append adds to its batch for relations, decided under the room's append lock.
#[derive(Debug, Default)]
pub(crate) struct RelationWrites {
    /// The new event as a child: its parent and the entry's value.
    child: Option<NewChild>,
    /// Entries a redaction removes, and thread entries it restores.
    deletes: Vec<(Table, Vec<u8>)>,
    puts: Vec<(Table, Vec<u8>)>,
    /// The parent, at its position, marked as having aggregated children (first such child).
    marked: Option<(u64, StoredEvent)>,
}

#[derive(Debug)]
struct NewChild {
    parent: OwnedEventId,
    rel_type: RelationType,
    value: Vec<u8>,
    /// For a thread reply: the room, the root's position and its previous latest reply.
    thread: Option<(u64, u64, Option<u64>)>,
}

/// Whether the server bundles children of this type: a child of these marks its parent.
fn is_aggregated(rel_type: &RelationType) -> bool {
    matches!(
        rel_type,
        RelationType::Replacement | RelationType::Thread | RelationType::Reference
    )
}

impl RelationWrites {
    /// The parent to rewrite with its `aggregated` mark; the append writes it with its batch and
    /// refreshes the event cache, as it does for a redaction's target.
    pub(crate) fn take_marked(&mut self) -> Option<(u64, StoredEvent)> {
        self.marked.take()
    }

    /// Adds the writes to the batch of the event appended at `pos`.
    pub(crate) fn write(&self, batch: &mut Batch, pos: u64) {
        for (table, key) in &self.deletes {
            batch.delete(*table, key.clone());
        }
        for (table, key) in &self.puts {
            batch.put(*table, key.clone(), Vec::new());
        }
        if let Some(child) = &self.child {
            batch.put(
                Table::Relations,
                child_key(&child.parent, &child.rel_type, pos),
                child.value.clone(),
            );
            if let Some((room, root, previous)) = child.thread {
                if let Some(previous) = previous {
                    batch.delete(Table::ThreadRoots, thread_key(room, previous, root));
                }
                batch.put(Table::ThreadRoots, thread_key(room, pos, root), Vec::new());
            }
        }
    }
}

/// Which children a `/relations` request wants, and where its page starts and stops.
#[derive(Debug, Clone)]
pub(crate) struct RelationsQuery<'a> {
    pub(crate) rel_type: Option<&'a RelationType>,
    pub(crate) event_type: Option<&'a TimelineEventType>,
    pub(crate) from: Option<u64>,
    pub(crate) to: Option<u64>,
    pub(crate) direction: Direction,
    pub(crate) limit: usize,
    pub(crate) recurse: bool,
}

/// How many levels of relationships `recurse` follows (the spec recommends at least 3).
pub(crate) const RECURSION_DEPTH: u32 = 3;

/// A page of children: positions in the requested order and the token to continue from.
#[derive(Debug)]
pub(crate) struct RelationsPage {
    pub(crate) positions: Vec<u64>,
    pub(crate) next: Option<u64>,
}

impl RoomService {
    /// The index writes for an event about to be appended; refuses what the spec says servers
    /// refuse: a second identical annotation (`M_DUPLICATE_ANNOTATION`) and a thread started
    /// from an event that itself has a relationship.
    pub(super) fn plan_relations(&self, room: &RoomMeta, pdu: &Pdu) -> Result<RelationWrites> {
        let mut writes = RelationWrites::default();
        if pdu.kind == TimelineEventType::RoomRedaction {
            // A redaction is never a child: it rewrites its target, which must stay its only
            // rewrite.
            if let Some(target) = &pdu.redacts {
                self.plan_unrelate(room, target, &mut writes)?;
            }
            return Ok(writes);
        }
        let Some(relation) = relation_of(pdu) else {
            return Ok(writes);
        };
        let Some(parent_pos) = self.event_pos(&relation.event_id)? else {
            return Ok(writes);
        };
        let parent = self.event(parent_pos)?;
        if parent.stored.room != room.short {
            return Ok(writes);
        }
        let kind = pdu.kind.to_string();
        let mut thread = None;
        match relation.rel_type {
            RelationType::Annotation => {
                let Some(key) = relation.key.as_deref() else {
                    return Ok(writes);
                };
                if self.has_annotated(&relation.event_id, &pdu.kind, &pdu.sender, key)? {
                    return Err(Error::matrix(
                        http::StatusCode::BAD_REQUEST,
                        "M_DUPLICATE_ANNOTATION",
                        "Can't send same reaction twice",
                    ));
                }
            }
            RelationType::Thread => {
                if relation_of(&parent.pdu).is_some() {
                    return Err(Error::unknown(
                        "Cannot start threads from an event with a relation",
                    ));
                }
                let previous =
                    self.last_child(&relation.event_id, &RelationType::Thread, u64::MAX)?;
                thread = Some((room.short, parent_pos, previous));
            }
            _ => {}
        }
        if is_aggregated(&relation.rel_type) && !parent.stored.aggregated {
            let marked = StoredEvent {
                aggregated: true,
                ..parent.stored.clone()
            };
            writes.marked = Some((parent_pos, marked));
        }
        let mut value = Key::new().str(&kind).str(pdu.sender.as_str());
        if relation.rel_type == RelationType::Annotation {
            value = value.str(relation.key.as_deref().unwrap_or_default());
        }
        writes.child = Some(NewChild {
            parent: relation.event_id,
            rel_type: relation.rel_type,
            value: value.into_vec(),
            thread,
        });
        Ok(writes)
    }

    /// A redaction breaks the target's relationship: drop its entry and, for the latest reply
    /// of a thread, move the thread back to its previous reply (or out of the list).
    fn plan_unrelate(
        &self,
        room: &RoomMeta,
        target: &EventId,
        writes: &mut RelationWrites,
    ) -> Result<()> {
        let Some(target_pos) = self.event_pos(target)? else {
            return Ok(());
        };
        let target = self.event(target_pos)?;
        if target.stored.room != room.short {
            return Ok(());
        }
        // Already redacted: the content has no relationship left, so there is nothing to drop.
        let Some(relation) = relation_of(&target.pdu) else {
            return Ok(());
        };
        let key = child_key(&relation.event_id, &relation.rel_type, target_pos);
        if !self.store.contains(Table::Relations, &key)? {
            return Ok(());
        }
        writes.deletes.push((Table::Relations, key));
        if relation.rel_type == RelationType::Thread
            && self.last_child(&relation.event_id, &RelationType::Thread, u64::MAX)?
                == Some(target_pos)
            && let Some(root) = self.event_pos(&relation.event_id)?
        {
            writes
                .deletes
                .push((Table::ThreadRoots, thread_key(room.short, target_pos, root)));
            if let Some(previous) =
                self.last_child(&relation.event_id, &RelationType::Thread, target_pos)?
            {
                writes
                    .puts
                    .push((Table::ThreadRoots, thread_key(room.short, previous, root)));
            }
        }
        Ok(())
    }

    /// Whether `sender` already annotated `parent` with this event type and key.
    fn has_annotated(
        &self,
        parent: &EventId,
        kind: &TimelineEventType,
        sender: &UserId,
        key: &str,
    ) -> Result<bool> {
        let base = child_prefix(parent).into_vec();
        let prefix = child_prefix(parent)
            .str(RelationType::Annotation.as_str())
            .into_vec();
        for entry in self.store.scan_prefix(Table::Relations, &prefix) {
            let (k, v) = entry?;
            let child = decode_child(&k[base.len()..], &v);
            if child.is_some_and(|c| {
                c.kind == *kind && c.sender == sender && c.key.as_deref() == Some(key)
            }) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Position of the last child of one `rel_type` before `before` (exclusive).
    fn last_child(
        &self,
        parent: &EventId,
        rel_type: &RelationType,
        before: u64,
    ) -> Result<Option<u64>> {
        let prefix = child_prefix(parent).str(rel_type.as_str());
        let lo = prefix.clone().into_vec();
        let hi = prefix.u64(before).into_vec();
        Ok(self
            .store
            .range(Table::Relations, &lo, &hi)
            .next_back()
            .transpose()?
            .map(|(k, _)| keys::trailing_u64(&k)))
    }

    /// Direct children of `parent` (of one `rel_type` if given) with positions in `lo..hi`, in
    /// position order.
    pub(crate) fn children(
        &self,
        parent: &EventId,
        rel_type: Option<&RelationType>,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<Child>> {
        let base = child_prefix(parent).into_vec();
        let mut out = Vec::new();
        match rel_type {
            Some(rel) => {
                let prefix = child_prefix(parent).str(rel.as_str());
                let from = prefix.clone().u64(lo).into_vec();
                let to = prefix.u64(hi).into_vec();
                for entry in self.store.range(Table::Relations, &from, &to) {
                    let (k, v) = entry?;
                    out.extend(decode_child(&k[base.len()..], &v));
                }
            }
            None => {
                for entry in self.store.scan_prefix(Table::Relations, &base) {
                    let (k, v) = entry?;
                    out.extend(
                        decode_child(&k[base.len()..], &v).filter(|c| (lo..hi).contains(&c.pos)),
                    );
                }
                out.sort_by_key(|c| c.pos);
            }
        }
        Ok(out)
    }

    /// Children of `parent` and, with `recurse`, their children down to [`RECURSION_DEPTH`]
    /// levels, in position order. Filters apply to the returned events, not to the path.
    fn descendants(
        &self,
        parent: &EventId,
        query: &RelationsQuery<'_>,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<Child>> {
        if !query.recurse {
            return self.children(parent, query.rel_type, lo, hi);
        }
        let mut found: Vec<Child> = Vec::new();
        let mut level = vec![parent.to_owned()];
        for _ in 0..RECURSION_DEPTH {
            let mut next = Vec::new();
            for id in &level {
                // Children are always later than their parent, so the lower bound would cut
                // paths: walk everything below `hi` and bound the results afterwards.
                for child in self.children(id, None, 0, hi)? {
                    next.push(self.event(child.pos)?.stored.event_id.clone());
                    found.push(child);
                }
            }
            if next.is_empty() {
                break;
            }
            level = next;
        }
        found.retain(|c| {
            (lo..hi).contains(&c.pos) && query.rel_type.is_none_or(|r| c.rel_type == *r)
        });
        found.sort_by_key(|c| c.pos);
        found.dedup_by_key(|c| c.pos);
        Ok(found)
    }

    /// One page of `/relations`. Tokens are stream positions with `/messages`' meaning: a token
    /// `t` sits after every event at `<= t`, so backwards from `t` yields children at `<= t`.
    pub(crate) fn relations(
        &self,
        parent: &EventId,
        visibility: &Visibility,
        query: &RelationsQuery<'_>,
    ) -> Result<RelationsPage> {
        let head = self.stream.head();
        let (lo, hi) = match query.direction {
            Direction::Backward => (
                query.to.map_or(0, |t| t.saturating_add(1)),
                query.from.unwrap_or(head).min(head).saturating_add(1),
            ),
            Direction::Forward => (
                query.from.map_or(0, |f| f.saturating_add(1)),
                query.to.unwrap_or(head).min(head).saturating_add(1),
            ),
        };
        if lo >= hi {
            return Ok(RelationsPage {
                positions: Vec::new(),
                next: None,
            });
        }
        let mut candidates = self.descendants(parent, query, lo, hi)?;
        if query.direction == Direction::Backward {
            candidates.reverse();
        }
        let mut positions = Vec::new();
        let mut next = None;
        for child in candidates {
            if query.event_type.is_some_and(|t| child.kind != *t) || !visibility.can_see(child.pos)
            {
                continue;
            }
            if positions.len() == query.limit {
                let last = *positions.last().expect("limit is at least 1");
                next = Some(match query.direction {
                    Direction::Backward => last - 1,
                    Direction::Forward => last,
                });
                break;
            }
            positions.push(child.pos);
        }
        Ok(RelationsPage { positions, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(content: serde_json::Value) -> Pdu {
        let json = serde_json::json!({
            "room_id": "!r:localhost", "sender": "@a:localhost", "origin_server_ts": 1,
            "type": "m.room.message", "content": content,
            "prev_events": [], "auth_events": [], "depth": 1,
        });
        Pdu::parse(
            OwnedEventId::try_from("$e").unwrap(),
            &serde_json::to_string(&json).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn relations_are_read_only_when_well_formed() {
        let r = relation_of(&pdu(serde_json::json!({
            "m.relates_to": { "rel_type": "m.annotation", "event_id": "$p", "key": "👍" }
        })))
        .unwrap();
        assert_eq!(
            (r.rel_type, r.event_id.as_str(), r.key.as_deref()),
            (RelationType::Annotation, "$p", Some("👍"))
        );
        // Types the server does not know are relationships too, kept by name.
        let r = relation_of(&pdu(serde_json::json!({
            "m.relates_to": { "rel_type": "org.example.custom", "event_id": "$p" }
        })))
        .unwrap();
        assert_eq!(r.rel_type.as_str(), "org.example.custom");
        // A rich reply has no rel_type; malformed or empty relationships are ignored.
        for content in [
            serde_json::json!({ "m.relates_to": { "m.in_reply_to": { "event_id": "$p" } } }),
            serde_json::json!({ "m.relates_to": { "rel_type": "m.thread", "event_id": 5 } }),
            serde_json::json!({ "m.relates_to": { "rel_type": "", "event_id": "$p" } }),
            serde_json::json!({ "m.relates_to": "nope" }),
            serde_json::json!({ "body": "plain" }),
        ] {
            assert!(relation_of(&pdu(content.clone())).is_none(), "{content}");
        }
    }

    #[test]
    fn index_entries_round_trip() {
        let parent = OwnedEventId::try_from("$parent").unwrap();
        let key = child_key(&parent, &RelationType::Annotation, 42);
        let value = Key::new()
            .str("m.reaction")
            .str("@b:localhost")
            .str("👍")
            .into_vec();
        let base = child_prefix(&parent).into_vec();
        assert_eq!(
            decode_child(&key[base.len()..], &value),
            Some(Child {
                pos: 42,
                rel_type: RelationType::Annotation,
                kind: TimelineEventType::Reaction,
                sender: ruma::owned_user_id!("@b:localhost"),
                key: Some("👍".into()),
            })
        );
        // Without an annotation key.
        let value = Key::new()
            .str("m.room.message")
            .str("@b:localhost")
            .into_vec();
        let key = child_key(&parent, &RelationType::Thread, 7);
        let child = decode_child(&key[base.len()..], &value).unwrap();
        assert_eq!((child.pos, child.key), (7, None));
        // A type the server does not know is stored and read back by its name.
        let custom = RelationType::from("org.example.custom");
        let key = child_key(&parent, &custom, 9);
        let child = decode_child(&key[base.len()..], &value).unwrap();
        assert_eq!((child.pos, child.rel_type), (9, custom));
    }
}
