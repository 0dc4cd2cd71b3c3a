//! `charla admin config check PATH`

use std::path::PathBuf;

use clap::Subcommand;

use super::client::Failure;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Parses and validates a config file, naming the key at fault.
    Check { path: PathBuf },
}

pub(super) fn run(command: ConfigCommand) -> Result<(), Failure> {
    let ConfigCommand::Check { path } = command;
    let _ = path;
    Err(Failure::local("config check is being built"))
}
