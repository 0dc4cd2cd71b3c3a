//! Searching the messages of the desk's conversations (`GET /api/support/v1/search`).
//!
//! The index answers for every room; a hit is kept when it is a message of a conversation that
//! passes the listing's filters and that the viewer sees (admins: all; agents: their own and the
//! queue). Hits are looked at a page at a time, for a bounded number of pages, so a search whose
//! hits are mostly elsewhere costs a bounded amount of work; the page token then continues from
//! the last hit looked at, so nothing is skipped or repeated.

use std::{collections::HashMap, sync::Arc};

use ruma::OwnedRoomId;

use super::{
    Hit, Order, PageKey, Scope, SearchRequest, SearchService,
    document::{Key, message_body, new_body, still_has_text},
};
use crate::{
    error::Result,
    rooms::Loaded,
    support::{ConversationRecord, Desk, access::Viewer, filter::Filter},
};

/// Index pages one request looks at.
const ROUNDS: usize = 5;

/// A message found, with its conversation.
pub(crate) struct MessageHit {
    pub(crate) hit: Hit,
    pub(crate) event: Arc<Loaded>,
    /// The text the message reads now (its latest edit's).
    pub(crate) text: String,
    pub(crate) conversation: ConversationRecord,
}

/// What one search asks.
pub(crate) struct MessageSearch<'a> {
    pub(crate) words: &'a str,
    /// The listing's filters, with the viewer's restriction (`queries::restricted`).
    pub(crate) filter: &'a Filter,
    pub(crate) order: Order,
    pub(crate) after: Option<PageKey>,
    pub(crate) limit: usize,
}

/// A page of messages the viewer may read, and where the next page starts.
pub(crate) fn messages(
    desk: &Desk<'_>,
    search: &SearchService,
    viewer: &Viewer<'_>,
    q: &MessageSearch<'_>,
) -> Result<(Vec<MessageHit>, Option<PageKey>)> {
    let mut out = Vec::new();
    let mut after = q.after;
    let mut conversations: HashMap<OwnedRoomId, Option<ConversationRecord>> = HashMap::new();
    for _ in 0..ROUNDS {
        let found = search.search(&SearchRequest {
            words: q.words,
            keys: &[Key::Body],
            scope: &Scope::All,
            senders: None,
            not_senders: &[],
            kinds: None,
            contains_url: None,
            order: q.order,
            after,
            limit: q.limit * 2,
            count: false,
        })?;
        for (i, hit) in found.hits.iter().enumerate() {
            after = found.after(i + 1);
            let event = desk.rooms.event(hit.pos)?;
            if !still_has_text(&event) {
                continue;
            }
            let room_id = event.pdu.room_id.clone();
            let conversation = match conversations.get(&room_id) {
                Some(known) => known.clone(),
                None => {
                    let record = match desk.support.index.get(&room_id)? {
                        Some(r) if q.filter.matches(&r) && viewer.sees(desk, &r)? => Some(r),
                        _ => None,
                    };
                    conversations.insert(room_id, record.clone());
                    record
                }
            };
            let Some(conversation) = conversation else {
                continue;
            };
            let text = current_text(desk, &event)?;
            out.push(MessageHit {
                hit: *hit,
                event,
                text,
                conversation,
            });
            if out.len() == q.limit {
                let more = i + 1 < found.hits.len() || found.more;
                return Ok((out, if more { found.after(i + 1) } else { None }));
            }
        }
        if !found.more {
            return Ok((out, None));
        }
    }
    Ok((out, after))
}

/// A message's text as it reads now.
fn current_text(desk: &Desk<'_>, event: &Loaded) -> Result<String> {
    if let Some(edit) = desk.rooms.current_edit(event)?
        && let Some(body) = new_body(&edit.pdu)
    {
        return Ok(body);
    }
    Ok(message_body(&event.pdu).unwrap_or_default())
}
