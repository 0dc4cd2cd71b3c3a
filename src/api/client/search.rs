//! `POST /search` (spec v1.16, "Server Side Search"): full-text search over the rooms the user
//! is joined to, answered in Synapse's shape, field by field.
//!
//! Differences from Synapse, each a superset: `next_batch` in the rank order too (Synapse
//! pages only the recent order), `groups` by sender in both orders, and exact `count`s (the
//! visibility rules are part of the query, `search::query`). A room's history the user may not
//! see (before they joined a `joined` room, say) is never searched.

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    sync::Arc,
};

use axum::{Json, Router, extract::State, routing::post};
use base64::Engine;
use ruma::{
    OwnedRoomId,
    api::client::{
        filter::{RoomEventFilter, UrlFilter},
        search::search_events::v3::{Criteria, GroupingKey, OrderBy, Request, SearchKeys},
    },
};
use serde_json::{Map, Value, json};

use super::message::{Reader, room_filter, walk};
use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    events::ClientFormat,
    rooms::{Direction, EventView, RoomMeta, Visibility},
    search::{Found, Hit, Order, PageKey, Scope, SearchRequest, document::Key},
    services::Services,
    sync::{format_token, types_allowed},
    users::Identity,
};

/// Results per page unless the filter says (the spec's default), and the most one may ask.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Most context events on each side of a result.
const MAX_CONTEXT: usize = 20;
/// Longest search term, in bytes.
const MAX_TERM_BYTES: usize = 1024;
/// The event types the index holds, for the filter's `types` patterns.
const INDEXED_TYPES: [&str; 3] = ["m.room.message", "m.room.name", "m.room.topic"];

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route("/_matrix/client/v3/search", post(search))
        .route("/_matrix/client/r0/search", post(search))
}

async fn search(State(s): State<Arc<Services>>, req: Ruma<Request>) -> Result<Json<Value>> {
    let who = req.identity().clone();
    s.search_limiter.check(who.user_id.as_str())?;
    // ruma fills `event_context` in with its defaults: only the body tells whether it was sent.
    let wants_context = req
        .json
        .as_ref()
        .and_then(|j| j.pointer("/search_categories/room_events/event_context"))
        .is_some_and(|c| !c.is_null());
    let Request {
        next_batch,
        search_categories,
        ..
    } = req.body;
    // As Synapse: room events are the one category, and a search without it is refused.
    let Some(criteria) = search_categories.room_events else {
        return Err(Error::unknown("Invalid search query"));
    };
    s.search.require_enabled()?;
    let batch = next_batch.as_deref().map(Batch::decode).transpose()?;
    let context = wants_context.then(|| ContextLimits::of(&criteria));
    // Index reads and event formatting are blocking work.
    tokio::task::spawn_blocking(move || answer(&s, &who, criteria, batch, context))
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map(Json)
}

/// How much context each result carries.
#[derive(Debug, Clone, Copy)]
struct ContextLimits {
    before: usize,
    after: usize,
    include_profile: bool,
}

impl ContextLimits {
    fn of(c: &Criteria) -> Self {
        let side = |n: ruma::UInt| {
            usize::try_from(u64::from(n))
                .unwrap_or(MAX_CONTEXT)
                .min(MAX_CONTEXT)
        };
        ContextLimits {
            before: side(c.event_context.before_limit),
            after: side(c.event_context.after_limit),
            include_profile: c.event_context.include_profile,
        }
    }
}

/// `next_batch`: Synapse's layout (`group\nkey\ntoken`, base64) with a keyset token.
#[derive(Debug, Clone, PartialEq)]
struct Batch {
    /// `all`, or `room_id` / `sender` for a group's own pages.
    group: String,
    key: String,
    after: PageKey,
}

