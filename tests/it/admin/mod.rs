//! The admin API and `charla admin`, against a real server: the CLI is the real binary, talking
//! HTTP to an in-process server with the `admin.token` the server wrote.

mod appservices;
mod conversations;
mod roles;
mod synapse;
mod users_rooms;

use std::process::Command;

use serde_json::Value;

use crate::common::{Client, TestServer};

/// What one `charla admin` run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The single JSON document a `--json` run printed; panics with the run when it failed.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "charla admin failed: {self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {self:?}"))
    }
}

/// `charla admin` pointed at one server.
pub struct AdminCli {
    pub url: String,
    pub token: String,
}

impl AdminCli {
    /// With the `admin.token` the server wrote into its data folder.
    pub fn of(server: &TestServer) -> Self {
        let token = std::fs::read_to_string(server.data_path().join("admin.token"))
            .expect("the server writes admin.token");
        AdminCli {
            url: server.server.base_url(),
            token: token.trim().to_owned(),
        }
    }

    /// Runs `charla admin --url U --token T <args…>` (off the async runtime: the server under
    /// test runs on it).
    pub async fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_charla"));
        command
            .args(["admin", "--url", &self.url, "--token", &self.token])
            .args(args)
            .env_remove("CHARLA_URL")
            .env_remove("CHARLA_ADMIN_TOKEN");
        run(command).await
    }
}

impl AdminCli {
    /// Runs `args --json`, expecting success: the one JSON document it printed.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        self.run(&args).await.json()
    }

    /// Runs `args`, expecting the failure exit `code`: the reason it gave on stderr's last line.
    pub async fn fails(&self, args: &[&str], code: i32) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, code, "{args:?}: {run:?}");
        let reason = run.stderr.trim().lines().last().unwrap_or_default();
        assert!(reason.starts_with("charla admin: "), "{run:?}");
        reason.to_owned()
    }
}

/// Runs a prepared command to its end.
pub async fn run(mut command: Command) -> Run {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("charla runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A client carrying the admin token, for the HTTP API itself.
pub fn admin_client(server: &TestServer) -> Client {
    let mut client = server.client();
    client.token = Some(AdminCli::of(server).token);
    client
}
