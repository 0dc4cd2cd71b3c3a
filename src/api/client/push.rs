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
    push::Ruleset,
};

use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    services::Services,
    users::push_rules::{MAX_USER_RULES, check_new_rule, user_rule_count},
};

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

/// The user's rules, or the defaults.
fn ruleset(s: &Services, user: &UserId) -> Result<Ruleset> {
    s.users.push_rules(user)
}

async fn store(s: &Services, user: &UserId, global: Ruleset) -> Result<()> {
    s.users.set_push_rules(user, global).await
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
    check_new_rule(&req.body.rule)?;
    let mut rules = ruleset(&s, req.user_id())?;
    let replaces = rules
        .get(req.body.rule.kind(), req.body.rule.rule_id())
        .is_some();
    if !replaces && user_rule_count(&rules) >= MAX_USER_RULES {
        return Err(Error::forbidden(format!(
            "A user may have at most {MAX_USER_RULES} push rules of their own"
        )));
    }
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
