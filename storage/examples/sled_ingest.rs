//! How fast sled alone takes a backup's image: the floor under `charla admin restore`.
//!
//! Reads the homeserver store's image chunks (`stores/charla/image/*`) of an archive into
//! memory, then inserts every entry into a fresh sled configured as a restore configures it
//! (`StoreRestore`), on one thread or on two taking alternate chunks, and prints the time. No
//! archive reading, checksum or log replay is in the figure: it is what a restore cannot beat
//! while it writes through sled's insert path (see `docs/performance.md`, issue #20).
//!
//! ```sh
//! cargo run --release -p charla-storage --example sled_ingest -- ARCHIVE.tar [THREADS]
//! ```

use std::{io::Read, time::Instant};

/// The allocator of the `charla` binary, which runs restores: sled takes twice as long on
/// glibc's malloc.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let archive = args
        .next()
        .ok_or("usage: sled_ingest ARCHIVE.tar [THREADS]")?;
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let mut chunks = Vec::new();
    for entry in tar::Archive::new(std::fs::File::open(&archive)?).entries()? {
        let mut entry = entry?;
        if entry.path()?.starts_with("stores/charla/image") {
            let mut chunk = Vec::new();
            entry.read_to_end(&mut chunk)?;
            chunks.push(chunk);
        }
    }
    let entries: Vec<Vec<(&[u8], &[u8])>> = chunks.iter().map(|c| parse(c)).collect();
    let keys: usize = entries.iter().map(Vec::len).sum();
    let bytes: usize = chunks.iter().map(Vec::len).sum();
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(256 << 20)
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads.max(1) {
            let (db, entries) = (&db, &entries);
            scope.spawn(move || {
                for chunk in entries.iter().skip(t).step_by(threads.max(1)) {
                    for (key, value) in chunk {
                        db.insert(*key, *value).expect("insert");
                    }
                }
            });
        }
    });
    let inserted = started.elapsed();
    db.flush()?;
    let total = started.elapsed().as_secs_f64();
    println!(
        "{keys} keys, {:.0} MB of image, {threads} thread(s): inserted in {:.1} s, flushed at \
         {total:.1} s: {:.0} keys/s, {:.0} MB/s of image",
        bytes as f64 / 1e6,
        inserted.as_secs_f64(),
        keys as f64 / total,
        bytes as f64 / 1e6 / total,
    );
    Ok(())
}

/// The entries of an image chunk: `key length (u32 LE), key, value length (u32 LE), value`.
fn parse(mut chunk: &[u8]) -> Vec<(&[u8], &[u8])> {
    fn take<'a>(chunk: &mut &'a [u8]) -> &'a [u8] {
        let (len, rest) = chunk.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (bytes, rest) = rest.split_at(len);
        *chunk = rest;
        bytes
    }
    let mut entries = Vec::new();
    while !chunk.is_empty() {
        let key = take(&mut chunk);
        let value = take(&mut chunk);
        entries.push((key, value));
    }
    entries
}
