//! The conversation index: one record per conversation and, per filter, a sorted key range.
//!
//! Every filter the agent API offers is a facet (`status`, `assignee`, `label`, …) with a value;
//! each conversation has one key per facet value and sort order: `facet | value | sort | time |
//! room`. A filtered, sorted page is then a prefix range scan that stops after `limit` hits, and
//! its cost follows the page, not the number of conversations. The record and its keys are
//! rewritten in one batch, so a filter never sees half an update.

use serde::{Deserialize, Serialize};

use super::{
    changes::ChangeGuard,
    conversation::{Channel, Conversation, Priority, Status},
};
use crate::{
    error::{Error, Result},
    read_cache::ReadCache,
    storage::{Batch, Key, Store, Table, keys},
};

/// Sort kinds inside a facet value.
const BY_ACTIVITY: u8 = b'a';
const BY_WAITING: u8 = b'w';
const BY_CREATED: u8 = b'c';

/// What the server knows about a conversation besides its state event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub room_id: String,
    pub content: Conversation,
    /// When the room became a conversation (ms).
    pub created_ts: u64,
    /// Last message or conversation change (ms): "updated".
    pub last_activity_ts: u64,
    /// The oldest customer message no agent has answered yet (ms).
    pub waiting_since: Option<u64>,
    pub messages: u64,
    pub customer_messages: u64,
    pub agent_messages: u64,
    /// The last stream position applied to this record: replays below it are ignored.
    pub applied_pos: u64,
    /// Position of the state event `content` comes from: an older one never overwrites it.
    #[serde(default)]
    pub state_pos: u64,
    /// Day number (days since the epoch, local to the business hours) of the last out-of-office
    /// message, so it is sent at most once a day.
    pub out_of_office_day: Option<i64>,
    /// The customer's latest message, for `!suggest`.
    #[serde(default)]
    pub last_customer_text: Option<String>,
}

impl ConversationRecord {
    /// Every `(facet, value)` the record is listed under.
    fn facets(&self) -> Vec<(&'static str, String)> {
        let c = &self.content;
        let mut out = vec![
            ("all", String::new()),
            ("status", c.status.as_str().to_owned()),
            ("assignee", c.assignee.clone().unwrap_or_default()),
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
        if let (Some(a), true) = (&c.assignee, c.is_active()) {
            out.push(("load", a.clone()));
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

fn entry_key(facet: &str, value: &str, sort: u8, ts: u64, room: &str) -> Vec<u8> {
    Key::from_vec(prefix(facet, value, sort))
        .u64(ts)
        .str(room)
        .into_vec()
}

/// `(time, room)` of an index key under `prefix`.
fn decode_entry(prefix_len: usize, key: &[u8]) -> Option<(u64, String)> {
    let rest = key.get(prefix_len..)?;
    let ts = keys::decode_u64(rest.get(..8)?);
    let room = keys::str_parts(&rest[8..]).next()?.to_owned();
    Some((ts, room))
}

/// Which way a listing is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Most recently active first.
    #[default]
    Activity,
    /// Longest waiting customer first (only conversations with an unanswered customer).
    Waiting,
}

/// The filters of a listing; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<Status>,
    /// `Some("")` is the unassigned queue.
    pub assignee: Option<String>,
    pub label: Option<String>,
    pub channel: Option<Channel>,
    pub priority: Option<Priority>,
    pub organisation: Option<String>,
    pub product_id: Option<String>,
    pub order_id: Option<String>,
    pub updated_since: Option<u64>,
    /// Restricts the listing to these assignees ("" = unassigned): an agent's view.
    pub only_assignees: Option<Vec<String>>,
}

impl Filter {
    fn matches(&self, r: &ConversationRecord) -> bool {
        let c = &r.content;
        let assignee = c.assignee.as_deref().unwrap_or("");
        self.status.is_none_or(|s| c.status == s)
            && self.assignee.as_deref().is_none_or(|a| a == assignee)
            && self.label.as_ref().is_none_or(|l| c.labels.contains(l))
            && self.channel.is_none_or(|ch| c.channel == ch)
            && self.priority.is_none_or(|p| c.priority == p)
            && self
                .organisation
                .as_ref()
                .is_none_or(|o| c.contact.organisation.as_ref() == Some(o))
            && self
                .product_id
                .as_ref()
                .is_none_or(|p| c.product_id.as_ref() == Some(p))
            && self
                .order_id
                .as_ref()
                .is_none_or(|o| c.order_id.as_ref() == Some(o))
            && self.updated_since.is_none_or(|t| r.last_activity_ts >= t)
            && self
                .only_assignees
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|a| a == assignee))
    }

