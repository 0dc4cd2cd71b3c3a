//! Attack tests: wal (issue #18 item 13). A write-ahead log damaged anywhere a crash cannot damage
//! it stops the start with an error naming the segment file and the byte offset; it is never
//! replayed around (which lost the rest of the segment's acknowledged messages and applied later
//! writes over the hole). The tail a crash cut short is dropped, and every acknowledged message
//! stays readable.
//!
//! The tests edit the log the way its documented format lays it out (`storage/src/wal.rs`): each
//! record is its payload's length (u32 LE), its CRC-32 (u32 LE) and the payload; zeros follow the
//! last record. The homeserver's store keeps its log in `<data>/wal`.

use std::{
    ops::Range,
    path::{Path, PathBuf},
};

use charla::server::RunningServer;
use serde_json::json;

use crate::common::{Client, TestServer, config_for, enc};

async fn start(data: &Path) -> Result<RunningServer, String> {
    charla::server::start(config_for(data, ""))
        .await
        .map_err(|e| e.to_string())
}

/// Stops the server and waits until its store has let go of the data folder: its last handle
/// may close on a background thread, after `stop` returns, and may still append to the log
/// until then. The folder's lock (on `db`) is the last thing the store releases.
async fn stop(server: RunningServer, data: &Path) {
    server.stop().await;
    let db = std::fs::File::open(data.join("db")).expect("the store's lock file");
    for _ in 0..1000 {
        match db.try_lock() {
            Ok(()) => return,
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            Err(e) => panic!("cannot probe the store's lock: {e:?}"),
        }
    }
    panic!("the stopped server never closed its store");
}

/// The log's segment files, oldest first.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .expect("the log folder")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    found.sort();
    found
}

/// The extents of a segment's records, up to the zeros after the last one.
fn records(segment: &[u8]) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut at = 0;
    while segment[at..].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        found.push(at..at + 8 + len);
        at += 8 + len;
    }
    found
}

/// Every message body of the room, oldest first (the tests send less than a page).
async fn bodies(alice: &Client, room: &str) -> Vec<String> {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
        enc(room)
    );
    let (status, page) = alice.get(&path).await;
    assert_eq!(status, 200, "{page}");
    let mut bodies: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect();
    bodies.reverse();
    bodies
}

/// Flips a byte in the middle of the middle record of `segment`, which has records after it;
/// returns where that record starts, and the byte, to flip back.
fn damage_a_middle_record(segment: &Path) -> (usize, usize) {
    let mut bytes = std::fs::read(segment).unwrap();
    let all = records(&bytes);
    assert!(all.len() > 2, "{} records", all.len());
    let hit = &all[all.len() / 2];
    let at = hit.start + hit.len() / 2;
    bytes[at] ^= 0xFF;
    std::fs::write(segment, bytes).unwrap();
    (hit.start, at)
}

fn flip_back(segment: &Path, at: usize) {
    let mut bytes = std::fs::read(segment).unwrap();
    bytes[at] ^= 0xFF;
    std::fs::write(segment, bytes).unwrap();
}

/// Starts twice on the damaged log: both starts fail with the segment and the offset, and the
/// same way, so the first changed nothing.
async fn assert_start_refused(data: &Path, segment: &Path, offset: usize) {
    let mut errors = Vec::new();
    for _ in 0..2 {
        let error = start(data)
            .await
            .err()
            .expect("the server started on a damaged log");
        for part in [
            format!("damaged at byte {offset} of {}", segment.display()),
            format!("truncate -s {offset} {}", segment.display()),
        ] {
            assert!(error.contains(&part), "{part:?} missing from: {error}");
        }
        errors.push(error);
    }
    assert_eq!(errors[0], errors[1]);
}

/// A server's data folder, alice's room in it, and every message she was told was stored.
struct Desk {
    _dir: tempfile::TempDir,
    data: PathBuf,
    token: String,
    room: String,
    sent: Vec<String>,
}

