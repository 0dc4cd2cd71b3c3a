//! Bundled aggregations: `unsigned["m.relations"]` on events served to clients.
//!
//! Per spec v1.16 the server aggregates three relationship types: `m.replace` (the most recent
//! valid replacement, in full), `m.thread` (latest reply, count, whether the viewer took part)
//! and `m.reference` (the ids of the referencing events). Annotations are not aggregated:
//! clients read them through `/relations/{id}/m.annotation`. State events get no bundle.
//!
//! Cost: nothing for an event no aggregated child points at (its stored `aggregated` mark is
//! unset; a range scan per event doubled the cost of `/messages` pages, measured with `charla
//! bench`). A marked event costs one range scan of the `Relations` index starting at
//! `m.reference`, so its annotations (which sort before it) are never read.

use ruma::{MilliSecondsSinceUnixEpoch, events::relation::RelationType};
use serde::Serialize;
use serde_json::value::{RawValue as RawJsonValue, to_raw_value};

use super::{
    Loaded, RoomService,
    read::EventView,
    relations::{child_prefix, decode_child, relation_of},
};
use crate::{error::Result, storage::Table};

/// How much of an event's children to bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bundling {
    /// Every aggregated type: events served by the endpoints.
    Full,
    /// Only `m.replace`: a thread's `latest_event`, whose own children are aggregated too, but
    /// which cannot itself be a thread root.
    EditsOnly,
    /// Nothing: the replacement event inside an `m.replace` bundle.
    None,
}

#[derive(Serialize)]
struct Bundle<'a> {
    #[serde(rename = "m.replace", skip_serializing_if = "Option::is_none")]
    replace: Option<&'a RawJsonValue>,
    #[serde(rename = "m.thread", skip_serializing_if = "Option::is_none")]
    thread: Option<ThreadSummary<'a>>,
    #[serde(rename = "m.reference", skip_serializing_if = "Option::is_none")]
    reference: Option<References>,
}

#[derive(Serialize)]
struct ThreadSummary<'a> {
    latest_event: &'a RawJsonValue,
    count: u64,
    current_user_participated: bool,
}

#[derive(Serialize)]
struct References {
    chunk: Vec<ReferenceId>,
}

#[derive(Serialize)]
struct ReferenceId {
    event_id: ruma::OwnedEventId,
}

impl RoomService {
    /// The bundled aggregations of an event, `None` when it has nothing to bundle.
    pub(super) fn bundled_aggregations(
        &self,
        event: &Loaded,
        view: EventView<'_>,
        bundling: Bundling,
    ) -> Result<Option<Box<RawJsonValue>>> {
        let pdu = &event.pdu;
        if bundling == Bundling::None || !event.stored.aggregated || pdu.state_key.is_some() {
            return Ok(None);
        }
        let head = self.stream.head();
        let base = child_prefix(&pdu.event_id).into_vec();
        let lo = child_prefix(&pdu.event_id)
            .str(RelationType::Reference.as_str())
            .into_vec();
        let mut hi = base.clone();
        // Past every rel_type (UTF-8 never contains 0xFF): the end of this parent's entries.
        hi.push(crate::storage::keys::SEP);

        let mut references = Vec::new();
        let mut edits = Vec::new();
        let (mut count, mut latest, mut participated) = (0u64, None, pdu.sender == view.user);
        for entry in self.store.range(Table::Relations, &lo, &hi) {
            let (key, value) = entry?;
            let Some(child) = decode_child(&key[base.len()..], &value) else {
                continue;
            };
            if child.pos > head {
                continue;
            }
            match child.rel_type {
                RelationType::Reference if bundling == Bundling::Full => references.push(child.pos),
                RelationType::Replacement => edits.push(child.pos),
                RelationType::Thread if bundling == Bundling::Full => {
                    count += 1;
                    latest = Some(child.pos);
                    participated |= child.sender == view.user;
                }
                _ => {}
            }
        }

        let replace = match self.latest_valid_edit(event, &edits)? {
            Some(edit) => Some(self.format_event_with(&edit, view, Bundling::None)?),
            None => None,
        };
        let latest_event = match latest {
            Some(pos) => {
                Some(self.format_event_with(&*self.event(pos)?, view, Bundling::EditsOnly)?)
            }
            None => None,
        };
        let reference = if references.is_empty() {
            None
        } else {
            let mut chunk = Vec::with_capacity(references.len());
            for pos in references {
                chunk.push(ReferenceId {
                    event_id: self.event(pos)?.stored.event_id.clone(),
                });
            }
            Some(References { chunk })
        };
        if replace.is_none() && latest_event.is_none() && reference.is_none() {
            return Ok(None);
        }
        let bundle = Bundle {
            replace: replace.as_deref(),
            thread: latest_event.as_deref().map(|latest_event| ThreadSummary {
                latest_event,
                count,
                current_user_participated: participated,
            }),
            reference,
        };
        Ok(Some(to_raw_value(&bundle).expect("bundles serialize")))
    }

