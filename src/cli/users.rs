//! `charla admin user …`

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::{
    client::{AdminClient, Failure},
    output::{self, JsonFlag, Table},
};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Creates a local account (fails if it exists). Without --password a random one is made
    /// and printed.
    Create {
        /// The localpart (`ana`) or the full user id (`@ana:example.com`).
        name: String,
        #[arg(long)]
        password: Option<String>,
        /// A server administrator.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        displayname: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Lists local accounts.
    List {
        /// Include deactivated accounts.
        #[arg(long)]
        deactivated: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// One account: profile, admin flag, desk role, devices.
    Show {
        user_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Deactivates an account: logs it out everywhere, leaves its rooms, forbids logins.
    Deactivate {
        user_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Sets a new password and logs the account's devices out.
    ResetPassword {
        user_id: String,
        #[arg(long)]
        password: String,
        /// Keep the account's devices logged in.
        #[arg(long)]
        keep_devices: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Sets the account's role on the support desk (kept in the store; `[support]` in the config
    /// is the bootstrap).
    SetRole {
        user_id: String,
        role: DeskRole,
        /// Conversations an agent takes at once.
        #[arg(long)]
        capacity: Option<u32>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// A role on the support desk.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum DeskRole {
    Admin,
    Agent,
    User,
}

impl DeskRole {
    fn as_str(self) -> &'static str {
        match self {
            DeskRole::Admin => "admin",
            DeskRole::Agent => "agent",
            DeskRole::User => "user",
        }
    }
}

const LIST_FIELDS: &[&str] = &["user_id", "displayname", "admin", "deactivated", "role"];
const SHOW_FIELDS: &[&str] = &[
    "user_id",
    "displayname",
    "avatar_url",
    "admin",
    "deactivated",
    "role",
    "capacity",
    "created_ts",
    "devices",
];

pub(super) async fn run(client: &AdminClient, command: UserCommand) -> Result<(), Failure> {
    match command {
        UserCommand::Create {
            name,
            password,
            admin,
            displayname,
            json,
        } => {
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| crate::users::random_string(20));
            let mut user = client
                .post(
                    &["users"],
                    json!({
                        "username": name,
                        "password": password,
                        "admin": admin,
                        "displayname": displayname,
                    }),
                )
                .await?;
            if generated {
                user["password"] = json!(password);
            }
            output::print(json, &user, |u| {
                let mut names = SHOW_FIELDS.to_vec();
                if generated {
                    names.push("password");
                }
                output::fields(u, &names);
            })
        }
        UserCommand::List { deactivated, json } => {
            let users = list_all(client, deactivated).await?;
            output::print(json, &users, |v| {
                let mut table = Table::new(LIST_FIELDS);
                for user in v["users"].as_array().into_iter().flatten() {
                    table.object_row(user, LIST_FIELDS);
                }
                table.print();
            })
        }
        UserCommand::Show { user_id, json } => {
            let user = client.get(&["users", &user_id], &[]).await?;
            output::print(json, &user, |u| output::fields(u, SHOW_FIELDS))
        }
        UserCommand::Deactivate { user_id, json } => {
            let done = client
                .post(&["users", &user_id, "deactivate"], json!({}))
                .await?;
            output::print(json, &done, |_| println!("{user_id} is deactivated"))
        }
        UserCommand::ResetPassword {
            user_id,
            password,
            keep_devices,
            json,
        } => {
            let done = client
                .post(
                    &["users", &user_id, "password"],
                    json!({ "password": password, "logout_devices": !keep_devices }),
                )
                .await?;
            output::print(json, &done, |_| println!("{user_id}'s password is changed"))
        }
        UserCommand::SetRole {
            user_id,
            role,
            capacity,
            json,
        } => {
            let done = client
                .put(
                    &["users", &user_id, "role"],
                    json!({ "role": role.as_str(), "capacity": capacity }),
                )
                .await?;
            output::print(json, &done, |v| {
                output::fields(v, &["user_id", "role", "capacity"])
            })
        }
    }
}

/// Every page of the user list, as one document: `{"users": [...], "total": n}`.
async fn list_all(client: &AdminClient, deactivated: bool) -> Result<Value, Failure> {
    let mut users = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut query = vec![
            ("limit", "500".to_owned()),
            ("deactivated", deactivated.to_string()),
        ];
        if let Some(from) = &from {
            query.push(("from", from.clone()));
        }
        let mut page = client.get(&["users"], &query).await?;
        if let Some(list) = page["users"].as_array_mut() {
            users.append(list);
        }
        match page["next_token"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
    }
    let total = users.len();
    Ok(json!({ "users": users, "total": total }))
}
