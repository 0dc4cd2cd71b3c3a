//! `charla admin backup PATH` and `charla admin restore PATH`.
//!
//! `backup` streams the running server's archive (`GET /_charla/admin/v1/backup`) into a
//! temporary file beside PATH, verifies the whole file as a restore would, syncs it and only
//! then renames it to PATH: PATH is never a partial or damaged archive, also when the command is
//! killed (the temporary `.<name>.…partial` file is then left behind). `restore` works on files
//! with the server stopped (`crate::backup::restore`). Progress bars go to stderr, only when
//! it is a terminal.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::{
    client::{AdminClient, Failure, FailureKind},
    output::{self, JsonFlag},
};
use crate::backup::{
    ArchiveError, ArchiveFile, Verify, read_archive,
    restore::{Progress, RestoreError, Targets},
};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The archive to write (exactly this path; replaced if it exists, only once the new
    /// archive is complete and verified).
    pub path: PathBuf,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The archive to restore.
    pub path: PathBuf,
    /// Restore into a data folder that is not empty (its content is replaced).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

pub(super) async fn backup(client: &AdminClient, args: BackupArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let path = &args.path;
    let local = |what: &str, e: &dyn std::fmt::Display| {
        Failure::local(format!("{what} {}: {e}", path.display()))
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Failure::local(format!("{} is not a file name", path.display())))?
        .to_string_lossy()
        .into_owned();
    // Removed when dropped: on every failure below.
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| local("cannot create a file beside", &e))?;
    let mut response = client.stream(&["backup"]).await?;
    let bar = bar_for("receiving", None);
    let mut out = ArchiveFile::new(temp.as_file()).map_err(|e| local("cannot write beside", &e))?;
    let mut received = 0u64;
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            Failure::new(
                FailureKind::ServerError,
                format!("the backup stopped after {received} bytes: {e}"),
            )
        })?;
        let Some(chunk) = chunk else { break };
        received += chunk.len() as u64;
        out.write(chunk)
            .await
            .map_err(|e| local("cannot write beside", &e))?;
        bar.set_position(received);
    }
    out.flush()
        .await
        .map_err(|e| local("cannot write beside", &e))?;
    drop(out);
    bar.finish_and_clear();
    let bar = bar_for("verifying", Some(received));
    let file = std::fs::File::open(temp.path()).map_err(|e| local("cannot read", &e))?;
    let verified = read_archive(
        std::io::BufReader::with_capacity(1 << 20, file),
        &mut Verify,
        &|n| bar.set_position(n),
    )
    .map_err(|e| {
        Failure::new(
            FailureKind::ServerError,
            format!("the server's archive does not verify: {e}"),
        )
    })?;
    bar.finish_and_clear();
    temp.as_file()
        .sync_all()
        .map_err(|e| local("cannot sync", &e))?;
    temp.persist(path)
        .map_err(|e| local("cannot rename the archive to", &e.error))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| local("cannot sync the folder of", &e))?;
    let elapsed = started.elapsed();
    let summary = json!({
        "path": path,
        "bytes": verified.bytes,
        "entries": verified.entries,
        "stores": verified.header.stores.iter().map(|s| &s.key).collect::<Vec<_>>(),
        "media_files": verified.media.files,
        "duration_ms": elapsed.as_millis() as u64,
    });
    output::print(args.json, &summary, |_| {
        println!(
            "backup written to {}: {} in {} entries ({} media files) in {:.1}s, {}/s",
            path.display(),
            indicatif::HumanBytes(verified.bytes),
            verified.entries,
            verified.media.files,
            elapsed.as_secs_f64(),
            indicatif::HumanBytes(rate(verified.bytes, elapsed)),
        );
    })
}

pub(super) async fn restore(config: &Path, args: RestoreArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let config = crate::config::Config::load(config)
        .map_err(|e| Failure::local(format!("{}: {e}", config.display())))?;
    let targets =
        Targets::of(&config).map_err(|e| Failure::local(format!("the config's folders: {e}")))?;
    let archive = args.path.clone();
    let force = args.force;
    let progress = Bars(std::sync::Mutex::new(None));
    let restored = tokio::task::spawn_blocking(move || {
        let done = crate::backup::restore::restore(&targets, &archive, force, &progress);
        progress.clear();
        done
    })
    .await
    .map_err(|e| Failure::local(format!("the restore stopped: {e}")))?
    .map_err(|e| {
        // Refused: the folders are not in a state to restore into; local: the archive or a
        // file is at fault.
        match e {
            RestoreError::InUse(_) | RestoreError::NotEmpty(_) => Failure::refused(e.to_string()),
            RestoreError::Archive(ArchiveError::Corrupt(why)) => Failure::local(format!(
                "{}: {why}; nothing was written",
                args.path.display()
            )),
            other => Failure::local(other.to_string()),
        }
    })?;
    let elapsed = started.elapsed();
    let folders: Vec<_> = restored
        .folders
        .iter()
        .map(|(folder, replaced)| json!({ "path": folder, "replaced": replaced }))
        .collect();
    let v = &restored.verified;
    let summary = json!({
        "archive": args.path,
        "bytes": v.bytes,
        "entries": v.entries,
        "server_name": v.header.server_name,
        "created_ts": v.header.created_ts,
        "stores": v.header.stores.iter().map(|s| &s.key).collect::<Vec<_>>(),
        "media_files": v.media.files,
        "media_mismatched": v.media.mismatched,
        "folders": folders,
        "duration_ms": elapsed.as_millis() as u64,
    });
    output::print(args.json, &summary, |_| {
        for (folder, replaced) in &restored.folders {
            let how = if *replaced { "replaced" } else { "restored" };
            println!("{how} {}", folder.display());
        }
        println!(
            "restored {} ({} in {} entries, {} media files) in {:.1}s, {}/s",
            args.path.display(),
            indicatif::HumanBytes(v.bytes),
            v.entries,
            v.media.files,
            elapsed.as_secs_f64(),
            indicatif::HumanBytes(rate(v.bytes, elapsed)),
        );
        for sha in &v.media.mismatched {
            eprintln!("warning: media file {sha} was already damaged on the server it came from");
        }
    })
}

fn rate(bytes: u64, elapsed: Duration) -> u64 {
    (bytes as f64 / elapsed.as_secs_f64().max(0.001)) as u64
}

/// A progress bar on stderr (hidden when stderr is not a terminal): a bar when the total is
/// known, bytes and rate otherwise.
fn bar_for(phase: &str, total: Option<u64>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{prefix:>10} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}"
    } else {
        "{prefix:>10} {spinner} {bytes} {binary_bytes_per_sec} {elapsed}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(phase.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The restore's phases as progress bars.
struct Bars(std::sync::Mutex<Option<ProgressBar>>);

impl Bars {
    fn clear(&self) {
        if let Some(bar) = self.0.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn phase(&self, name: &'static str, total: u64) {
        self.clear();
        if let Ok(mut current) = self.0.lock() {
            *current = Some(bar_for(name, Some(total)));
        }
    }

    fn read(&self, bytes: u64) {
        if let Some(bar) = self.0.lock().ok().as_ref().and_then(|b| b.as_ref()) {
            bar.set_position(bytes);
        }
    }
}
