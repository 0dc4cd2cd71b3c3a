//! Push rules, kept as the `m.push_rules` account data that clients also read through `/sync`.
//!
//! Clients refuse to start without the spec's default rule set, so a user without stored rules
//! gets the defaults, in `/pushrules` and in their first `/sync` alike.

use ruma::{
    UserId,
    push::{ConditionalPushRule, PatternedPushRule, Ruleset},
};
use serde::{Deserialize, Serialize};

use super::UserService;
use crate::error::Result;

/// The account data type the rules are stored under.
pub const PUSH_RULES: &str = "m.push_rules";

#[derive(Serialize, Deserialize)]
pub struct PushRulesContent {
    pub global: Ruleset,
}

impl UserService {
    /// The user's rules, or the defaults.
    pub fn push_rules(&self, user: &UserId) -> Result<Ruleset> {
        Ok(match self.account_data(user, None, PUSH_RULES)? {
            Some(raw) => serde_json::from_str::<PushRulesContent>(raw.get())
                .map(|c| c.global)
                .unwrap_or_else(|_| default_push_rules(user)),
            None => default_push_rules(user),
        })
    }

    pub async fn set_push_rules(&self, user: &UserId, global: Ruleset) -> Result<()> {
        let raw =
            serde_json::value::to_raw_value(&PushRulesContent { global }).expect("rules serialize");
        self.set_account_data(user, None, PUSH_RULES, &raw).await
    }
}

/// The predefined rules of Matrix 1.16: ruma's set, which already follows MSC4210 (a later spec
/// version), plus the three legacy mention rules 1.16 still lists and Element still relies on.
pub fn default_push_rules(user: &UserId) -> Ruleset {
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
