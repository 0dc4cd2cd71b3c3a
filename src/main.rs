//! The `charla` command: `serve` runs the homeserver, `bench` measures one.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::{EnvFilter, fmt};

use charla::config::{Config, LogFormat};

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
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    match format {
        LogFormat::Json => fmt().json().with_env_filter(filter).init(),
        LogFormat::Pretty => fmt().with_env_filter(filter).init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Command::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("charla: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            init_logging(config.logging.format, &config.logging.filter);
            if let Err(e) = runtime.block_on(charla::server::serve(config)) {
                tracing::error!(error = %e, "server failed");
                return std::process::ExitCode::FAILURE;
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
