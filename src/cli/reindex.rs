//! `charla admin reindex`: rebuilds the search index from the store, with a progress bar; the
//! server keeps answering searches from the old index until the new one is complete.

use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::{
    client::{AdminClient, Failure, FailureKind},
    output::{self, JsonFlag},
};

/// How often the rebuild's progress is asked for.
const POLL: Duration = Duration::from_millis(200);

#[derive(Args, Debug)]
pub struct ReindexArgs {
    /// Start the rebuild and return at once instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

pub(super) async fn run(client: &AdminClient, args: ReindexArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let status = client
        .post(&["search", "reindex"], Value::Object(Default::default()))
        .await?;
    let generation = status["reindex"]["generation"].as_u64();
    if args.no_wait {
        return output::print(args.json, &status, |s| {
            println!(
                "rebuilding the search index (generation {})",
                s["reindex"]["generation"]
            );
        });
    }
    let bar = ProgressBar::with_draw_target(
        status["reindex"]["total"].as_u64(),
        ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} events {per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix("reindex");
    let status = loop {
        let status = client.get(&["search"], &[]).await?;
        let rebuild = &status["reindex"];
        bar.set_position(rebuild["done"].as_u64().unwrap_or(0));
        let ours = rebuild["generation"].as_u64() == generation;
        match rebuild["state"].as_str() {
            Some("done") if ours => break status,
            Some("failed") if ours => {
                bar.abandon();
                return Err(Failure::new(
                    FailureKind::ServerError,
                    format!(
                        "rebuilding the search index failed: {}",
                        rebuild["error"].as_str().unwrap_or("no reason given")
                    ),
                ));
            }
            _ => tokio::time::sleep(POLL).await,
        }
    };
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    output::print(args.json, &status, |s| {
        let documents = s["reindex"]["documents"].as_u64().unwrap_or(0);
        println!(
            "search index rebuilt: {documents} documents in {:.1} s ({} per second), generation {}, {} bytes",
            elapsed.as_secs_f64(),
            (documents as f64 / elapsed.as_secs_f64().max(0.001)) as u64,
            s["generation"],
            s["size_bytes"],
        );
    })
}
