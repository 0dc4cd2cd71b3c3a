//! Push rules, kept as the `m.push_rules` account data that clients also read through `/sync`.
//!
//! Clients refuse to start without the spec's default rule set, so a user without stored rules
//! gets ruma's server defaults.

use std::sync::Arc;

use axum::Router;
use ruma::{
    UserId,
    api::client::push::{
        delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
        set_pushrule_enabled,
    },
    push::{ConditionalPushRule, PatternedPushRule, Ruleset},
};
use serde::{Deserialize, Serialize};

use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    services::Services,
};

const KIND: &str = "m.push_rules";

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = route(r, all);
    let r = route(r, global);
    let r = route(r, get_rule);
    let r = route(r, set_rule);
    let r = route(r, delete_rule);
    let r = route(r, enabled);
    let r = route(r, set_enabled);
    let r = route(r, actions);
    route(r, set_actions)
}

#[derive(Serialize, Deserialize)]
struct PushRulesContent {
    global: Ruleset,
}

/// The user's rules, or the defaults.
pub fn ruleset(s: &Services, user: &UserId) -> Result<Ruleset> {
    Ok(match s.users.account_data(user, None, KIND)? {
        Some(raw) => serde_json::from_str::<PushRulesContent>(raw.get())
            .map(|c| c.global)
            .unwrap_or_else(|_| server_default(user)),
        None => server_default(user),
    })
}

/// The predefined rules of Matrix 1.16: ruma's set, which already follows MSC4210 (a later spec
/// version), plus the three legacy mention rules 1.16 still lists and Element still relies on.
fn server_default(user: &UserId) -> Ruleset {
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

async fn store(s: &Services, user: &UserId, global: Ruleset) -> Result<()> {
    let raw =
        serde_json::value::to_raw_value(&PushRulesContent { global }).expect("rules serialize");
    s.users.set_account_data(user, None, KIND, &raw).await
}

fn not_found() -> Error {
    Error::not_found("Push rule not found")
}

async fn all(
    s: Arc<Services>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(ruleset(
        &s,
        req.user_id(),
    )?))
}

async fn global(
    s: Arc<Services>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(ruleset(
        &s,
        req.user_id(),
    )?))
}

async fn get_rule(
    s: Arc<Services>,
    req: Ruma<get_pushrule::v3::Request>,
) -> Result<get_pushrule::v3::Response> {
    let rules = ruleset(&s, req.user_id())?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(not_found)?;
    Ok(get_pushrule::v3::Response::new(rule.into()))
}

async fn set_rule(
    s: Arc<Services>,
    req: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response> {
    let mut rules = ruleset(&s, req.user_id())?;
    rules
        .insert(
            req.body.rule.clone(),
            req.body.after.as_deref(),
            req.body.before.as_deref(),
        )
        .map_err(|e| Error::bad_json(e.to_string()))?;
    store(&s, req.user_id(), rules).await?;
    Ok(set_pushrule::v3::Response::new())
}

async fn delete_rule(
    s: Arc<Services>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response> {
    let mut rules = ruleset(&s, req.user_id())?;
    rules
        .remove(req.body.kind.clone(), &req.body.rule_id)
        .map_err(|_| not_found())?;
    store(&s, req.user_id(), rules).await?;
    Ok(delete_pushrule::v3::Response::new())
}

async fn enabled(
    s: Arc<Services>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    let rules = ruleset(&s, req.user_id())?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(not_found)?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

async fn set_enabled(
    s: Arc<Services>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    let mut rules = ruleset(&s, req.user_id())?;
    rules
        .set_enabled(req.body.kind.clone(), &req.body.rule_id, req.body.enabled)
        .map_err(|_| not_found())?;
    store(&s, req.user_id(), rules).await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

async fn actions(
    s: Arc<Services>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    let rules = ruleset(&s, req.user_id())?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(not_found)?;
    Ok(get_pushrule_actions::v3::Response::new(
        rule.actions().to_vec(),
    ))
}

async fn set_actions(
    s: Arc<Services>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    let mut rules = ruleset(&s, req.user_id())?;
    rules
        .set_actions(
            req.body.kind.clone(),
            &req.body.rule_id,
            req.body.actions.clone(),
        )
        .map_err(|_| not_found())?;
    store(&s, req.user_id(), rules).await?;
    Ok(set_pushrule_actions::v3::Response::new())
}
