//! `charla admin ticket …`

use clap::Subcommand;

use super::{
    client::{AdminClient, Failure},
    output::JsonFlag,
};

#[derive(Subcommand, Debug)]
pub enum TicketCommand {
    /// Lists tickets.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        assignee: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// One ticket.
    Show {
        number: u64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Changes a ticket's status, assignee or priority.
    Update {
        number: u64,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        priority: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub(super) async fn run(client: &AdminClient, command: TicketCommand) -> Result<(), Failure> {
    let _ = (client, command);
    Err(Failure::local("ticket commands are being built"))
}