impl Batch {
    fn encode(&self) -> String {
        let raw = format!("{}\n{}\n{}", self.group, self.key, self.after.encode());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn decode(s: &str) -> Result<Batch> {
        let invalid = || Error::invalid_param("Invalid batch");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let mut parts = raw.splitn(3, '\n');
        let (Some(group), Some(key), Some(token)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        if !matches!(group, "all" | "room_id" | "sender") {
            return Err(invalid());
        }
        Ok(Batch {
            group: group.to_owned(),
            key: key.to_owned(),
            after: PageKey::decode(token).ok_or_else(invalid)?,
        })
    }
}

fn answer(
    s: &Services,
    who: &Identity,
    criteria: Criteria,
    batch: Option<Batch>,
    context: Option<ContextLimits>,
) -> Result<Value> {
    if criteria.search_term.len() > MAX_TERM_BYTES {
        return Err(Error::invalid_param("search_term is too long"));
    }
    let keys = search_keys(criteria.keys.as_deref());
    let order = match criteria.order_by {
        None | Some(OrderBy::Rank) => Order::Rank,
        Some(OrderBy::Recent) => Order::Recent,
        Some(_) => return Err(Error::invalid_param("order_by must be rank or recent")),
    };
    let group_keys: Vec<GroupingKey> = criteria
        .groupings
        .group_by
        .iter()
        .filter_map(|g| g.key.clone())
        .collect();
    if let Some(bad) = group_keys
        .iter()
        .find(|k| !matches!(k, GroupingKey::RoomId | GroupingKey::Sender))
    {
        return Err(Error::invalid_param(format!(
            "Invalid group by key: {bad:?}"
        )));
    }
    let filter = &criteria.filter;
    let limit = filter
        .limit
        .map_or(DEFAULT_LIMIT, |l| {
            usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT)
        })
        .clamp(1, MAX_LIMIT);
    let mut senders: Option<Vec<String>> = filter
        .senders
        .as_ref()
        .map(|v| v.iter().map(ToString::to_string).collect());
    let not_senders: Vec<String> = filter.not_senders.iter().map(ToString::to_string).collect();
    let mut only_room = None;
    if let Some(b) = &batch {
        match b.group.as_str() {
            "room_id" => only_room = Some(b.key.clone()),
            "sender" => senders = Some(intersect(senders, &b.key)),
            _ => {}
        }
    }
    if let Some(b) = &batch {
        let fits = matches!(
            (order, b.after),
            (Order::Recent, PageKey::Below(_)) | (Order::Rank, PageKey::Ranked { .. })
        );
        if !fits {
            return Err(Error::invalid_param(
                "Invalid batch: it pages another order",
            ));
        }
    }
    let scope = Scope::of_member(&s.rooms, &who.user_id, |room_id| {
        filter.rooms.as_ref().is_none_or(|r| r.contains(room_id))
            && !filter.not_rooms.contains(room_id)
            && only_room.as_deref().is_none_or(|o| o == room_id.as_str())
    })?;
    let kinds = indexed_kinds(filter);
    let found = s.search.search(&SearchRequest {
        words: &criteria.search_term,
        keys: &keys,
        scope: &scope,
        senders: senders.as_deref(),
        not_senders: &not_senders,
        kinds: Some(&kinds),
        contains_url: filter.url_filter.map(|f| f == UrlFilter::EventsWithUrl),
        order,
        after: batch.as_ref().map(|b| b.after),
        limit,
        count: true,
    })?;
    Page {
        s,
        who,
        order,
        found: &found,
        batch: batch.as_ref(),
    }
    .render(&group_keys, context, criteria.include_state == Some(true))
}

fn intersect(senders: Option<Vec<String>>, one: &str) -> Vec<String> {
    match senders {
        Some(list) if !list.iter().any(|s| s == one) => Vec::new(),
        _ => vec![one.to_owned()],
    }
}

/// The keys to search; a key the server does not know matches nothing (as in Synapse).
fn search_keys(keys: Option<&[SearchKeys]>) -> Vec<Key> {
    let Some(keys) = keys else {
        return vec![Key::Body, Key::Name, Key::Topic];
    };
    keys.iter()
        .filter_map(|k| match k {
            SearchKeys::ContentBody => Some(Key::Body),
            SearchKeys::ContentName => Some(Key::Name),
            SearchKeys::ContentTopic => Some(Key::Topic),
            _ => None,
        })
        .collect()
}

/// The indexed event types the filter's `types` and `not_types` (with `*` wildcards) allow.
fn indexed_kinds(filter: &RoomEventFilter) -> Vec<String> {
    INDEXED_TYPES
        .iter()
        .filter(|t| types_allowed(t, filter.types.as_deref(), &filter.not_types))
        .map(|t| (*t).to_owned())
        .collect()
}

/// One page of results, rendered.
struct Page<'a> {
    s: &'a Services,
    who: &'a Identity,
    order: Order,
    found: &'a Found,
    batch: Option<&'a Batch>,
}

