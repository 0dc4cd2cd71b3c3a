//! The conversation index: one record per conversation and, per filter, a sorted key range.
//!
//! Every filter the agent API offers is a facet (`status`, `assignee`, `label`, …) with a value;
//! each conversation has one key per facet value and sort order: `facet | value | sort | time |
//! room`. A filtered, sorted page is then a prefix range scan that stops after `limit` hits, and
//! its cost follows the page, not the number of conversations. The record and its keys are
//! rewritten in one batch, so a filter never sees half an update.

use std::iter::Peekable;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::{
    changes::ChangeGuard,
    conversation::Conversation,
    filter::{Filter, PageToken, Sort, assignee_value},
};
use crate::{
    error::{Error, Result},
    read_cache::ReadCache,
    storage::{self, Batch, Key, Store, Table, keys},
};

/// Sort kinds inside a facet value.
const BY_ACTIVITY: u8 = b'a';
const BY_WAITING: u8 = b'w';
const BY_CREATED: u8 = b'c';

/// What the server knows about a conversation besides its state event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConversationRecord {
    pub(crate) room_id: OwnedRoomId,
    pub(crate) content: Conversation,
    /// When the room became a conversation (ms).
    pub(crate) created_ts: u64,
    /// Last message or conversation change (ms): "updated".
    pub(crate) last_activity_ts: u64,
    /// The oldest customer message no agent has answered yet (ms).
    pub(crate) waiting_since: Option<u64>,
    pub(crate) messages: u64,
    pub(crate) customer_messages: u64,
    pub(crate) agent_messages: u64,
    /// The last stream position applied to this record: replays below it are ignored.
    pub(crate) applied_pos: u64,
    /// Position of the state event `content` comes from: an older one never overwrites it.
    #[serde(default)]
    pub(crate) state_pos: u64,
    /// Day number (days since the epoch, local to the business hours) of the last out-of-office
    /// message, so it is sent at most once a day.
    pub(crate) out_of_office_day: Option<i64>,
    /// The customer's latest message, for `!suggest`.
    #[serde(default)]
    pub(crate) last_customer_text: Option<String>,
}

impl ConversationRecord {
    /// The record of a room that just became a conversation, at `created_ts`.
    pub(crate) fn new(room_id: OwnedRoomId, created_ts: u64) -> Self {
        ConversationRecord {
            room_id,
            content: Conversation::default(),
            created_ts,
            last_activity_ts: 0,
            waiting_since: None,
            messages: 0,
            customer_messages: 0,
            agent_messages: 0,
            applied_pos: 0,
            state_pos: 0,
            out_of_office_day: None,
            last_customer_text: None,
        }
    }

    /// Every `(facet, value)` the record is listed under.
    fn facets(&self) -> Vec<(&'static str, String)> {
        let c = &self.content;
        let assignee = c.assignee.as_deref();
        let mut out = vec![
            ("all", String::new()),
            ("status", c.status.as_str().to_owned()),
            ("assignee", assignee_value(assignee).to_owned()),
            ("channel", c.channel.as_str().to_owned()),
            ("priority", c.priority.as_str().to_owned()),
        ];
        for l in &c.labels {
            out.push(("label", l.clone()));
        }
        if let Some(o) = &c.contact.organisation {
            out.push(("organisation", o.clone()));
        }
        if let Some(p) = &c.product_id {
            out.push(("product", p.clone()));
        }
        if let Some(o) = &c.order_id {
            out.push(("order", o.clone()));
        }
        if let (Some(a), true) = (assignee, c.is_active()) {
            out.push(("load", a.to_string()));
        }
        out
    }

    /// The index keys of the record.
    fn keys(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (facet, value) in self.facets() {
            out.push(entry_key(
                facet,
                &value,
                BY_ACTIVITY,
                self.last_activity_ts,
                &self.room_id,
            ));
            if let Some(w) = self.waiting_since.filter(|_| self.content.is_active()) {
                out.push(entry_key(facet, &value, BY_WAITING, w, &self.room_id));
            }
        }
        out.push(entry_key(
            "all",
            "",
            BY_CREATED,
            self.created_ts,
            &self.room_id,
        ));
        out
    }
}

fn prefix(facet: &str, value: &str, sort: u8) -> Vec<u8> {
    let mut k = Key::new().str(facet).str(value).into_vec();
    k.push(sort);
    k
}

fn entry_key(facet: &str, value: &str, sort: u8, ts: u64, room: &RoomId) -> Vec<u8> {
    Key::from_vec(prefix(facet, value, sort))
        .u64(ts)
        .str(room.as_str())
        .into_vec()
}

