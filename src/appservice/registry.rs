//! Registrations added at runtime: kept in the store (`AppserviceRegistrations`, id → the
//! registration's YAML), loaded at start after the config's files, and checked against the
//! registrations in use before they join them.

use std::sync::Arc;

use http::StatusCode;
use ruma::ServerName;
use serde_json::json;

use super::{AppService, Source, check_unique, pusher};
use crate::{
    error::{Error, Result},
    storage::{Batch, Store, Table},
};

/// The registrations kept in the store. One that no longer parses, or that clashes with a
/// config file (which came later, and wins), is logged and left out rather than stopping the
/// server: an administrator can still unregister it.
pub(super) fn load(
    store: &Store,
    server: &ServerName,
    config: &[AppService],
) -> std::result::Result<Vec<AppService>, String> {
    let mut out: Vec<AppService> = Vec::new();
    for entry in store.scan_prefix(Table::AppserviceRegistrations, &[]) {
        let (key, yaml) = entry.map_err(|e| format!("appservice registrations: {e}"))?;
        let id = String::from_utf8_lossy(&key).into_owned();
        let asv = std::str::from_utf8(&yaml)
            .map_err(|e| e.to_string())
            .and_then(|yaml| AppService::parse(yaml, server, Source::Store));
        let asv = match asv {
            Ok(asv) => asv,
            Err(e) => {
                tracing::error!(appservice = id, error = %e, "stored appservice registration left out");
                continue;
            }
        };
        let mut together: Vec<&AppService> = config.iter().chain(&out).collect();
        together.push(&asv);
        let unique = appservice::registration::check_unique(
            together.iter().map(|a| (a.path.as_path(), &a.registration)),
        );
        match unique {
            Ok(()) => out.push(asv),
            Err(e) => {
                tracing::error!(appservice = id, error = %e, "stored appservice registration clashes with the config's; left out");
            }
        }
    }
    check_unique(&out)?;
    Ok(out)
}

