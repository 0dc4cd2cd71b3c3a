//! `backup`: how fast a full store is backed up and restored, and what a backup costs the sends
//! running beside it (issue #20's figure: backup and restore at ≥ 100 MB/s, sends during a
//! backup at ≥ 80 % of their unloaded rate).
//!
//! Like `support` it brings its own Charla, in process, in a temporary data folder
//! (`--homeserver` is ignored: the backup needs the admin token from the data folder).
//!
//! 1. Fill: `--clients` users, one room each, send until the store holds `--messages`
//!    messages (a closed loop, one request in flight per user).
//! 2. Unloaded: the same loop for `--duration` seconds: sends/s (again after step 4; the
//!    rate during the backup is compared with the mean of the two).
//! 3. Backup, idle: `GET /_charla/admin/v1/backup` with the admin token, streamed to a file
//!    as `charla admin backup` does: archive MB/s.
//! 4. Backup under load: the send loop runs from just before the backup starts until it ends:
//!    sends/s during the backup, and the backup's own MB/s under that load.
//! 5. Verify: the archive read back with every checksum (what `charla admin backup` does before
//!    it renames the file into place, and a restore before it writes).
//! 6. Restore, with the server stopped: the idle archive into an empty folder, as `charla
//!    admin restore` does (verify, write, replay the log, sync): archive MB/s.
//!
//! MB are 10^6 bytes of the archive.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::backup::{
    ArchiveFile, Verify, read_archive,
    restore::{Progress, Targets, restore},
};
use crate::bench::BenchArgs;
use crate::bench::client::BoxError;
use crate::bench::report::Report;
use crate::bench::session::{Preset, Session};
use crate::bench::setup::{Ctx, SETUP_CONCURRENCY, bounded, progress, random_prefix};

pub async fn run(args: &BenchArgs) -> Result<Report, BoxError> {
    let dir =
        std::env::temp_dir().join(format!("charla-bench-backup-{:08x}", rand::random::<u32>()));
    let result = measure(&dir, args).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(dir: &Path, args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.clients.max(1);
    let messages = args.messages as u64;
    let mut r = Report::new(
        "backup",
        format!("{messages} messages in {n} rooms; sends from {n} clients"),
    );
    let data = dir.join("data");
    let config = crate::config::Config::from_toml(&format!(
        "server_name = \"bench\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\npath = {data:?}\n\
         [limits]\nsend_per_second = 1000000.0\nsend_burst = 1000000\n\
         [logging]\nfilter = \"warn\"\n"
    ))?;
    let server = crate::server::start(config).await?;
    let base = server.base_url();
    let ctx = Ctx::new(&base, n, random_prefix(), None)?;
    progress(format!("backup: registering {n} users"));
    let users = ctx.register_many("backup", n).await?;
    let rooms = bounded(n, SETUP_CONCURRENCY, |i| {
        users[i].create_room(Preset::Private, None)
    })
    .await?;
    let senders = Senders { users, rooms };

    progress(format!(
        "backup: filling the store with {messages} messages"
    ));
    let fill = senders.send(Some(messages), None).await;
    r.row(
        "fill",
        format!(
            "{} messages in {:.0} s",
            fill.acked,
            fill.elapsed.as_secs_f64()
        ),
    );
    let duration = Duration::from_secs(args.duration.max(1));
    progress(format!(
        "backup: sends for {}s, no backup",
        duration.as_secs()
    ));
    let before = senders.send_for(duration).await;
    let store_bytes = server.services.store.size_on_disk()?;
    let token = std::fs::read_to_string(data.join("admin.token"))?;
    let token = token.trim();

    progress("backup: backup, no load");
    let idle_archive = dir.join("idle.tar");
    let idle = download(&base, token, &idle_archive).await?;
    progress("backup: backup while the clients send");
    let stop = Arc::new(AtomicBool::new(false));
    let sending = {
        let (senders, stop) = (senders.clone(), stop.clone());
        tokio::spawn(async move { senders.send(None, Some(stop)).await })
    };
    let loaded = download(&base, token, &dir.join("loaded.tar")).await;
    stop.store(true, Ordering::SeqCst);
    let during = sending.await?;
    let loaded = loaded?;
    // Unloaded again, right after: the machine's other load changes over a run, and the rate
    // during the backup is compared with the mean of the two around it.
    progress(format!(
        "backup: sends for {}s, no backup",
        duration.as_secs()
    ));
    let after = senders.send_for(duration).await;
    server.stop().await;

    progress("backup: verifying the archive");
    let started = Instant::now();
    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&idle_archive)?);
    read_archive(file, &mut Verify, &|_| {})?;
    let verify = started.elapsed();

    progress("backup: restoring into an empty folder");
    let restored = dir.join("restored");
    let targets = Targets {
        server_name: "bench".into(),
        media: restored.join("media"),
        bridges: vec![
            ("whatsapp", restored.join("bridges").join("whatsapp")),
            ("email", restored.join("bridges").join("email")),
        ],
        data: restored,
        cache_mb: 32,
    };
    let started = Instant::now();
    let archive = idle_archive.clone();
    tokio::task::spawn_blocking(move || restore(&targets, &archive, false, &NoProgress)).await??;
    let restore_time = started.elapsed();
    let restored_bytes = folder_bytes(&dir.join("restored"));

    let mb = |bytes: u64, t: Duration| bytes as f64 / 1e6 / t.as_secs_f64();
    let unloaded_rate = (before.rate() + after.rate()) / 2.0;
    let errors = before.errors + during.errors + after.errors;
    let during_rate = during.rate();
    r.row(
        "store on disk",
        format!("{:.0} MB", store_bytes as f64 / 1e6),
    );
    r.row(
        "backup, idle",
        format!(
            "{:.0} MB in {:.1} s: {:.0} MB/s",
            idle.0 as f64 / 1e6,
            idle.1.as_secs_f64(),
            mb(idle.0, idle.1)
        ),
    );
    r.row(
        "backup, under sends",
        format!(
            "{:.0} MB in {:.1} s: {:.0} MB/s",
            loaded.0 as f64 / 1e6,
            loaded.1.as_secs_f64(),
            mb(loaded.0, loaded.1)
        ),
    );
    r.row("verify", format!("{:.0} MB/s", mb(idle.0, verify)));
    r.row(
        "restore",
        format!(
            "{:.1} s: {:.0} MB/s of archive ({:.0} MB of store written)",
            restore_time.as_secs_f64(),
            mb(idle.0, restore_time),
            restored_bytes as f64 / 1e6
        ),
    );
    r.row(
        "sends, no backup",
        format!("{:.0}/s before, {:.0}/s after", before.rate(), after.rate()),
    );
    r.row(
        "sends during backup",
        format!(
            "{during_rate:.0}/s ({:.0} % of the mean without)",
            100.0 * during_rate / unloaded_rate.max(1.0)
        ),
    );
    r.row("send errors", format!("{errors}"));
    r.set("messages", fill.acked);
    r.set("store_bytes", store_bytes);
    r.set("archive_bytes", idle.0);
    r.set("backup_mb_s", mb(idle.0, idle.1));
    r.set("backup_under_load_mb_s", mb(loaded.0, loaded.1));
    r.set("verify_mb_s", mb(idle.0, verify));
    r.set("restore_mb_s", mb(idle.0, restore_time));
    r.set("restored_store_bytes", restored_bytes);
    r.set("sends_per_sec_unloaded", unloaded_rate);
    r.set("sends_per_sec_during_backup", during_rate);
    if errors + fill.errors > 0 {
        r.problem("some sends failed");
    }
    Ok(r)
}

