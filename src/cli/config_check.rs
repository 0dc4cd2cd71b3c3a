//! `charla admin config check PATH`: what `charla serve` would say about a config, without
//! starting anything. A config that parses but names a bad key is refused with the dotted key
//! (`server.listen: invalid socket address syntax (line 3, column 10)`), as `serve` refuses it.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{
    client::Failure,
    output::{self, JsonFlag},
};
use crate::{
    appservice::{AppService, check_unique},
    config::Config,
};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Parses and validates a config file, naming the key at fault; also checks what
    /// `charla serve` refuses at start (secrets, appservice registration files). Exit 0 when
    /// it is fine, 4 with the reason otherwise.
    Check {
        path: PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub(super) fn run(command: ConfigCommand) -> Result<(), Failure> {
    let ConfigCommand::Check { path, json } = command;
    let config = Config::load(&path).map_err(|e| Failure::local(e.to_string()))?;
    at_start(&config).map_err(|e| Failure::local(format!("{}: {e}", path.display())))?;
    let summary = json!({
        "ok": true,
        "path": path,
        "server_name": config.server_name,
        "listen": config.server.listen.to_string(),
        "data": config.storage.path,
        "appservices": config.appservice.registrations.len(),
        "whatsapp_bridge": config.bridges.whatsapp.enabled,
        "email_bridge": config.bridges.email.enabled,
    });
    output::print(json, &summary, |_| println!("ok"))
}

/// What `charla serve` refuses at start besides the config's own values, where it is cheap to
/// check without starting: the appservice registration files (read, validated, namespaces
/// compiled, no two claiming one id or token) and the bridges' registrations when given. The shared secret's rules are part of the config's own validation. Registrations
/// added with `charla admin appservice register` live in the store, which a running server
/// holds: they were checked when they were added.
fn at_start(config: &Config) -> Result<(), String> {
    let files = config
        .appservice
        .registrations
        .iter()
        .map(|path| AppService::load(path, &config.server_name))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&files)?;
    let bridge = &config.bridges.whatsapp;
    if bridge.enabled && bridge.registration.exists() {
        appservice::Registration::from_file(&bridge.registration)
            .and_then(|r| r.validate())
            .map_err(|e| format!("bridges.whatsapp.registration: {e}"))?;
    }
    let bridge = &config.bridges.email;
    if bridge.enabled && bridge.registration.exists() {
        appservice::Registration::from_file(&bridge.registration)
            .and_then(|r| r.validate())
            .map_err(|e| format!("bridges.email.registration: {e}"))?;
    }
    Ok(())
}