    /// The edit that replaces an event's content now (what clients show): the most recent
    /// valid `m.replace`, none when there is none or the event is redacted. For the search
    /// index, which indexes an edited event under its newest text.
    pub(crate) fn current_edit(&self, original: &Loaded) -> Result<Option<std::sync::Arc<Loaded>>> {
        if !original.stored.aggregated {
            return Ok(None);
        }
        let parent = child_prefix(&original.pdu.event_id).into_vec();
        let edits_prefix = child_prefix(&original.pdu.event_id)
            .str(RelationType::Replacement.as_str())
            .into_vec();
        let mut edits = Vec::new();
        for entry in self.store.scan_prefix(Table::Relations, &edits_prefix) {
            let (key, value) = entry?;
            if let Some(child) = decode_child(&key[parent.len()..], &value) {
                edits.push(child.pos);
            }
        }
        self.latest_valid_edit(original, &edits)
    }

    /// The replacement to bundle: the most recent valid one (by `origin_server_ts`, then the
    /// largest event id), none when the original is redacted or is itself a replacement.
    fn latest_valid_edit(
        &self,
        original: &Loaded,
        candidates: &[u64],
    ) -> Result<Option<std::sync::Arc<Loaded>>> {
        if candidates.is_empty()
            || original.stored.redacted_by.is_some()
            || relation_of(&original.pdu).is_some_and(|r| r.rel_type == RelationType::Replacement)
        {
            return Ok(None);
        }
        let mut best: Option<(MilliSecondsSinceUnixEpoch, std::sync::Arc<Loaded>)> = None;
        for pos in candidates {
            let edit = self.event(*pos)?;
            if !is_valid_replacement(original, &edit) {
                continue;
            }
            let newer = best.as_ref().is_none_or(|(ts, b)| {
                (edit.pdu.origin_server_ts, &edit.pdu.event_id) > (*ts, &b.pdu.event_id)
            });
            if newer {
                best = Some((edit.pdu.origin_server_ts, edit));
            }
        }
        Ok(best.map(|(_, e)| e))
    }
}

/// The spec's validity rules for a replacement ("Validity of replacement events"); the same
/// room holds by construction of the index.
fn is_valid_replacement(original: &Loaded, edit: &Loaded) -> bool {
    let (o, e) = (&original.pdu, &edit.pdu);
    if e.sender != o.sender || e.kind != o.kind || e.state_key.is_some() || o.state_key.is_some() {
        return false;
    }
    if edit.stored.redacted_by.is_some() {
        return false;
    }
    // An encrypted replacement carries `m.new_content` in its ciphertext, out of our sight.
    if e.kind == ruma::events::TimelineEventType::RoomEncrypted {
        return true;
    }
    #[derive(serde::Deserialize)]
    struct Content {
        #[serde(rename = "m.new_content")]
        new_content: Option<serde_json::Map<String, serde_json::Value>>,
    }
    e.content_as::<Content>()
        .is_ok_and(|c| c.new_content.is_some())
}