/// Streams the backup into `to` as `charla admin backup` does (its writes paced, then
/// synced); returns its size and how long it took.
async fn download(base: &str, token: &str, to: &Path) -> Result<(u64, Duration), BoxError> {
    let started = Instant::now();
    let mut response = reqwest::Client::new()
        .get(format!("{base}/_charla/admin/v1/backup"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    let file = std::fs::File::create(to)?;
    let mut out = ArchiveFile::new(&file)?;
    let mut bytes = 0;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        out.write(chunk).await?;
    }
    out.flush().await?;
    tokio::task::spawn_blocking(move || file.sync_all()).await??;
    Ok((bytes, started.elapsed()))
}

/// The bytes of the files under `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => folder_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &'static str, _: u64) {}
    fn read(&self, _: u64) {}
}

/// The sending clients: one room each.
#[derive(Clone)]
struct Senders {
    users: Vec<Session>,
    rooms: Vec<String>,
}

/// What a run of the send loop did.
struct Sent {
    acked: u64,
    errors: u64,
    elapsed: Duration,
}

impl Sent {
    fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(0.001)
    }
}

impl Senders {
    /// The send loop for `duration`.
    async fn send_for(&self, duration: Duration) -> Sent {
        let stop = Arc::new(AtomicBool::new(false));
        let timer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                stop.store(true, Ordering::SeqCst);
            })
        };
        let sent = self.send(None, Some(stop)).await;
        let _ = timer.await;
        sent
    }

    /// Every client sends, one request in flight each, until `count` sends were made or `stop`
    /// is set.
    async fn send(&self, count: Option<u64>, stop: Option<Arc<AtomicBool>>) -> Sent {
        let started = Instant::now();
        let taken = Arc::new(AtomicU64::new(0));
        let run = random_prefix();
        let tasks: Vec<_> = self
            .users
            .iter()
            .zip(&self.rooms)
            .enumerate()
            .map(|(i, (user, room))| {
                let (user, room) = (user.clone(), room.clone());
                let (taken, stop, run) = (taken.clone(), stop.clone(), run.clone());
                tokio::spawn(async move {
                    let (mut acked, mut errors) = (0u64, 0u64);
                    loop {
                        if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                            break;
                        }
                        let seq = taken.fetch_add(1, Ordering::SeqCst);
                        if count.is_some_and(|c| seq >= c) {
                            break;
                        }
                        let txn = format!("{run}.{i}.{seq}");
                        match user.send_text(&room, &txn, &format!("message {seq}")).await {
                            Ok(_) => acked += 1,
                            Err(_) => {
                                errors += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    (acked, errors)
                })
            })
            .collect();
        let (mut acked, mut errors) = (0, 0);
        for task in tasks {
            if let Ok((a, e)) = task.await {
                acked += a;
                errors += e;
            }
        }
        Sent {
            acked,
            errors,
            elapsed: started.elapsed(),
        }
    }
}