impl Desk {
    async fn open() -> (Desk, RunningServer) {
        let server = TestServer::start().await;
        let alice = server.user("alice").await;
        let room = alice.create_room(json!({ "name": "log" })).await;
        let TestServer { server, dir, .. } = server;
        let desk = Desk {
            data: dir.path().join("data"),
            _dir: dir,
            token: alice.token.unwrap(),
            room,
            sent: Vec::new(),
        };
        (desk, server)
    }

    fn alice(&self, server: &RunningServer) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: server.base_url(),
            token: Some(self.token.clone()),
        }
    }

    /// Sends ten messages, each acknowledged with a 200, stops the server and returns the
    /// log's one segment.
    async fn send_and_stop(&mut self, server: RunningServer, label: &str) -> PathBuf {
        let alice = self.alice(&server);
        for i in 0..10 {
            let body = format!("{label} message {i}");
            alice
                .send_text(&self.room, &format!("{label}-{i}"), &body)
                .await;
            self.sent.push(body);
        }
        stop(server, &self.data).await;
        match &segments(&self.data)[..] {
            [segment] => segment.clone(),
            more => panic!("one segment after a stop: {more:?}"),
        }
    }

    async fn start(&self) -> Result<RunningServer, String> {
        start(&self.data).await
    }

    /// Every acknowledged message is readable, in order.
    async fn assert_every_message(&self, server: &RunningServer) {
        assert_eq!(bodies(&self.alice(server), &self.room).await, self.sent);
    }
}

/// Several segments are on disk when a crash comes between a checkpoint's flush and its deleting
/// the segments it covers (or when deleting fails). Every start replays the log and checkpoints
/// it away, so the test builds that state from three lives of the server, putting back the
/// segment each stop left. Damage in the middle one used to lose the rest of it while the last
/// segment replayed on top.
#[tokio::test]
async fn a_damaged_middle_segment_stops_the_start_with_its_name_and_offset() {
    let (mut desk, server) = Desk::open().await;
    let mut running = Some(server);
    let mut left_by_stops = Vec::new();
    for life in 0..3 {
        let server = match running.take() {
            Some(server) => server,
            None => desk.start().await.expect("starts"),
        };
        let segment = desk.send_and_stop(server, &format!("life {life}")).await;
        left_by_stops.push((segment.clone(), std::fs::read(&segment).unwrap()));
    }
    for (segment, bytes) in &left_by_stops {
        std::fs::write(segment, bytes).unwrap();
    }
    let all = segments(&desk.data);
    assert_eq!(all.len(), 3, "{all:?}");

    let (offset, at) = damage_a_middle_record(&all[1]);
    assert_start_refused(&desk.data, &all[1], offset).await;

    flip_back(&all[1], at);
    let server = desk.start().await.expect("starts once repaired");
    desk.assert_every_message(&server).await;
    server.stop().await;
}

/// The last segment: the tail a crash cut short (part of a record, followed by zero-filled
/// space or the end of the file) is dropped and the server starts with every acknowledged
/// message; a record damaged in the middle, with records after it, stops the start.
#[tokio::test]
async fn only_a_torn_tail_of_the_last_segment_is_dropped() {
    let (mut desk, mut server) = Desk::open().await;
    for file_ends_there in [false, true] {
        let segment = desk
            .send_and_stop(server, &format!("torn {file_ends_there}"))
            .await;
        // The next append, cut short: half of a record like the last one, which no client was
        // told about.
        let bytes = std::fs::read(&segment).unwrap();
        let last = records(&bytes).pop().unwrap();
        let torn = &bytes[last.start..last.start + last.len() / 2];
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, torn, last.end as u64).unwrap();
        if file_ends_there {
            file.set_len((last.end + torn.len()) as u64).unwrap();
        }
        server = desk
            .start()
            .await
            .unwrap_or_else(|e| panic!("a torn tail stopped the start: {e}"));
        desk.assert_every_message(&server).await;
    }

    let segment = desk.send_and_stop(server, "damaged").await;
    let (offset, at) = damage_a_middle_record(&segment);
    assert_start_refused(&desk.data, &segment, offset).await;

    flip_back(&segment, at);
    let server = desk.start().await.expect("starts once repaired");
    desk.assert_every_message(&server).await;
    server.stop().await;
}
