//! `charla admin appservice …`

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{
    client::{AdminClient, Failure},
    output::JsonFlag,
};

#[derive(Subcommand, Debug)]
pub enum AppserviceCommand {
    /// Lists registered application services (from the config and from `register`).
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Registers an application service from a registration file, or generates one.
    Register(RegisterArgs),
    /// Removes an application service registered with `register`.
    Unregister {
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Checks that the server reaches the application service (the spec's ping).
    Ping {
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// A registration YAML file (as Synapse takes it); with --generate, where to write the new one.
    pub file: PathBuf,
    /// Generate a registration with fresh tokens for this id, write it to FILE and register it.
    #[arg(long, requires_all = ["url", "namespace"])]
    pub generate: Option<String>,
    /// With --generate: where the application service listens.
    #[arg(long)]
    pub url: Option<String>,
    /// With --generate: an exclusive user namespace regex (e.g. `@wa_.*:example.com`).
    #[arg(long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}

pub(super) async fn run(client: &AdminClient, command: AppserviceCommand) -> Result<(), Failure> {
    let _ = (client, command);
    Err(Failure::local("appservice commands are being built"))
}