    /// The facet values to scan: the most selective filter given, or the allowed assignees.
    fn drivers(&self) -> Vec<(&'static str, String)> {
        let single = [
            ("product", self.product_id.clone()),
            ("order", self.order_id.clone()),
            ("label", self.label.clone()),
            ("organisation", self.organisation.clone()),
            ("assignee", self.assignee.clone()),
        ];
        if let Some((facet, Some(value))) = single.into_iter().find(|(_, v)| v.is_some()) {
            return vec![(facet, value)];
        }
        if let Some(allowed) = &self.only_assignees {
            return allowed.iter().map(|a| ("assignee", a.clone())).collect();
        }
        let rest = [
            ("priority", self.priority.map(|p| p.as_str().to_owned())),
            ("channel", self.channel.map(|c| c.as_str().to_owned())),
            ("status", self.status.map(|s| s.as_str().to_owned())),
        ];
        match rest.into_iter().find(|(_, v)| v.is_some()) {
            Some((facet, Some(value))) => vec![(facet, value)],
            _ => vec![("all", String::new())],
        }
    }
}

/// Where the next page starts: the sort time and room of the last item returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub ts: u64,
    pub room: String,
}

impl PageToken {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.ts, self.room)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (ts, room) = s.split_once('_')?;
        Some(PageToken {
            ts: ts.parse().ok()?,
            room: room.to_owned(),
        })
    }
}

/// The conversation records and their index.
pub struct ConversationIndex {
    store: Store,
    /// Room → whether it is a conversation: the support bot asks for every message.
    known: ReadCache<String, bool>,
}

impl ConversationIndex {
    pub fn new(store: Store) -> Self {
        ConversationIndex {
            store,
            known: ReadCache::new(65_536),
        }
    }