/// `(time, room)` of an index key under `prefix`.
fn decode_entry(prefix_len: usize, key: &[u8]) -> Option<(u64, OwnedRoomId)> {
    let rest = key.get(prefix_len..)?;
    let ts = keys::decode_u64(rest.get(..8)?);
    let room = RoomId::parse(keys::str_parts(&rest[8..]).next()?).ok()?;
    Some((ts, room))
}

/// The decoded entries of a scan of index keys under a prefix of `prefix_len` bytes; keys
/// that do not decode are skipped.
fn entries<K: AsRef<[u8]>, V>(
    prefix_len: usize,
    scan: impl Iterator<Item = storage::Result<(K, V)>>,
) -> impl Iterator<Item = Result<(u64, OwnedRoomId)>> {
    scan.filter_map(move |entry| match entry {
        Ok((key, _)) => decode_entry(prefix_len, key.as_ref()).map(Ok),
        Err(e) => Some(Err(e.into())),
    })
}

/// The decoded entries of one index scan: `(time, room)`.
type Scan = Box<dyn Iterator<Item = Result<(u64, OwnedRoomId)>>>;

/// The next entry of several scans merged (several only for an agent's "mine or unassigned"
/// view), in sort order; a failed read comes first, to be returned.
fn next_in_order(
    scans: &mut [Peekable<Scan>],
    descending: bool,
) -> Option<Result<(u64, OwnedRoomId)>> {
    let mut best: Option<(usize, Option<&(u64, OwnedRoomId)>)> = None;
    for (i, it) in scans.iter_mut().enumerate() {
        let entry = match it.peek() {
            None => continue,
            Some(Ok(entry)) => entry,
            Some(Err(_)) => {
                best = Some((i, None));
                break;
            }
        };
        let better = match best {
            None => true,
            Some((_, Some(b))) if descending => entry > b,
            Some((_, Some(b))) => entry < b,
            Some((_, None)) => false,
        };
        if better {
            best = Some((i, Some(entry)));
        }
    }
    let (i, _) = best?;
    scans[i].next()
}

/// Fewest rooms a listing asks the text about at once, when it filters by text.
const MIN_TEXT_BATCH: usize = 16;

/// The conversation records and their index.
pub(crate) struct ConversationIndex {
    store: Store,
    /// Room → whether it is a conversation: the support bot asks for every message.
    known: ReadCache<OwnedRoomId, bool>,
}

impl ConversationIndex {
    pub(crate) fn new(store: Store) -> Self {
        ConversationIndex {
            store,
            known: ReadCache::new(65_536),
        }
    }

