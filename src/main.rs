//! The `charla` command: `serve` runs the homeserver, `admin` administers one, `bench` measures
//! one, `bridge` runs a bridge alone, `whatsapp-sim` simulates the WhatsApp Cloud API.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::{EnvFilter, fmt};

use charla::config::{Config, LogFormat};

/// jemalloc instead of glibc's malloc. A request's buffers and values are mostly freed on
/// another thread than the one that made them (tokio's workers, the storage applier), where
/// glibc's arenas spent a fifth of the CPU of a WhatsApp send; jemalloc also holds less memory
/// for the same store (measured in docs/performance.md, "jemalloc").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "charla",
    version,
    about = "A compact Matrix homeserver for customer support"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver.
    Serve {
        /// Path to config.toml.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Load-test a homeserver through the Client-Server API (Charla or any other).
    Bench(charla::bench::BenchArgs),
    /// Run a bridge on its own listener (instead of inside `charla serve`).
    Bridge {
        #[command(subcommand)]
        bridge: BridgeCommand,
    },
    /// Administer a server: users, rooms, conversations, tickets, appservices, stats, backups.
    Admin(charla::cli::AdminArgs),
    /// Run the WhatsApp Cloud API simulator (Graph API plus a control API to play customers).
    WhatsappSim(charla::bridges::SimArgs),
}

#[derive(Subcommand)]
enum BridgeCommand {
    /// The WhatsApp bridge, configured by `[bridges.whatsapp]` of config.toml.
    Whatsapp {
        /// Path to config.toml.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// The email bridge, configured by `[bridges.email]` of config.toml.
    Email {
        /// Path to config.toml.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    match format {
        LogFormat::Json => fmt().json().with_env_filter(filter).init(),
        LogFormat::Pretty => fmt().with_env_filter(filter).init(),
    }
}

/// Keeps glibc from hoarding freed memory. Its default raises the mmap threshold after a large
/// free, so later large blocks (argon2's 19 MiB per password hash) come from per-thread arenas
/// and stay resident: a burst of logins left a gigabyte of RSS. A fixed threshold returns such
/// blocks to the OS when freed; fewer arenas bound fragmentation across blocking threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// The config at `path`, or `None` once the reason it cannot be used is printed.
fn load(path: &std::path::Path) -> Option<Config> {
    Config::load(path)
        .map_err(|e| eprintln!("charla: {e}"))
        .ok()
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Command::Serve { config } => {
            let Some(config) = load(&config) else {
                return std::process::ExitCode::FAILURE;
            };
            init_logging(config.logging.format, &config.logging.filter);
            if let Err(e) = runtime.block_on(charla::server::serve(config)) {
                tracing::error!(error = %e, "server failed");
                return std::process::ExitCode::FAILURE;
            }
        }
        Command::Bridge {
            bridge: BridgeCommand::Whatsapp { config },
        } => {
            let Some(config) = load(&config) else {
                return std::process::ExitCode::FAILURE;
            };
            init_logging(config.logging.format, &config.logging.filter);
            if let Err(e) = runtime.block_on(whatsapp::bridge::run_standalone(
                config.bridges.whatsapp.clone(),
                &config.server_name,
                &config.public_base_url(),
                &config.storage.path,
            )) {
                eprintln!("charla bridge whatsapp: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        Command::Bridge {
            bridge: BridgeCommand::Email { config },
        } => {
            let Some(config) = load(&config) else {
                return std::process::ExitCode::FAILURE;
            };
            init_logging(config.logging.format, &config.logging.filter);
            let run = async {
                let tls = charla::server::email_tls(&config).map_err(|e| e.to_string())?;
                email::bridge::run_standalone(
                    config.bridges.email.clone(),
                    &config.server_name,
                    &config.public_base_url(),
                    &config.storage.path,
                    tls,
                )
                .await
            };
            if let Err(e) = runtime.block_on(run) {
                eprintln!("charla bridge email: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        Command::WhatsappSim(args) => {
            init_logging(LogFormat::Pretty, "info");
            if let Err(e) = runtime.block_on(charla::bridges::run_sim(args)) {
                eprintln!("charla whatsapp-sim: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        Command::Admin(args) => {
            // Logs go to stderr: stdout is the command's output (one JSON document with --json).
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
            fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            if let Err(failure) = runtime.block_on(charla::cli::run(args)) {
                eprintln!("charla admin: {failure}");
                return std::process::ExitCode::from(failure.exit_code());
            }
        }
        Command::Bench(args) => {
            init_logging(LogFormat::Pretty, "warn");
            if let Err(e) = runtime.block_on(charla::bench::run(args)) {
                eprintln!("charla bench: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
