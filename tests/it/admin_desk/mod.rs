//! `charla admin` for the support desk (conversations, tickets, desk roles) and application
//! services, through the real binary against a real server: `--url` and `--token` (the
//! server's `admin.token`), `--json` output parsed and checked, and the admin API's endpoints
//! refusing everyone but administrators.

mod appservices;
mod conversations;
mod roles;

use serde_json::Value;

use crate::common::TestServer;

/// What one `charla admin` run printed, and how it ended.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// `charla admin --url <server> --token <admin.token> …`.
pub(crate) struct Cli {
    url: String,
    token: String,
}

impl Cli {
    pub(crate) fn of(s: &TestServer) -> Self {
        let token = std::fs::read_to_string(s.data_path().join("admin.token"))
            .expect("the server wrote admin.token");
        Cli {
            url: s.server.base_url(),
            token: token.trim().to_owned(),
        }
    }

    /// The admin token, for raw requests to the admin API.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Runs the binary off the runtime's thread: the server under test keeps serving.
    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_charla"));
        command
            .args(["admin", "--url", &self.url, "--token", &self.token])
            .args(args)
            .env_remove("CHARLA_URL")
            .env_remove("CHARLA_ADMIN_TOKEN")
            .env_remove("RUST_LOG");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("charla runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    /// Runs `args --json`, expecting success and one JSON document on stdout.
    pub(crate) async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.run(&args).await;
        assert_eq!(run.code, 0, "charla admin {args:?} failed: {}", run.stderr);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}): {}", run.stdout))
    }

    /// Runs `args`, expecting the failure exit code `code` and a one-line reason on stderr.
    pub(crate) async fn fails(&self, args: &[&str], code: i32) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, code, "{args:?}: {} / {}", run.stdout, run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        run.stderr
    }
}