    pub(crate) fn get(&self, room_id: &RoomId) -> Result<Option<ConversationRecord>> {
        self.store
            .get(Table::SupportConversations, room_id.as_bytes())?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt conversation record: {e}")))
            })
            .transpose()
    }

    /// Whether the room is a conversation, without reading its record.
    pub(crate) fn contains(&self, room_id: &RoomId) -> Result<bool> {
        if let Some(known) = self.known.get(room_id) {
            return Ok(known);
        }
        let generation = self.known.generation();
        let found = self
            .store
            .contains(Table::SupportConversations, room_id.as_bytes())?;
        self.known.fill(room_id.to_owned(), found, generation);
        Ok(found)
    }

    /// Writes the record into `batch`, replacing the index keys of `old`. `old` must be what is
    /// stored: the caller read it under the change lock it still holds, so no other change
    /// came in between and left keys behind.
    pub(crate) fn put(
        &self,
        _held: &ChangeGuard<'_>,
        batch: &mut Batch,
        old: Option<&ConversationRecord>,
        new: &ConversationRecord,
    ) {
        let new_keys = new.keys();
        if let Some(old) = old {
            for k in old.keys() {
                if !new_keys.contains(&k) {
                    batch.delete(Table::SupportIndex, k);
                }
            }
        }
        for k in new_keys {
            batch.put(Table::SupportIndex, k, Vec::new());
        }
        batch.put(
            Table::SupportConversations,
            new.room_id.as_bytes().to_vec(),
            serde_json::to_vec(new).expect("record serializes"),
        );
        // Before the write is applied: a room that looks like a conversation a little early
        // (or, if the write fails, for good) only costs the bot a look at its record.
        self.known.put(new.room_id.clone(), true);
    }

    /// A page of conversations, sorted, from `from`; with the token of the next page.
    pub(crate) fn list(
        &self,
        filter: &Filter,
        sort: Sort,
        limit: usize,
        from: Option<&PageToken>,
    ) -> Result<(Vec<ConversationRecord>, Option<PageToken>)> {
        let kind = match sort {
            Sort::Activity => BY_ACTIVITY,
            Sort::Waiting => BY_WAITING,
        };
        // Newest activity first; longest waiting (oldest time) first.
        let descending = sort == Sort::Activity;
        let mut scans: Vec<_> = filter
            .drivers()
            .into_iter()
            .map(|(facet, value)| {
                self.scan(&prefix(facet, &value, kind), descending, from)
                    .peekable()
            })
            .collect();
        if limit == 0 {
            return Ok((Vec::new(), None));
        }
        let mut out = Vec::new();
        // The records that passed every other filter, waiting for the text's answer: asked a
        // batch at a time, as many as the page still needs, since one question about a batch
        // of rooms costs the index about what one about a single room does.
        let mut waiting: Vec<(u64, OwnedRoomId, ConversationRecord)> = Vec::new();
        let mut scanned = false;
        while !scanned {
            match next_in_order(&mut scans, descending) {
                None => scanned = true,
                Some(entry) => {
                    let (ts, room) = entry?;
                    if descending && filter.updated_since.is_some_and(|since| ts < since) {
                        scanned = true;
                    } else if filter.admits_room(&room)
                        && let Some(record) = self.get(&room)?
                        && filter.matches(&record)
                    {
                        waiting.push((ts, room, record));
                    }
                }
            }
            let wanted = match filter.text {
                Some(_) => (limit - out.len()).max(MIN_TEXT_BATCH),
                None => limit - out.len(),
            };
            let ready = waiting.len() >= wanted || (scanned && !waiting.is_empty());
            if !ready {
                continue;
            }
            let rooms: Vec<&RoomId> = waiting.iter().map(|(_, room, _)| room.as_ref()).collect();
            let text = filter.text_matches(&rooms)?;
            let batch = std::mem::take(&mut waiting);
            let after = batch.len();
            for (i, ((ts, room, record), _)) in batch
                .into_iter()
                .zip(text)
                .enumerate()
                .filter(|(_, (_, matches))| *matches)
            {
                out.push(record);
                if out.len() == limit {
                    let more = i + 1 < after
                        || (!scanned && scans.iter_mut().any(|it| it.peek().is_some()));
                    return Ok((out, more.then_some(PageToken { ts, room })));
                }
            }
        }
        Ok((out, None))
    }

    /// The entries under the sort prefix `p`, in sort order, after `from`.
    fn scan(&self, p: &[u8], descending: bool, from: Option<&PageToken>) -> Scan {
        let Some(from) = from else {
            let it = self.store.scan_prefix(Table::SupportIndex, p);
            return if descending {
                Box::new(entries(p.len(), it.rev()))
            } else {
                Box::new(entries(p.len(), it))
            };
        };
        let at = Key::from_vec(p.to_vec())
            .u64(from.ts)
            .str(from.room.as_str())
            .into_vec();
        if descending {
            let it = self.store.range(Table::SupportIndex, p, &at).rev();
            Box::new(entries(p.len(), it))
        } else {
            let mut after = at;
            after.push(0);
            let mut end = p.to_vec();
            *end.last_mut().expect("sort byte") += 1;
            let it = self.store.range(Table::SupportIndex, &after, &end);
            Box::new(entries(p.len(), it))
        }
    }

    /// How many conversations have this status: their entries under one facet, counted (an
    /// admin-rate scan, `charla admin stats`).
    pub(crate) fn count_status(&self, status: super::conversation::Status) -> Result<usize> {
        let mut count = 0;
        for entry in self.store.scan_prefix(
            Table::SupportIndex,
            &prefix("status", status.as_str(), BY_ACTIVITY),
        ) {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    /// Conversations created in `[from, to)`, oldest first: what metrics read.
    pub(crate) fn created_between(&self, from: u64, to: u64) -> Result<Vec<ConversationRecord>> {
        let p = prefix("all", "", BY_CREATED);
        let lo = Key::from_vec(p.clone()).u64(from).into_vec();
        let hi = Key::from_vec(p.clone()).u64(to).into_vec();
        let mut out = Vec::new();
        for entry in entries(p.len(), self.store.range(Table::SupportIndex, &lo, &hi)) {
            let (_, room) = entry?;
            if let Some(r) = self.get(&room)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Open and pending conversations assigned to `agent`: their load.
    pub(crate) fn load(&self, agent: &UserId) -> Result<usize> {
        let p = prefix("load", agent.as_str(), BY_ACTIVITY);
        Ok(self.store.scan_prefix(Table::SupportIndex, &p).count())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_user_id, room_id, user_id};

    use super::*;
    use crate::support::{conversation::Status, filter::Assignee};

    fn record(room: &str, ts: u64, status: Status, assignee: Option<&str>) -> ConversationRecord {
        let mut r = ConversationRecord::new(RoomId::parse(room).unwrap(), ts);
        r.content.status = status;
        r.content.assignee = assignee.map(|a| UserId::parse(a).unwrap());
        r.last_activity_ts = ts;
        r
    }

    #[tokio::test]
    async fn filters_pages_and_updates() {
        let dir = tempfile::tempdir().unwrap();
        let index = ConversationIndex::new(Store::open(dir.path(), 8).unwrap());
        let changes = crate::support::changes::Changes::default();
        let held = changes.lock().await;
        let mut b = Batch::new();
        for (i, (status, a)) in [
            (Status::Open, None),
            (Status::Open, Some("@ana:x")),
            (Status::Closed, Some("@ana:x")),
            (Status::Open, Some("@bob:x")),
        ]
        .into_iter()
        .enumerate()
        {
            index.put(
                &held,
                &mut b,
                None,
                &record(&format!("!r{i}:x"), 10 + i as u64, status, a),
            );
        }
        index.store.write_durable(b).await.unwrap();
        let rooms = |v: Vec<ConversationRecord>| {
            v.into_iter()
                .map(|r| r.room_id.to_string())
                .collect::<Vec<_>>()
        };
        let f = Filter {
            status: Some(Status::Open),
            ..Default::default()
        };
        let (page, next) = index.list(&f, Sort::Activity, 2, None).unwrap();
        assert_eq!(rooms(page), vec!["!r3:x", "!r1:x"]);
        let (page, next) = index.list(&f, Sort::Activity, 2, next.as_ref()).unwrap();
        assert_eq!(rooms(page), vec!["!r0:x"]);
        assert_eq!(next, None);
        let ana = owned_user_id!("@ana:x");
        let mine = Filter {
            only_assignees: Some(vec![Assignee::User(ana.clone()), Assignee::Unassigned]),
            ..Default::default()
        };
        let (page, _) = index.list(&mine, Sort::Activity, 10, None).unwrap();
        assert_eq!(rooms(page), vec!["!r2:x", "!r1:x", "!r0:x"]);
        let queue = Filter {
            assignee: Assignee::Unassigned,
            ..Default::default()
        };
        let (page, _) = index.list(&queue, Sort::Activity, 10, None).unwrap();
        assert_eq!(rooms(page), vec!["!r0:x"]);
        let bobs = Filter {
            assignee: Assignee::User(owned_user_id!("@bob:x")),
            ..Default::default()
        };
        let (page, _) = index.list(&bobs, Sort::Activity, 10, None).unwrap();
        assert_eq!(rooms(page), vec!["!r3:x"]);
        assert_eq!(index.load(&ana).unwrap(), 1);
        // Closing r1 drops it from ana's load and the open filter.
        let old = index.get(room_id!("!r1:x")).unwrap().unwrap();
        let mut new = old.clone();
        new.content.status = Status::Closed;
        let mut b = Batch::new();
        index.put(&held, &mut b, Some(&old), &new);
        index.store.write_durable(b).await.unwrap();
        assert_eq!(index.load(user_id!("@ana:x")).unwrap(), 0);
        let (page, _) = index.list(&f, Sort::Activity, 10, None).unwrap();
        assert_eq!(rooms(page), vec!["!r3:x", "!r0:x"]);
        let since = Filter {
            updated_since: Some(12),
            ..Default::default()
        };
        let (page, _) = index.list(&since, Sort::Activity, 10, None).unwrap();
        assert_eq!(rooms(page), vec!["!r3:x", "!r2:x"]);
    }

    #[test]
    fn the_queue_is_the_empty_assignee_in_the_keys() {
        // Stored keys keep their format: `assignee | "" | …` is the queue.
        let queued = record("!q:x", 5, Status::Open, None);
        let key = entry_key("assignee", "", BY_ACTIVITY, 5, &queued.room_id);
        assert!(queued.keys().contains(&key));
        assert_eq!(Assignee::Unassigned.value(), Some(""));
    }

    #[test]
    fn records_stored_before_typed_ids_read_and_write_the_same() {
        let stored = serde_json::json!({
            "room_id": "!a:x",
            "content": Conversation::from_json(&serde_json::json!({"assignee": "@ana:x"})).to_json(),
            "created_ts": 1, "last_activity_ts": 2, "waiting_since": 3, "messages": 4,
            "customer_messages": 5, "agent_messages": 6, "applied_pos": 7, "state_pos": 8,
            "out_of_office_day": null, "last_customer_text": "hola",
        });
        let record: ConversationRecord = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(record.room_id, "!a:x");
        assert_eq!(record.content.assignee.as_deref(), Some(user_id!("@ana:x")));
        assert_eq!(serde_json::to_value(&record).unwrap(), stored);
    }
}
