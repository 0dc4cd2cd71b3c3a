//! `charla admin room …`

use clap::Subcommand;
use serde_json::{Value, json};

use super::{
    client::{AdminClient, Failure},
    output::{self, JsonFlag, Table},
};

#[derive(Subcommand, Debug)]
pub enum RoomCommand {
    /// Lists the rooms this server knows.
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// One room: name, alias, creator, version, members, whether it is a conversation.
    Show {
        room_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The room's members and their membership.
    Members {
        room_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Deletes a room: everyone leaves, nobody can join again, its history and media
    /// references are purged.
    Delete {
        room_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

const LIST_FIELDS: &[&str] = &[
    "room_id",
    "name",
    "canonical_alias",
    "joined_members",
    "creator",
];
const SHOW_FIELDS: &[&str] = &[
    "room_id",
    "name",
    "topic",
    "canonical_alias",
    "creator",
    "version",
    "joined_members",
    "joined_local_members",
    "encryption",
    "public",
    "join_rules",
    "history_visibility",
    "conversation",
];

pub(super) async fn run(client: &AdminClient, command: RoomCommand) -> Result<(), Failure> {
    match command {
        RoomCommand::List { json } => {
            let rooms = list_all(client).await?;
            output::print(json, &rooms, |v| {
                let mut table = Table::new(LIST_FIELDS);
                for room in v["rooms"].as_array().into_iter().flatten() {
                    table.object_row(room, LIST_FIELDS);
                }
                table.print();
            })
        }
        RoomCommand::Show { room_id, json } => {
            let room = client.get(&["rooms", &room_id], &[]).await?;
            output::print(json, &room, |r| output::fields(r, SHOW_FIELDS))
        }
        RoomCommand::Members { room_id, json } => {
            let members = client.get(&["rooms", &room_id, "members"], &[]).await?;
            output::print(json, &members, |v| {
                let fields = ["user_id", "membership", "displayname"];
                let mut table = Table::new(&fields);
                for member in v["members"].as_array().into_iter().flatten() {
                    table.object_row(member, &fields);
                }
                table.print();
            })
        }
        RoomCommand::Delete { room_id, json } => {
            let done = client.delete(&["rooms", &room_id]).await?;
            output::print(json, &done, |v| {
                println!(
                    "{room_id} is deleted: {} members removed, {} events purged",
                    v["kicked_users"].as_array().map_or(0, Vec::len),
                    output::cell(&v["purged_events"])
                )
            })
        }
    }
}

/// Every page of the room list, as one document: `{"rooms": [...], "total": n}`.
async fn list_all(client: &AdminClient) -> Result<Value, Failure> {
    let mut rooms = Vec::new();
    let mut from = 0u64;
    loop {
        let query = [("limit", "500".to_owned()), ("from", from.to_string())];
        let mut page = client.get(&["rooms"], &query).await?;
        if let Some(list) = page["rooms"].as_array_mut() {
            rooms.append(list);
        }
        match page["next_batch"].as_u64() {
            Some(next) if next > from => from = next,
            _ => break,
        }
    }
    let total = rooms.len();
    Ok(json!({ "rooms": rooms, "total": total }))
}
