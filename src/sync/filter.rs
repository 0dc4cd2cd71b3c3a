//! Sync filters: the parts of a `FilterDefinition` the sync engine applies.

use ruma::{
    RoomId, UserId,
    api::client::filter::{FilterDefinition, LazyLoadOptions, RoomEventFilter},
};

/// A resolved filter with spec defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct SyncFilter {
    pub(crate) def: FilterDefinition,
    pub(crate) timeline_limit: usize,
    pub(crate) lazy_load_members: bool,
    pub(crate) include_leave: bool,
}

/// Default timeline limit, as Synapse uses.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Cap on what a client may ask for in one sync.
const MAX_TIMELINE_LIMIT: usize = 1000;

impl SyncFilter {
    pub(crate) fn new(def: FilterDefinition) -> Self {
        let timeline_limit = def
            .room
            .timeline
            .limit
            .map(|l| usize::try_from(u64::from(l)).unwrap_or(MAX_TIMELINE_LIMIT))
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
            .min(MAX_TIMELINE_LIMIT);
        let lazy_load_members =
            !matches!(def.room.state.lazy_load_options, LazyLoadOptions::Disabled);
        let include_leave = def.room.include_leave;
        SyncFilter {
            def,
            timeline_limit,
            lazy_load_members,
            include_leave,
        }
    }

    pub(crate) fn room_allowed(&self, room: &RoomId) -> bool {
        let f = &self.def.room;
        if f.not_rooms.iter().any(|r| r == room) {
            return false;
        }
        f.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|r| r == room))
    }

    pub(crate) fn timeline_allows(&self, kind: &str, sender: &UserId) -> bool {
        event_allowed(&self.def.room.timeline, kind, sender)
    }

    pub(crate) fn state_allows(&self, kind: &str, sender: &UserId) -> bool {
        event_allowed(&self.def.room.state, kind, sender)
    }

    pub(crate) fn account_data_allows(&self, kind: &str) -> bool {
        let f = &self.def.account_data;
        types_allowed(kind, f.types.as_deref(), &f.not_types)
    }

    pub(crate) fn presence_allows(&self, sender: &UserId) -> bool {
        let f = &self.def.presence;
        !f.not_senders.iter().any(|s| s == sender)
            && f.senders
                .as_ref()
                .is_none_or(|senders| senders.iter().any(|s| s == sender))
            && types_allowed("m.presence", f.types.as_deref(), &f.not_types)
    }

    pub(crate) fn ephemeral_allows(&self, kind: &str) -> bool {
        let f = &self.def.room.ephemeral;
        types_allowed(kind, f.types.as_deref(), &f.not_types)
    }

    pub(crate) fn room_account_data_allows(&self, kind: &str) -> bool {
        let f = &self.def.room.account_data;
        types_allowed(kind, f.types.as_deref(), &f.not_types)
    }
}

fn event_allowed(f: &RoomEventFilter, kind: &str, sender: &UserId) -> bool {
    if f.not_senders.iter().any(|s| s == sender) {
        return false;
    }
    if let Some(senders) = &f.senders
        && !senders.iter().any(|s| s == sender)
    {
        return false;
    }
    types_allowed(kind, f.types.as_deref(), &f.not_types)
}

/// Type matching with the spec's `*` wildcard.
pub(crate) fn types_allowed(kind: &str, types: Option<&[String]>, not_types: &[String]) -> bool {
    if not_types.iter().any(|p| wildcard_match(p, kind)) {
        return false;
    }
    types.is_none_or(|types| types.iter().any(|p| wildcard_match(p, kind)))
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters. Greedy with
/// one backtrack point (the last `*`), so a pattern of many stars costs at most the product of
/// the two lengths, never an exponential walk.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            // The last star takes one more character.
            star = Some((si, sj + 1));
            i = si + 1;
            j = sj + 1;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_the_spec() {
        assert!(wildcard_match("m.*", "m.room.message"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("m.room.*age", "m.room.message"));
        assert!(!wildcard_match("m.room.member", "m.room.message"));
    }

    #[test]
    fn wildcards_match_as_filters_do() {
        assert!(wildcard_match("m.room.*", "m.room.message"));
        assert!(wildcard_match("*", "m.room.topic"));
        assert!(wildcard_match("m.room.message", "m.room.message"));
        assert!(!wildcard_match("m.room.message", "m.room.name"));
        assert!(wildcard_match("m.*.name", "m.room.name"));
        assert!(!wildcard_match("m.*.name", "m.room.topic"));
        assert!(wildcard_match("*message", "m.room.message"));
        assert!(!wildcard_match("m.room.message*x", "m.room.message"));
        assert!(wildcard_match("m*r*m*", "m.room.message"));
        // Thousands of stars answer at once (a backtracking matcher would not).
        assert!(!wildcard_match(
            &format!("{}x", "*".repeat(5000)),
            "m.room.message"
        ));
        assert!(wildcard_match(&"*".repeat(5000), "m.room.message"));
    }

    #[test]
    fn not_types_win() {
        assert!(!types_allowed(
            "m.room.message",
            Some(&["m.*".into()]),
            &["m.room.message".into()]
        ));
        assert!(types_allowed("m.room.name", None, &[]));
    }

    #[test]
    fn defaults() {
        let f = SyncFilter::new(FilterDefinition::default());
        assert_eq!(f.timeline_limit, 10);
        assert!(!f.lazy_load_members);
    }
}
