//! `charla admin backup`, `restore` and `config check`, run as the real binary against real
//! servers: a backup taken while messages keep arriving restores every message acknowledged
//! before it began, in order; restores refuse a running server, a damaged or cut archive and a
//! full folder, changing nothing; the backup endpoint is for admins only.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    common::{
        Client, TestServer, assert_error,
        process::{self, Process, free_port},
    },
    durability::all_bodies,
    media,
};

/// A server's folder: `config.toml` and its `data` folder, started as the real binary.
struct Site {
    dir: tempfile::TempDir,
    base: String,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "server_name = \"localhost\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
                 [storage]\npath = \"data\"\n\
                 [limits]\nsend_per_second = 100000.0\nsend_burst = 100000\n\
                 [logging]\nfilter = \"warn\"\n"
            ),
        )
        .unwrap();
        Site {
            dir,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn serve(&self) -> Process {
        process::serve(&self.config(), &self.base).await
    }

    /// `charla admin --config <config> <args>`, off the test's runtime threads.
    async fn admin(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_charla"));
        command.arg("admin").arg("--config").arg(self.config());
        command.args(args);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    fn client(&self, token: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: self.base.clone(),
            token: Some(token.to_owned()),
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// Registers `name` and returns its access token.
async fn register(base: &str, name: &str) -> String {
    let client = Client {
        http: reqwest::Client::new(),
        base: base.to_owned(),
        token: None,
    };
    let (status, body) = client
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": name, "password": "pw-pw-pw-pw", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// Every file under `dir` with the SHA-256 of its bytes: to show a folder did not change.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let sha = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
                files.insert(path.strip_prefix(dir).unwrap().to_owned(), sha);
            }
        }
    }
    files
}