/// What is wrong with a registration, as `400 M_INVALID_PARAM` naming the field at fault: the
/// validator quotes it first (`` invalid registration: `namespaces.users[0].regex` … ``), the
/// parser names a missing one (`` missing field `as_token` ``); otherwise the whole
/// `registration`.
pub(super) fn invalid(message: &str) -> Error {
    let quoted = if message.starts_with("invalid registration") {
        message.split('`').nth(1)
    } else {
        message
            .split("missing field `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
    };
    let field = quoted
        .filter(|f| !f.is_empty() && !f.contains(' '))
        .unwrap_or("registration");
    Error::invalid_field(field, message.to_owned())
}

/// `409` naming the field that another registration already uses.
fn conflict(field: &str, message: String) -> Error {
    Error::Matrix {
        status: StatusCode::CONFLICT,
        errcode: "M_INVALID_PARAM",
        message: message.into(),
        extra: Some(json!({ "field": field })),
    }
}

/// Refuses a registration whose id, tokens or sender another one in use has: the id and the
/// `as_token` name an appservice (the spec wants them unique), a token that is also another's
/// would let one appservice pass for the other, and a shared sender would be one user with two
/// masters.
pub(super) fn check_against(asv: &AppService, registered: &[Arc<AppService>]) -> Result<()> {
    let new = &asv.registration;
    for other in registered {
        let theirs = &other.registration;
        if theirs.id == new.id {
            return Err(conflict(
                "id",
                format!("An appservice with the id {:?} is registered", new.id),
            ));
        }
        let tokens = [&theirs.as_token, &theirs.hs_token];
        if tokens.contains(&&new.as_token) {
            return Err(conflict(
                "as_token",
                format!("The as_token is in use by the appservice {:?}", theirs.id),
            ));
        }
        if tokens.contains(&&new.hs_token) {
            return Err(conflict(
                "hs_token",
                format!("The hs_token is in use by the appservice {:?}", theirs.id),
            ));
        }
        if other.sender == asv.sender {
            return Err(conflict(
                "sender_localpart",
                format!("{} is the appservice {:?}'s user", asv.sender, theirs.id),
            ));
        }
    }
    Ok(())
}

/// Keeps the registration, with the caller's `batch`, and waits for the disk. Its pusher
/// starts after stream position `from` (whenever it starts running), over any state an
/// earlier appservice of the same id left.
pub(super) async fn save(
    store: &Store,
    asv: &AppService,
    from: u64,
    mut batch: Batch,
) -> Result<()> {
    let yaml = asv
        .registration
        .to_yaml_string()
        .map_err(|e| Error::internal(e.to_string()))?;
    pusher::start_state(store, asv.id(), from, &mut batch)?;
    batch.put(
        Table::AppserviceRegistrations,
        asv.id().as_bytes().to_vec(),
        yaml.into_bytes(),
    );
    store.write_durable(batch).await?;
    Ok(())
}

/// The appservice to unregister: only one registered at runtime.
pub(super) fn removable(found: Option<Arc<AppService>>, id: &str) -> Result<Arc<AppService>> {
    match found {
        None => Err(Error::not_found(format!("No appservice {id:?}"))),
        Some(asv) if asv.source == Source::Config => Err(Error::forbidden(format!(
            "The appservice {id:?} comes from the config file {}: remove it from [appservice] \
             registrations and restart the server",
            asv.path.display()
        ))),
        Some(asv) => Ok(asv),
    }
}

/// Drops the registration and its pusher's state from the store, with the caller's `batch`,
/// and waits for the disk.
pub(super) async fn delete(store: &Store, id: &str, mut batch: Batch) -> Result<()> {
    pusher::drop_state(store, id, &mut batch)?;
    batch.delete(Table::AppserviceRegistrations, id.as_bytes().to_vec());
    store.write_durable(batch).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "id: bot\nurl: null\nas_token: a1\nhs_token: h1\nsender_localpart: bot\n\
                        namespaces:\n  users:\n    - exclusive: true\n      regex: '@bot_.*'\n";

    fn parse(yaml: &str) -> AppService {
        AppService::parse(yaml, ruma::server_name!("x"), Source::Store).unwrap()
    }

    #[test]
    fn clashes_name_the_field() {
        let registered = vec![Arc::new(parse(YAML))];
        let field = |yaml: &str| {
            let e = check_against(&parse(yaml), &registered).unwrap_err();
            assert_eq!(e.status(), StatusCode::CONFLICT);
            e.body()["field"].as_str().unwrap().to_owned()
        };
        let other = YAML
            .replace("id: bot", "id: other")
            .replace("a1", "a2")
            .replace("h1", "h2")
            .replace("sender_localpart: bot", "sender_localpart: other");
        assert!(check_against(&parse(&other), &registered).is_ok());
        assert_eq!(field(&other.replace("id: other", "id: bot")), "id");
        assert_eq!(field(&other.replace("a2", "a1")), "as_token");
        assert_eq!(field(&other.replace("a2", "h1")), "as_token");
        assert_eq!(field(&other.replace("h2", "a1")), "hs_token");
        assert_eq!(
            field(&other.replace("sender_localpart: other", "sender_localpart: bot")),
            "sender_localpart"
        );
    }

    #[test]
    fn invalid_registrations_name_the_field_at_fault() {
        let bad = YAML.replace("'@bot_.*'", "'@bot_('");
        let e = AppService::parse(&bad, ruma::server_name!("x"), Source::Store).unwrap_err();
        let e = invalid(&e);
        assert_eq!(e.errcode(), "M_INVALID_PARAM");
        assert_eq!(e.body()["field"], "namespaces.users[0].regex");
        assert_eq!(invalid("not YAML").body()["field"], "registration");
        let e = AppService::parse("id: x\nurl: null\n", ruma::server_name!("x"), Source::Store);
        assert_eq!(invalid(&e.unwrap_err()).body()["field"], "as_token");
        let e = AppService::parse("id: [", ruma::server_name!("x"), Source::Store);
        assert_eq!(invalid(&e.unwrap_err()).body()["field"], "registration");
    }
}
