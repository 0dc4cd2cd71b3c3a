//! `charla admin appservice …`

use std::path::{Path, PathBuf};

use appservice::{Namespace, Namespaces, Registration};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{
    client::{AdminClient, Failure},
    output::{self, JsonFlag, Table},
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

const LIST_FIELDS: &[&str] = &["id", "url", "sender", "users", "source"];

pub(super) async fn run(client: &AdminClient, command: AppserviceCommand) -> Result<(), Failure> {
    match command {
        AppserviceCommand::List { json } => {
            let list = client.get(&["appservices"], &[]).await?;
            output::print(json, &list, |v| {
                let mut table = Table::new(LIST_FIELDS);
                for asv in v["appservices"].as_array().into_iter().flatten() {
                    table.object_row(&for_people(asv), LIST_FIELDS);
                }
                table.print();
            })
        }
        AppserviceCommand::Register(args) => register(client, args).await,
        AppserviceCommand::Unregister { id, json } => {
            let gone = client.delete(&["appservices", &id]).await?;
            output::print(json, &gone, |_| println!("{id} is unregistered"))
        }
        AppserviceCommand::Ping { id, json } => {
            let pong = client
                .post(&["appservices", &id, "ping"], json!({}))
                .await?;
            output::print(json, &pong, |v| {
                println!("{id} answered in {} ms", output::cell(&v["duration_ms"]))
            })
        }
    }
}

/// Registers FILE, after writing it with fresh tokens under `--generate`. The server checks
/// the registration: the file is sent as it is.
async fn register(client: &AdminClient, args: RegisterArgs) -> Result<(), Failure> {
    if let Some(id) = &args.generate {
        generate(
            &args.file,
            id,
            args.url.as_deref(),
            args.namespace.as_deref(),
        )?;
    }
    let yaml = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::local(format!("cannot read {}: {e}", args.file.display())))?;
    let mut registered = client
        .post_text(&["appservices"], "application/yaml", yaml)
        .await?;
    registered["file"] = json!(args.file);
    output::print(args.json, &registered, |v| {
        println!(
            "{} is registered (sender {}) from {}",
            output::cell(&v["id"]),
            output::cell(&v["sender"]),
            args.file.display()
        )
    })
}

/// Writes a new registration with random tokens to `file` (0600, never over an existing file):
/// the appservice `id` at `url`, its users the exclusive namespace `namespace`, its own user
/// `<id>bot`.
fn generate(
    file: &Path,
    id: &str,
    url: Option<&str>,
    namespace: Option<&str>,
) -> Result<(), Failure> {
    let (Some(url), Some(namespace)) = (url, namespace) else {
        return Err(Failure::refused("--generate needs --url and --namespace"));
    };
    if file.exists() {
        return Err(Failure::local(format!(
            "{} exists: --generate writes a new registration, choose another file",
            file.display()
        )));
    }
    let namespaces = Namespaces {
        users: vec![Namespace::new(namespace, true)],
        ..Default::default()
    };
    let registration =
        Registration::generate(id, Some(url.to_owned()), format!("{id}bot"), namespaces);
    registration
        .validate()
        .map_err(|e| Failure::refused(e.to_string()))?;
    registration
        .write_file(file)
        .map_err(|e| Failure::local(e.to_string()))
}

/// An appservice with what people read in a table: its user namespaces' regexes.
fn for_people(asv: &Value) -> Value {
    let mut shown = asv.clone();
    let users: Vec<&Value> = asv["namespaces"]["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ns| &ns["regex"])
        .collect();
    shown["users"] = json!(users);
    shown
}