/// Names in `dir` other than `keep`: leftovers of a command (temporary folders and files).
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_messages_arrive_restores_every_one_acknowledged_before_it() {
    let origin = Site::new();
    let server = origin.serve().await;
    let alice = origin.client(&register(&origin.base, "alice").await);
    let room = alice.create_room(json!({ "name": "backed up" })).await;
    let file = b"a file that must come back".repeat(1000);
    let media_id = media::upload(&alice, "", "text/plain", file.clone()).await;

    // Senders that keep going through the whole backup, each recording what was acknowledged.
    let (tx, mut acked) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|w| {
            let (alice, room, tx, stop) = (alice.clone(), room.clone(), tx.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let body = format!("w{w}-{i}");
                    alice.send_text(&room, &body, &body).await;
                    let _ = tx.send(body);
                }
            })
        })
        .collect();
    drop(tx);
    let mut before = Vec::new();
    while before.len() < 200 {
        before.push(acked.recv().await.unwrap());
    }
    // Everything acknowledged up to this instant must be in the backup.
    while let Ok(body) = acked.try_recv() {
        before.push(body);
    }
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = archive_dir.path().join("charla.tar");
    let backup = origin
        .admin(&["backup", archive.to_str().unwrap(), "--json"])
        .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for sender in senders {
        sender.await.unwrap();
    }
    let mut during = 0;
    while acked.recv().await.is_some() {
        during += 1;
    }
    assert!(backup.status.success(), "backup: {}", stderr(&backup));
    let summary = stdout_json(&backup);
    assert_eq!(summary["path"], archive.to_str().unwrap());
    let bytes = std::fs::metadata(&archive).unwrap().len();
    assert_eq!(summary["bytes"], bytes);
    assert!(summary["entries"].as_u64().unwrap() >= 5, "{summary}");
    assert_eq!(summary["media_files"], 1);
    assert!(during > 0, "the senders kept sending during the backup");
    assert_eq!(
        others(archive_dir.path(), &["charla.tar"]),
        Vec::<String>::new()
    );
    // No credential of the running server is in the archive.
    let token = std::fs::read_to_string(origin.data().join("admin.token")).unwrap();
    let archived = std::fs::read(&archive).unwrap();
    assert!(!contains(&archived, token.trim().as_bytes()));
    assert!(!contains(
        &archived,
        alice.token.as_ref().unwrap().as_bytes()
    ));
    drop(server);

    let copy = Site::new();
    let restore = copy
        .admin(&["restore", archive.to_str().unwrap(), "--json"])
        .await;
    assert!(restore.status.success(), "restore: {}", stderr(&restore));
    assert_eq!(stdout_json(&restore)["media_files"], 1);
    let _server = copy.serve().await;
    // The access token is the same account's: tokens are stored (hashed) in the store.
    let alice = copy.client(alice.token.as_ref().unwrap());
    let stored = all_bodies(&alice, &room).await;
    for body in &before {
        assert!(
            stored.contains(body),
            "{body}, acknowledged before the backup, is missing"
        );
    }
    // Per sender, what came back is an unbroken run from its first message, in order.
    for w in 0..4 {
        let prefix = format!("w{w}-");
        let seq: Vec<u64> = stored
            .iter()
            .filter_map(|b| b.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(seq, (0..seq.len() as u64).collect::<Vec<_>>(), "sender {w}");
    }
    let got = media::get(
        &alice,
        &format!("/_matrix/client/v1/media/download/localhost/{media_id}"),
    )
    .await;
    assert_eq!((got.status, got.bytes), (200, file));
    // The restored server made its own admin token, and the room keeps working.
    let new_token = std::fs::read_to_string(copy.data().join("admin.token")).unwrap();
    assert_ne!(new_token.trim(), token.trim());
    alice.send_text(&room, "after", "after the restore").await;
    assert_eq!(
        all_bodies(&alice, &room).await.last().unwrap(),
        "after the restore"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_refuses_a_running_server_a_damaged_archive_and_a_full_folder() {
    let origin = Site::new();
    let server = origin.serve().await;
    let alice = origin.client(&register(&origin.base, "alice").await);
    let room = alice.create_room(json!({})).await;
    for i in 0..20 {
        alice
            .send_text(&room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let archives = tempfile::tempdir().unwrap();
    let archive = archives.path().join("good.tar");
    let backup = origin.admin(&["backup", archive.to_str().unwrap()]).await;
    assert!(backup.status.success(), "{}", stderr(&backup));
    let good = std::fs::read(&archive).unwrap();

    // Over the running server, even with --force: refused, and the server's data is intact.
    for force in [false, true] {
        let mut args = vec!["restore", archive.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let refused = origin.admin(&args).await;
        assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
        assert!(stderr(&refused).contains("in use"), "{}", stderr(&refused));
    }
    assert_eq!(
        others(origin.dir.path(), &["config.toml", "data"]),
        Vec::<String>::new()
    );
    assert_eq!(all_bodies(&alice, &room).await.len(), 20);
    drop(server);

    // A flipped byte in the middle, and the first half alone: refused, nothing written.
    let target = Site::new();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0xff;
    let damaged = [
        ("flipped.tar", flipped),
        ("cut.tar", good[..good.len() / 2].to_vec()),
    ];
    for (name, bytes) in damaged {
        let path = archives.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let refused = target.admin(&["restore", path.to_str().unwrap()]).await;
        assert_eq!(
            refused.status.code(),
            Some(4),
            "{name}: {}",
            stderr(&refused)
        );
        assert!(stderr(&refused).contains("damaged"), "{}", stderr(&refused));
        assert_eq!(
            others(target.dir.path(), &["config.toml"]),
            Vec::<String>::new(),
            "{name}: nothing may be written"
        );
    }

    // Into an empty folder, then again: a full folder is refused without --force, untouched.
    let restored = target.admin(&["restore", archive.to_str().unwrap()]).await;
    assert!(restored.status.success(), "{}", stderr(&restored));
    let before = tree(&target.data());
    assert!(!before.is_empty());
    let refused = target.admin(&["restore", archive.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("not empty"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(tree(&target.data()), before);
    // With --force it is replaced: a restored server then has the messages, and no temporary
    // folder is left beside it.
    let restored = target
        .admin(&["restore", archive.to_str().unwrap(), "--force"])
        .await;
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(
        others(target.dir.path(), &["config.toml", "data"]),
        Vec::<String>::new()
    );
    let _server = target.serve().await;
    let alice = target.client(alice.token.as_ref().unwrap());
    let bodies = all_bodies(&alice, &room).await;
    assert_eq!(bodies, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn config_check_accepts_a_good_config_and_names_the_bad_key() {
    let site = Site::new();
    let good = site
        .admin(&["config", "check", site.config().to_str().unwrap()])
        .await;
    assert!(good.status.success(), "{}", stderr(&good));
    assert_eq!(String::from_utf8_lossy(&good.stdout).trim(), "ok");
    let json = site
        .admin(&["config", "check", site.config().to_str().unwrap(), "--json"])
        .await;
    assert_eq!(stdout_json(&json)["ok"], true);

    let cases = [
        (
            "server_name = \"a\"\n[server]\nlisten = \"nope\"\n",
            "server.listen",
        ),
        (
            "server_name = \"a\"\n[storage]\npaht = \"data\"\n",
            "storage.paht",
        ),
        (
            "server_name = \"a\"\n[registration]\nshared_secret = \"change-me\"\n",
            "registration.shared_secret",
        ),
        (
            "server_name = \"a\"\n[appservice]\nregistrations = [\"missing.yaml\"]\n",
            "missing.yaml",
        ),
    ];
    for (text, named) in cases {
        let path = site.dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let bad = site
            .admin(&["config", "check", path.to_str().unwrap()])
            .await;
        assert_eq!(bad.status.code(), Some(4), "{text}: {}", stderr(&bad));
        let reason = stderr(&bad);
        assert!(reason.contains(named), "{text}: {reason}");
        assert_eq!(reason.trim().lines().count(), 1, "one line: {reason}");
    }
}

#[tokio::test]
async fn the_backup_endpoint_refuses_anyone_but_an_admin() {
    let server = TestServer::start().await;
    let path = "/_charla/admin/v1/backup";
    let (status, body) = server.client().get(path).await;
    assert_error(status, &body, 401, "M_MISSING_TOKEN");
    let user = server.user("mallory").await;
    let (status, body) = user.get(path).await;
    assert_error(status, &body, 403, "M_FORBIDDEN");
}
