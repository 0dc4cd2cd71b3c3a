//! `charla admin conversation …`

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

use super::{
    client::{AdminClient, Failure},
    output::JsonFlag,
};

#[derive(Subcommand, Debug)]
pub enum ConversationCommand {
    /// Lists support conversations, newest activity first.
    List {
        /// open, pending, resolved, closed…
        #[arg(long)]
        status: Option<String>,
        /// Only this agent's conversations.
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// One conversation: contact, channel, status, assignee, labels, recent history.
    Show {
        room_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Assigns the conversation to an agent.
    Assign {
        room_id: String,
        user_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Closes the conversation.
    Close {
        room_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Exports the full history of one or more conversations (senders, timestamps, media links).
    Export {
        #[arg(required = true)]
        room_ids: Vec<String>,
        #[arg(long, value_enum, default_value = "json")]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum ExportFormat {
    Json,
    Csv,
}

pub(super) async fn run(client: &AdminClient, command: ConversationCommand) -> Result<(), Failure> {
    let _ = (client, command);
    Err(Failure::local("conversation commands are being built"))
}