impl Page<'_> {
    fn render(
        &self,
        group_keys: &[GroupingKey],
        context: Option<ContextLimits>,
        include_state: bool,
    ) -> Result<Value> {
        let view = EventView::of(
            &self.who.user_id,
            &self.who.device_id,
            ClientFormat::WithRoomId,
        );
        let mut results = Vec::new();
        // The words as typed (what Synapse gives), then how the results wrote them.
        let mut highlights: Vec<String> = self.found.typed.clone();
        let mut rooms: Vec<OwnedRoomId> = Vec::new();
        let mut by_room: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut by_sender: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut group_order: Vec<(String, String)> = Vec::new();
        let mut readers: HashMap<OwnedRoomId, (Arc<RoomMeta>, Visibility)> = HashMap::new();
        let filter = room_filter(&RoomEventFilter::default());
        for hit in &self.found.hits {
            let event = self.s.rooms.event(hit.pos)?;
            if !crate::search::document::still_has_text(&event) {
                continue;
            }
            let pdu = &event.pdu;
            for word in self.highlights_of(&event)? {
                if !highlights.contains(&word) {
                    highlights.push(word);
                }
            }
            let mut result = json!({
                "rank": f64::from(hit.score),
                "result": serde_json::from_str::<Value>(self.s.rooms.format_event(&event, view)?.get())
                    .map_err(|e| Error::internal(e.to_string()))?,
                "context": {},
            });
            if let Some(limits) = context {
                // Each room's visibility is read once per page, not once per result.
                let (room, visibility) = match readers.entry(pdu.room_id.clone()) {
                    Entry::Occupied(known) => known.into_mut(),
                    Entry::Vacant(new) => {
                        let room = self.s.rooms.room(&pdu.room_id)?;
                        let visibility = Visibility::load(&self.s.rooms, &room, &self.who.user_id)?;
                        new.insert((room, visibility))
                    }
                };
                let reader = Reader {
                    room,
                    visibility,
                    filter: &filter,
                };
                result["context"] = self.context(hit, &reader, limits, view)?;
            }
            results.push(result);
            if !rooms.contains(&pdu.room_id) {
                rooms.push(pdu.room_id.clone());
            }
            for (group, key) in [
                ("room_id", pdu.room_id.to_string()),
                ("sender", pdu.sender.to_string()),
            ] {
                let map = if group == "room_id" {
                    &mut by_room
                } else {
                    &mut by_sender
                };
                let entry = map.entry(key.clone()).or_default();
                if entry.is_empty() {
                    group_order.push((group.to_owned(), key));
                }
                entry.push(pdu.event_id.to_string());
            }
        }
        let token = |group: &str, key: &str, after: Option<PageKey>| {
            after.filter(|_| self.found.more).map(|after| {
                Batch {
                    group: group.to_owned(),
                    key: key.to_owned(),
                    after,
                }
                .encode()
            })
        };
        let mut out = json!({
            "results": results,
            "count": self.found.count,
            "highlights": highlights,
        });
        let (group, key) = self
            .batch
            .map_or(("all", ""), |b| (b.group.as_str(), b.key.as_str()));
        if let Some(token) = token(group, key, self.found.after(self.found.hits.len())) {
            out["next_batch"] = json!(token);
        }
        let mut groups = Map::new();
        for wanted in group_keys {
            let (name, map) = match wanted {
                GroupingKey::RoomId => ("room_id", &by_room),
                _ => ("sender", &by_sender),
            };
            let mut rendered = Map::new();
            for (key, ids) in map {
                let order = group_order
                    .iter()
                    .filter(|(g, _)| g == name)
                    .position(|(_, k)| k == key)
                    .map_or(0, |i| i + 1);
                let mut g = json!({ "results": ids, "order": order });
                if let Some(token) = token(name, key, self.group_after(name, key, ids.len())) {
                    g["next_batch"] = json!(token);
                }
                rendered.insert(key.clone(), g);
            }
            if !rendered.is_empty() {
                groups.insert(name.to_owned(), Value::Object(rendered));
            }
        }
        if !groups.is_empty() {
            out["groups"] = Value::Object(groups);
        }
        if include_state && !rooms.is_empty() {
            out["state"] = self.state(&rooms, view)?;
        }
        Ok(json!({ "search_categories": { "room_events": out } }))
    }

    /// Where one group's own pages continue, if this page lets that be known: in the rank
    /// order only from the first page or a page of that group.
    fn group_after(&self, group: &str, key: &str, shown: usize) -> Option<PageKey> {
        let before = match self.batch {
            None => 0,
            Some(b) if b.group == group && b.key == key => match b.after {
                PageKey::Ranked { skip, .. } => skip,
                PageKey::Below(_) => 0,
            },
            Some(_) => match self.order {
                Order::Recent => 0,
                Order::Rank => return None,
            },
        };
        self.found.group_after(before + shown)
    }

    /// The words of the event's indexed text that the search matched.
    fn highlights_of(&self, event: &crate::rooms::Loaded) -> Result<Vec<String>> {
        let mut texts = Vec::new();
        let content: Map<String, Value> = event.pdu.content_as().unwrap_or_default();
        for field in ["body", "name", "topic"] {
            if let Some(text) = content.get(field).and_then(Value::as_str) {
                texts.push(text.to_owned());
            }
        }
        if let Some(edit) = self.s.rooms.current_edit(event)?
            && let Some(body) = crate::search::document::new_body(&edit.pdu)
        {
            texts.push(body);
        }
        let mut words = Vec::new();
        for text in texts {
            words.extend(crate::search::analyzer::matching_words(
                &text,
                &self.found.terms,
                &self.found.prefixes,
            ));
        }
        Ok(words)
    }

    /// The events around a result the user may see, with the senders' profiles when asked.
    fn context(
        &self,
        hit: &Hit,
        reader: &Reader<'_>,
        limits: ContextLimits,
        view: EventView<'_>,
    ) -> Result<Value> {
        let s = self.s;
        let room = reader.room;
        let (before, _) = walk(
            s,
            reader,
            hit.pos - 1,
            Direction::Backward,
            limits.before,
            None,
        )?;
        let (after, _) = walk(s, reader, hit.pos, Direction::Forward, limits.after, None)?;
        let render = |positions: &[u64]| -> Result<Vec<Value>> {
            positions
                .iter()
                .map(|p| {
                    serde_json::from_str(s.rooms.client_event(*p, view)?.get())
                        .map_err(|e| Error::internal(e.to_string()))
                })
                .collect()
        };
        let mut context = json!({
            "events_before": render(&before)?,
            "events_after": render(&after)?,
            "start": format_token(before.last().map_or(hit.pos - 1, |p| p - 1)),
            "end": format_token(after.last().copied().unwrap_or(hit.pos)),
        });
        if limits.include_profile {
            let at = after.last().copied().unwrap_or(hit.pos);
            let mut profiles = Map::new();
            for pos in before.iter().chain([&hit.pos]).chain(after.iter()) {
                let sender = s.rooms.event(*pos)?.pdu.sender.to_string();
                if profiles.contains_key(&sender) {
                    continue;
                }
                if let Some(member) =
                    s.rooms
                        .state_pos_at(room.short, "m.room.member", &sender, at)?
                {
                    let content: Map<String, Value> =
                        s.rooms.event(member)?.pdu.content_as().unwrap_or_default();
                    profiles.insert(
                        sender,
                        json!({
                            "displayname": content.get("displayname").cloned().unwrap_or(Value::Null),
                            "avatar_url": content.get("avatar_url").cloned().unwrap_or(Value::Null),
                        }),
                    );
                }
            }
            context["profile_info"] = Value::Object(profiles);
        }
        Ok(context)
    }

    /// The current state of each room with a result (`include_state`).
    fn state(&self, rooms: &[OwnedRoomId], view: EventView<'_>) -> Result<Value> {
        let mut out = Map::new();
        for room_id in rooms {
            let mut events = Vec::new();
            for (_, _, pos) in self.s.rooms.visible_state(room_id, &self.who.user_id)? {
                events.push(
                    serde_json::from_str::<Value>(self.s.rooms.client_event(pos, view)?.get())
                        .map_err(|e| Error::internal(e.to_string()))?,
                );
            }
            out.insert(room_id.to_string(), Value::Array(events));
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_refuse_garbage() {
        let b = Batch {
            group: "room_id".into(),
            key: "!r:x".into(),
            after: PageKey::Ranked {
                skip: 3,
                ceiling: 42,
            },
        };
        assert_eq!(Batch::decode(&b.encode()).unwrap(), b);
        assert!(Batch::decode("not base64 !").is_err());
        let bogus = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("elsewhere\n\n3f.1");
        assert!(Batch::decode(&bogus).is_err());
    }
}
