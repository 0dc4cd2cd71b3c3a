//! `charla admin conversation …`

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::{
    client::{AdminClient, Failure},
    output::{self, JsonFlag, Table},
};

mod export;

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

const LIST_FIELDS: &[&str] = &[
    "room_id",
    "status",
    "priority",
    "assignee",
    "channel",
    "contact",
    "labels",
    "last_activity",
];
const SHOW_FIELDS: &[&str] = &[
    "room_id",
    "status",
    "priority",
    "assignee",
    "channel",
    "contact",
    "labels",
    "language",
    "product_id",
    "order_id",
    "created",
    "last_activity",
    "message_count",
];

pub(super) async fn run(client: &AdminClient, command: ConversationCommand) -> Result<(), Failure> {
    match command {
        ConversationCommand::List {
            status,
            assignee,
            label,
            json,
        } => {
            let filters = [("status", status), ("assignee", assignee), ("label", label)];
            let query = filters
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            let list = list_all(client, query).await?;
            output::print(json, &list, |v| {
                let mut table = Table::new(LIST_FIELDS);
                for c in v["conversations"].as_array().into_iter().flatten() {
                    table.object_row(&for_people(c), LIST_FIELDS);
                }
                table.print();
            })
        }
        ConversationCommand::Show { room_id, json } => {
            let conversation = client.get(&["conversations", &room_id], &[]).await?;
            output::print(json, &conversation, |c| {
                output::fields(&for_people(c), SHOW_FIELDS);
                println!("history:");
                for event in c["history"].as_array().into_iter().flatten() {
                    if event["type"] == "m.room.message" {
                        println!(
                            "  {}  {}: {}",
                            when(&event["origin_server_ts"]),
                            output::cell(&event["sender"]),
                            output::cell(&event["content"]["body"])
                        );
                    }
                }
            })
        }
        ConversationCommand::Assign {
            room_id,
            user_id,
            json,
        } => {
            let conversation = client
                .post(
                    &["conversations", &room_id, "assign"],
                    json!({ "user_id": user_id }),
                )
                .await?;
            output::print(json, &conversation, |_| {
                println!("{room_id} is assigned to {user_id}")
            })
        }
        ConversationCommand::Close { room_id, json } => {
            let conversation = client
                .post(&["conversations", &room_id, "close"], json!({}))
                .await?;
            output::print(json, &conversation, |_| println!("{room_id} is closed"))
        }
        ConversationCommand::Export {
            room_ids,
            format,
            output,
        } => export::run(client, &room_ids, format, output.as_deref()).await,
    }
}

/// Every page of the listing, as one document: `{"conversations": [...], "total": n}`.
async fn list_all(client: &AdminClient, filters: Vec<(&str, String)>) -> Result<Value, Failure> {
    let all = client
        .get_all(&["conversations"], &filters, "conversations")
        .await?;
    Ok(json!({ "conversations": all, "total": all.len() }))
}

/// A conversation with what people read in a table: the contact's name, times as dates.
fn for_people(c: &Value) -> Value {
    let mut shown = c.clone();
    let contact = &c["contact"];
    shown["contact"] = contact["name"]
        .as_str()
        .or(contact["id"].as_str())
        .or(contact["phone"].as_str())
        .map_or(Value::Null, |s| json!(s));
    shown["created"] = json!(when(&c["created_ts"]));
    shown["last_activity"] = json!(when(&c["last_activity_ts"]));
    shown
}

/// Milliseconds since the epoch as an ISO 8601 time, for people.
fn when(ms: &Value) -> String {
    ms.as_i64()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "-".to_owned(), |t| t.to_string())
}
