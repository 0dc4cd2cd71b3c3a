//! `charla admin ticket …`

use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::{
    client::{AdminClient, Failure},
    output::{self, JsonFlag, Table},
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

const LIST_FIELDS: &[&str] = &[
    "number", "title", "status", "priority", "assignee", "room_id",
];
const SHOW_FIELDS: &[&str] = &[
    "number",
    "title",
    "status",
    "priority",
    "assignee",
    "room_id",
    "created_by",
    "created_ts",
    "updated_ts",
];

pub(super) async fn run(client: &AdminClient, command: TicketCommand) -> Result<(), Failure> {
    match command {
        TicketCommand::List {
            status,
            assignee,
            json,
        } => {
            let filters = [("status", status), ("assignee", assignee)];
            let query = filters
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            let tickets = list_all(client, query).await?;
            output::print(json, &tickets, |v| {
                let mut table = Table::new(LIST_FIELDS);
                for ticket in v["tickets"].as_array().into_iter().flatten() {
                    table.object_row(ticket, LIST_FIELDS);
                }
                table.print();
            })
        }
        TicketCommand::Show { number, json } => {
            let ticket = client.get(&["tickets", &number.to_string()], &[]).await?;
            output::print(json, &ticket, |t| output::fields(t, SHOW_FIELDS))
        }
        TicketCommand::Update {
            number,
            status,
            assignee,
            priority,
            json,
        } => {
            let mut change = Map::new();
            if let Some(status) = status {
                change.insert("status".into(), json!(status));
            }
            if let Some(priority) = priority {
                change.insert("priority".into(), json!(priority));
            }
            if let Some(assignee) = assignee {
                // `none` unassigns.
                let assignee = (assignee != "none").then_some(assignee);
                change.insert("assignee".into(), json!(assignee));
            }
            if change.is_empty() {
                return Err(Failure::refused(
                    "nothing to change: give --status, --assignee or --priority",
                ));
            }
            let ticket = client
                .patch(&["tickets", &number.to_string()], Value::Object(change))
                .await?;
            output::print(json, &ticket, |t| output::fields(t, SHOW_FIELDS))
        }
    }
}

/// Every page of the listing, as one document: `{"tickets": [...], "total": n}`.
async fn list_all(client: &AdminClient, filters: Vec<(&str, String)>) -> Result<Value, Failure> {
    let all = client.get_all(&["tickets"], &filters, "tickets").await?;
    Ok(json!({ "tickets": all, "total": all.len() }))
}