    pub fn get(&self, room_id: &str) -> Result<Option<ConversationRecord>> {
        self.store
            .get(Table::SupportConversations, room_id.as_bytes())?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt conversation record: {e}")))
            })
            .transpose()
    }

    /// Whether the room is a conversation, without reading its record.
    pub fn contains(&self, room_id: &str) -> Result<bool> {
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
    pub fn put(
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
    pub fn list(
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
                let p = prefix(facet, &value, kind);
                let iter = self.scan(&p, descending, from);
                (p.len(), iter.peekable())
            })
            .collect();
        let mut out = Vec::new();
        loop {
            // Merge the scans (several only for an agent's "mine or unassigned" view).
            let mut best: Option<(usize, (u64, String))> = None;
            for (i, (plen, it)) in scans.iter_mut().enumerate() {
                let Some(entry) = it.peek() else { continue };
                let (k, _) = entry.as_ref().map_err(|e| Error::internal(e.to_string()))?;
                let Some(decoded) = decode_entry(*plen, k) else {
                    it.next();
                    continue;
                };
                let better = match &best {
                    None => true,
                    Some((_, b)) if descending => decoded > *b,
                    Some((_, b)) => decoded < *b,
                };
                if better {
                    best = Some((i, decoded));
                }
            }
            let Some((i, (ts, room))) = best else { break };
            scans[i].1.next();
            if descending && filter.updated_since.is_some_and(|since| ts < since) {
                break;
            }
            let Some(record) = self.get(&room)? else {
                continue;
            };
            if !filter.matches(&record) {
                continue;
            }
            out.push(record);
            if out.len() == limit {
                let more = scans.iter_mut().any(|(_, it)| it.peek().is_some());
                return Ok((out, more.then_some(PageToken { ts, room })));
            }
        }
        Ok((out, None))
    }

    fn scan(
        &self,
        p: &[u8],
        descending: bool,
        from: Option<&PageToken>,
    ) -> Box<
        dyn Iterator<Item = crate::storage::Result<(crate::storage::Slice, crate::storage::Slice)>>,
    > {
        let Some(from) = from else {
            let it = self.store.scan_prefix(Table::SupportIndex, p);
            return if descending {
                Box::new(it.rev())
            } else {
                Box::new(it)
            };
        };
        let at = Key::from_vec(p.to_vec())
            .u64(from.ts)
            .str(&from.room)
            .into_vec();
        if descending {
            Box::new(self.store.range(Table::SupportIndex, p, &at).rev())
        } else {
            let mut after = at;
            after.push(0);
            let mut end = p.to_vec();
            *end.last_mut().expect("sort byte") += 1;
            Box::new(self.store.range(Table::SupportIndex, &after, &end))
        }
    }

    /// Conversations created in `[from, to)`, oldest first: what metrics read.
    pub fn created_between(&self, from: u64, to: u64) -> Result<Vec<ConversationRecord>> {
        let p = prefix("all", "", BY_CREATED);
        let lo = Key::from_vec(p.clone()).u64(from).into_vec();
        let hi = Key::from_vec(p.clone()).u64(to).into_vec();
        let mut out = Vec::new();
        for entry in self.store.range(Table::SupportIndex, &lo, &hi) {
            let (k, _) = entry?;
            if let Some((_, room)) = decode_entry(p.len(), &k)
                && let Some(r) = self.get(&room)?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Open and pending conversations assigned to `agent`: their load.
    pub fn load(&self, agent: &str) -> Result<usize> {
        Ok(self
            .store
            .scan_prefix(Table::SupportIndex, &prefix("load", agent, BY_ACTIVITY))
            .count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(room: &str, ts: u64, status: Status, assignee: Option<&str>) -> ConversationRecord {
        ConversationRecord {
            room_id: room.into(),
            content: Conversation {
                status,
                assignee: assignee.map(Into::into),
                ..Default::default()
            },
            created_ts: ts,
            last_activity_ts: ts,
            ..Default::default()
        }
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
        let rooms =
            |v: Vec<ConversationRecord>| v.into_iter().map(|r| r.room_id).collect::<Vec<_>>();
        let f = Filter {
            status: Some(Status::Open),
            ..Default::default()
        };
        let (page, next) = index.list(&f, Sort::Activity, 2, None).unwrap();
        assert_eq!(rooms(page), vec!["!r3:x", "!r1:x"]);
        let (page, next) = index.list(&f, Sort::Activity, 2, next.as_ref()).unwrap();
        assert_eq!(rooms(page), vec!["!r0:x"]);
        assert_eq!(next, None);
        let mine = Filter {
            only_assignees: Some(vec!["@ana:x".into(), String::new()]),
            ..Default::default()
        };
        let (page, _) = index.list(&mine, Sort::Activity, 10, None).unwrap();
        assert_eq!(rooms(page), vec!["!r2:x", "!r1:x", "!r0:x"]);
        assert_eq!(index.load("@ana:x").unwrap(), 1);
        // Closing r1 drops it from ana's load and the open filter.
        let old = index.get("!r1:x").unwrap().unwrap();
        let mut new = old.clone();
        new.content.status = Status::Closed;
        let mut b = Batch::new();
        index.put(&held, &mut b, Some(&old), &new);
        index.store.write_durable(b).await.unwrap();
        assert_eq!(index.load("@ana:x").unwrap(), 0);
        let (page, _) = index.list(&f, Sort::Activity, 10, None).unwrap();
        assert_eq!(rooms(page), vec!["!r3:x", "!r0:x"]);
        let since = Filter {
            updated_since: Some(12),
            ..Default::default()
        };
        let (page, _) = index.list(&since, Sort::Activity, 10, None).unwrap();
        assert_eq!(rooms(page), vec!["!r3:x", "!r2:x"]);
    }
}
