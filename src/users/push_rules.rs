//! Push rules, kept as the `m.push_rules` account data that clients also read through `/sync`.
//!
//! Clients refuse to start without the spec's default rule set, so a user without stored rules
//! gets the defaults, in `/pushrules` and in their first `/sync` alike.

use ruma::{
    UserId,
    push::{ConditionalPushRule, NewPushRule, PatternedPushRule, PushCondition, Ruleset},
};
use serde::{Deserialize, Serialize};

use super::UserService;
use crate::error::{Error, Result};

/// The account data type the rules are stored under.
pub(crate) const PUSH_RULES: &str = "m.push_rules";

/// Bounds on what one user's rules may make the server do for every event of their rooms. ruma
/// turns a pattern's `?` runs into regex repetitions and panics past its size limit (somewhere
/// between 8,000 and 16,000 `?`), so a pattern stays far below that.
const MAX_PATTERN_CHARS: usize = 512;
const MAX_PATTERN_WILDCARDS: usize = 64;
const MAX_CONDITIONS: usize = 16;
const MAX_ACTIONS: usize = 16;
/// A whole rule, serialized.
const MAX_RULE_BYTES: usize = 8 * 1024;
/// Rules a user may add beside the server's defaults.
pub(crate) const MAX_USER_RULES: usize = 256;

/// Refuses a rule that is larger than any real client sends, or whose patterns could make
/// evaluation expensive or fail.
pub(crate) fn check_new_rule(rule: &NewPushRule) -> Result<()> {
    let (conditions, actions, pattern) = match rule {
        NewPushRule::Override(r) | NewPushRule::Underride(r) => {
            (r.conditions.as_slice(), r.actions.as_slice(), None)
        }
        NewPushRule::Content(r) => (&[][..], r.actions.as_slice(), Some(r.pattern.as_str())),
        NewPushRule::Room(r) => (&[][..], r.actions.as_slice(), None),
        NewPushRule::Sender(r) => (&[][..], r.actions.as_slice(), None),
        _ => (&[][..], &[][..], None),
    };
    let bytes = serde_json::to_vec(&(conditions, actions, pattern))
        .map_err(|e| Error::bad_json(e.to_string()))?;
    if bytes.len() > MAX_RULE_BYTES {
        return Err(Error::invalid_param(format!(
            "A push rule may be at most {MAX_RULE_BYTES} bytes"
        )));
    }
    if conditions.len() > MAX_CONDITIONS || actions.len() > MAX_ACTIONS {
        return Err(Error::invalid_param(format!(
            "A push rule may have at most {MAX_CONDITIONS} conditions and {MAX_ACTIONS} actions"
        )));
    }
    let patterns = conditions.iter().filter_map(|c| match c {
        PushCondition::EventMatch(data) => Some(data.pattern.as_str()),
        _ => None,
    });
    for pattern in pattern.into_iter().chain(patterns) {
        check_pattern(pattern)?;
    }
    Ok(())
}

fn check_pattern(pattern: &str) -> Result<()> {
    let wildcards = pattern.chars().filter(|c| matches!(c, '*' | '?')).count();
    if pattern.chars().count() > MAX_PATTERN_CHARS || wildcards > MAX_PATTERN_WILDCARDS {
        return Err(Error::invalid_param(format!(
            "A push rule pattern may have at most {MAX_PATTERN_CHARS} characters and \
             {MAX_PATTERN_WILDCARDS} wildcards"
        )));
    }
    Ok(())
}

/// The rules the user added (not the server's defaults, whose ids start with `.`).
pub(crate) fn user_rule_count(rules: &Ruleset) -> usize {
    let custom = |id: &str| !id.starts_with('.');
    rules
        .override_
        .iter()
        .filter(|r| custom(&r.rule_id))
        .count()
        + rules
            .underride
            .iter()
            .filter(|r| custom(&r.rule_id))
            .count()
        + rules.content.iter().filter(|r| custom(&r.rule_id)).count()
        + rules
            .room
            .iter()
            .filter(|r| custom(r.rule_id.as_str()))
            .count()
        + rules
            .sender
            .iter()
            .filter(|r| custom(r.rule_id.as_str()))
            .count()
}

#[derive(Serialize, Deserialize)]
pub(crate) struct PushRulesContent {
    pub global: Ruleset,
}

impl UserService {
    /// The user's rules, or the defaults.
    pub(crate) fn push_rules(&self, user: &UserId) -> Result<Ruleset> {
        Ok(match self.account_data(user, None, PUSH_RULES)? {
            Some(raw) => serde_json::from_str::<PushRulesContent>(raw.get())
                .map(|c| c.global)
                .unwrap_or_else(|_| default_push_rules(user)),
            None => default_push_rules(user),
        })
    }

    pub(crate) async fn set_push_rules(&self, user: &UserId, global: Ruleset) -> Result<()> {
        let raw =
            serde_json::value::to_raw_value(&PushRulesContent { global }).expect("rules serialize");
        self.set_account_data(user, None, PUSH_RULES, &raw).await
    }
}

/// The predefined rules of Matrix 1.16: ruma's set, which already follows MSC4210 (a later spec
/// version), plus the three legacy mention rules 1.16 still lists and Element still relies on.
pub(crate) fn default_push_rules(user: &UserId) -> Ruleset {
    let mut rules = Ruleset::server_default(user);
    let highlight = serde_json::json!([
        "notify",
        { "set_tweak": "sound", "value": "default" },
        { "set_tweak": "highlight" }
    ]);
    let contains_user_name: PatternedPushRule = serde_json::from_value(serde_json::json!({
        "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
        "pattern": user.localpart(), "actions": highlight,
    }))
    .expect("valid push rule");
    let contains_display_name: ConditionalPushRule = serde_json::from_value(serde_json::json!({
        "rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
        "conditions": [{ "kind": "contains_display_name" }], "actions": highlight,
    }))
    .expect("valid push rule");
    let roomnotif: ConditionalPushRule = serde_json::from_value(serde_json::json!({
        "rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
        "conditions": [
            { "kind": "sender_notification_permission", "key": "room" },
            { "kind": "event_match", "key": "content.body", "pattern": "@room" }
        ],
        "actions": ["notify", { "set_tweak": "highlight" }],
    }))
    .expect("valid push rule");
    rules.content.insert(contains_user_name);
    // The spec's order puts each legacy rule right after its intentional-mentions successor.
    let mut overrides = Vec::with_capacity(rules.override_.len() + 2);
    for rule in std::mem::take(&mut rules.override_) {
        let follower = match rule.rule_id.as_str() {
            ".m.rule.is_user_mention" => Some(contains_display_name.clone()),
            ".m.rule.is_room_mention" => Some(roomnotif.clone()),
            _ => None,
        };
        overrides.push(rule);
        overrides.extend(follower);
    }
    rules.override_ = overrides.into_iter().collect();
    rules
}
