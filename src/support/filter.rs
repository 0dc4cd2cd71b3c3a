//! What a listing of conversations asks for: filters, the order, where a page starts.
//!
//! The index ([`super::index`]) answers them; the support API builds them from a query, and an
//! agent's own restriction is added by [`super::queries`].

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{
    conversation::{Channel, Priority, Status},
    index::ConversationRecord,
};

/// The `assignee` key's value of a conversation or ticket: the user id, `""` for nobody (the
/// queue). Part of the stored keys' format.
pub(crate) fn assignee_value(assignee: Option<&UserId>) -> &str {
    assignee.map_or("", UserId::as_str)
}

/// Whose conversations a listing asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Assignee {
    /// Anyone's, and the queue.
    #[default]
    Anyone,
    /// The queue: conversations nobody is assigned.
    Unassigned,
    User(OwnedUserId),
}

impl Assignee {
    /// Whether a conversation with this assignee is asked for.
    pub(crate) fn matches(&self, assignee: Option<&UserId>) -> bool {
        match self {
            Assignee::Anyone => true,
            Assignee::Unassigned => assignee.is_none(),
            Assignee::User(user) => assignee == Some(user.as_ref()),
        }
    }

    /// The `assignee` key value to scan; `None` for anyone's.
    pub(crate) fn value(&self) -> Option<&str> {
        match self {
            Assignee::Anyone => None,
            Assignee::Unassigned => Some(assignee_value(None)),
            Assignee::User(user) => Some(user.as_str()),
        }
    }
}

/// Which way a listing is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Sort {
    /// Most recently active first.
    #[default]
    Activity,
    /// Longest waiting customer first (only conversations with an unanswered customer).
    Waiting,
}

/// The filters of a listing; `None` means "any".
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) status: Option<Status>,
    pub(crate) assignee: Assignee,
    pub(crate) label: Option<String>,
    pub(crate) channel: Option<Channel>,
    pub(crate) priority: Option<Priority>,
    pub(crate) organisation: Option<String>,
    pub(crate) product_id: Option<String>,
    pub(crate) order_id: Option<String>,
    pub(crate) updated_since: Option<u64>,
    /// Restricts the listing to conversations any of these asks for: an agent's view.
    pub(crate) only_assignees: Option<Vec<Assignee>>,
    /// Only the rooms whose text matches the listing's `q`, as the search index tells.
    pub(crate) text: Option<Arc<dyn RoomText>>,
}

/// Which rooms' text matches a listing's `q`. The search index answers (`search::listing`);
/// the listing asks it last, after the filters a record answers, and about a batch of rooms at
/// once, since a question may cost an index query.
pub(crate) trait RoomText: std::fmt::Debug + Send + Sync {
    /// `false` when the room surely does not match: cheap, asked before its record is read.
    fn may_match(&self, room: &RoomId) -> bool;
    /// Whether each room's text matches, in order.
    fn matching(&self, rooms: &[&RoomId]) -> crate::error::Result<Vec<bool>>;
}

impl Filter {
    /// Whether a room may be in the listing at all, before its record is read.
    pub(super) fn admits_room(&self, room: &RoomId) -> bool {
        self.text.as_ref().is_none_or(|text| text.may_match(room))
    }

    /// Whether each room, which passed [`Filter::matches`], also matches the listing's `q`.
    pub(super) fn text_matches(&self, rooms: &[&RoomId]) -> crate::error::Result<Vec<bool>> {
        match &self.text {
            Some(text) => text.matching(rooms),
            None => Ok(vec![true; rooms.len()]),
        }
    }

    pub(crate) fn matches(&self, r: &ConversationRecord) -> bool {
        let c = &r.content;
        let assignee = c.assignee.as_deref();
        self.status.is_none_or(|s| c.status == s)
            && self.assignee.matches(assignee)
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
                .is_none_or(|allowed| allowed.iter().any(|a| a.matches(assignee)))
            && self.admits_room(&r.room_id)
    }

    /// The facet values to scan: the most selective filter given, or the allowed assignees.
    pub(super) fn drivers(&self) -> Vec<(&'static str, String)> {
        let single = [
            ("product", self.product_id.clone()),
            ("order", self.order_id.clone()),
            ("label", self.label.clone()),
            ("organisation", self.organisation.clone()),
            ("assignee", self.assignee.value().map(str::to_owned)),
        ];
        if let Some((facet, Some(value))) = single.into_iter().find(|(_, v)| v.is_some()) {
            return vec![(facet, value)];
        }
        if let Some(allowed) = &self.only_assignees {
            // Anyone's among them: the whole index.
            let values: Option<Vec<_>> = allowed.iter().map(Assignee::value).collect();
            if let Some(values) = values {
                return values
                    .into_iter()
                    .map(|v| ("assignee", v.to_owned()))
                    .collect();
            }
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
pub(crate) struct PageToken {
    pub(crate) ts: u64,
    pub(crate) room: OwnedRoomId,
}

impl PageToken {
    pub(crate) fn encode(&self) -> String {
        format!("{}_{}", self.ts, self.room)
    }

    pub(crate) fn decode(s: &str) -> Option<Self> {
        let (ts, room) = s.split_once('_')?;
        Some(PageToken {
            ts: ts.parse().ok()?,
            room: RoomId::parse(room).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_user_id, room_id, user_id};

    use super::*;

    #[test]
    fn assignees_match_and_name_their_key_values() {
        assert_eq!(Assignee::Unassigned.value(), Some(""));
        assert_eq!(Assignee::Anyone.value(), None);
        assert_eq!(Assignee::User(owned_user_id!("@a:x")).value(), Some("@a:x"));
        assert!(Assignee::Unassigned.matches(None));
        assert!(!Assignee::Unassigned.matches(Some(user_id!("@a:x"))));
        assert!(Assignee::User(owned_user_id!("@a:x")).matches(Some(user_id!("@a:x"))));
        assert!(!Assignee::User(owned_user_id!("@a:x")).matches(Some(user_id!("@b:x"))));
        assert!(!Assignee::User(owned_user_id!("@a:x")).matches(None));
        assert!(Assignee::Anyone.matches(None));
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_what_is_not_one() {
        let token = PageToken {
            ts: 12,
            room: room_id!("!r_1:x").to_owned(),
        };
        assert_eq!(PageToken::decode(&token.encode()), Some(token));
        assert_eq!(PageToken::decode("12_not-a-room"), None);
        assert_eq!(PageToken::decode("x_!r:x"), None);
    }
}
