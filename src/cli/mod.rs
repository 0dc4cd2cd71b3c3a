//! `charla admin`: the administrator's command line, a thin client of the admin API.
//!
//! Every command is one or a few HTTP requests to `/_charla/admin/v1/` with the admin token as
//! a Bearer header, so `--url` really points it at another server and the API is the one place
//! where admin rules live. The exceptions work on files and need no server: `restore` (offline
//! by definition) and `config check`.
//!
//! Where to connect and as whom: `--url`/`CHARLA_URL` and `--token`/`CHARLA_ADMIN_TOKEN`, else
//! `[server] listen` and `<storage.path>/admin.token` of `--config` ([`target`]). Output: one
//! JSON document on stdout with `--json`, a table for people otherwise ([`output`]). Exit codes
//! are [`Failure`]'s.

mod appservices;
mod backup;
mod client;
mod config_check;
mod conversations;
mod output;
mod reindex;
mod rooms;
mod stats;
mod target;
mod tickets;
mod users;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use client::AdminClient;
pub use client::Failure;

/// `charla admin`'s global options, given before the area.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The server's config.toml: where it listens and where its admin.token is.
    #[arg(long, short, default_value = "config.toml", global = false)]
    pub config: PathBuf,
    /// The server's base URL (overrides `[server] listen`).
    #[arg(long, env = "CHARLA_URL")]
    pub url: Option<String>,
    /// The admin token (overrides `<storage.path>/admin.token`).
    #[arg(long, env = "CHARLA_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub area: Area,
}

/// What to administer.
#[derive(Subcommand, Debug)]
pub enum Area {
    /// Accounts: create, list, show, deactivate, reset passwords, desk roles.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Rooms: list, show, members, delete.
    #[command(subcommand)]
    Room(rooms::RoomCommand),
    /// Support conversations: list, show, assign, close, export.
    #[command(subcommand)]
    Conversation(conversations::ConversationCommand),
    /// Support tickets: list, show, update.
    #[command(subcommand)]
    Ticket(tickets::TicketCommand),
    /// Application services (bridges, bots): list, register, unregister, ping.
    #[command(subcommand)]
    Appservice(appservices::AppserviceCommand),
    /// Users, rooms, conversations by status, messages today, agents online, open tickets.
    Stats(output::JsonFlag),
    /// Writes a consistent archive of the running server's data (store, media) to PATH.
    Backup(backup::BackupArgs),
    /// Restores an archive into the config's data folder (the server must be stopped).
    Restore(backup::RestoreArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Rebuilds the search index from the store while the server keeps answering from the old
    /// one, with a progress bar.
    Reindex(reindex::ReindexArgs),
}

/// Runs `charla admin …`; the error is what to print on stderr, and its exit code.
pub async fn run(args: AdminArgs) -> Result<(), Failure> {
    let connect = || {
        AdminClient::new(target::resolve(
            &args.config,
            args.url.clone(),
            args.token.clone(),
        )?)
    };
    match args.area {
        Area::User(command) => users::run(&connect()?, command).await,
        Area::Room(command) => rooms::run(&connect()?, command).await,
        Area::Conversation(command) => conversations::run(&connect()?, command).await,
        Area::Ticket(command) => tickets::run(&connect()?, command).await,
        Area::Appservice(command) => appservices::run(&connect()?, command).await,
        Area::Stats(json) => stats::run(&connect()?, json).await,
        Area::Backup(backup) => backup::backup(&connect()?, backup).await,
        Area::Reindex(reindex) => reindex::run(&connect()?, reindex).await,
        // Offline: these work on files, whether a server runs or not.
        Area::Restore(restore) => backup::restore(&args.config, restore).await,
        Area::Config(command) => config_check::run(command),
    }
}
