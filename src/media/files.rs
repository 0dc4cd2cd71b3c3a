//! Content-addressed files: `<root>/<aa>/<bb>/<sha256>`, written through `<root>/tmp`.
//!
//! A file is named by the sha256 of its bytes, so the same bytes uploaded twice share one file
//! and a name never points at changed content. Bytes are hashed while they are written to a
//! temporary file; the file is fsynced and renamed into place (and its folder fsynced) before
//! the caller is told it is stored, so an acknowledged upload survives a crash. Work runs on a
//! blocking thread fed through a bounded channel: the upload is never held in memory whole.

use std::{
    fs::File,
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use bytes::Bytes;
use rand::{Rng, distributions::Alphanumeric};
use sha2::{Digest, Sha256};
use tokio::{sync::mpsc, task::JoinHandle};

/// Chunks in flight between the request and the writer thread.
const CHANNEL_DEPTH: usize = 16;
/// The writer's buffer: few, large writes instead of one per network chunk.
const WRITE_BUFFER: usize = 1 << 20;

/// The folder of the media files.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

/// Bytes read per chunk when a file is streamed out.
const READ_CHUNK: u64 = 1 << 20;
/// Chunks read ahead of the connection.
const READ_AHEAD: usize = 4;

/// A file's bytes as a stream of chunks, read ahead by one blocking thread per download (not
/// one hand-off per chunk). The reader stops when the stream is dropped.
pub fn read_stream(file: File) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        loop {
            let mut buf = Vec::with_capacity(READ_CHUNK as usize);
            let chunk = match (&mut file).take(READ_CHUNK).read_to_end(&mut buf) {
                Ok(0) => return,
                Ok(_) => Ok(Bytes::from(buf)),
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}

/// A file stored under its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
}

enum Msg {
    Chunk(Bytes),
    Finish,
}

/// An upload being written: feed it chunks, then [`Writer::finish`] or [`Writer::abort`].
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    task: JoinHandle<std::io::Result<Option<Stored>>>,
}

impl FileStore {
    /// Opens the folder, creating it, and removes temporary files a crash left behind.
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(FileStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the file with this hash lives.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root
            .join(&sha256[0..2])
            .join(&sha256[2..4])
            .join(sha256)
    }

    /// Starts writing an upload on a blocking thread.
    pub fn writer(&self) -> Writer {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let store = self.clone();
        let task = tokio::task::spawn_blocking(move || store.write_from(rx));
        Writer { tx, task }
    }

    /// Stores bytes already in memory (thumbnails).
    pub async fn store_bytes(&self, bytes: Bytes) -> std::io::Result<Stored> {
        let mut w = self.writer();
        w.push(bytes).await?;
        w.finish().await
    }

    /// The writer thread: hash and write every chunk; on `Finish`, make the file durable and
    /// move it into place. Without `Finish` (the request failed) the temporary file is removed.
    fn write_from(&self, mut rx: mpsc::Receiver<Msg>) -> std::io::Result<Option<Stored>> {
        let tmp_path = self.root.join("tmp").join(random_name());
        let file = File::create(&tmp_path)?;
        let result = (|| {
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                match rx.blocking_recv() {
                    Some(Msg::Chunk(chunk)) => {
                        hasher.update(&chunk);
                        out.write_all(&chunk)?;
                        size += chunk.len() as u64;
                    }
                    Some(Msg::Finish) => break,
                    None => return Ok(None),
                }
            }
            let sha256 = hex::encode(hasher.finalize());
            let target = self.path(&sha256);
            let folder = target.parent().expect("sharded path has a parent");
            if target.exists() {
                // Same bytes stored before: share that file. Its writer may still be about to
                // sync the folder, so sync it here too (cheap) before saying it is durable.
                File::open(folder)?.sync_all()?;
                return Ok(Some(Stored { sha256, size }));
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            std::fs::create_dir_all(folder)?;
            std::fs::rename(&tmp_path, &target)?;
            // The rename is durable only once the folder holding the new name is.
            File::open(folder)?.sync_all()?;
            Ok(Some(Stored { sha256, size }))
        })();
        // Gone already when it was renamed into place; otherwise it is a leftover.
        let _ = std::fs::remove_file(&tmp_path);
        result
    }
}

impl Writer {
    /// Hands a chunk to the writer thread (waits while it is behind).
    pub async fn push(&mut self, chunk: Bytes) -> std::io::Result<()> {
        if self.tx.send(Msg::Chunk(chunk)).await.is_err() {
            // The thread stopped early: its result says why.
            return Err(self.stopped().await);
        }
        Ok(())
    }

    /// Completes the upload: durable and in place when this returns.
    pub async fn finish(self) -> std::io::Result<Stored> {
        let _ = self.tx.send(Msg::Finish).await;
        drop(self.tx);
        match self.task.await.map_err(std::io::Error::other)?? {
            Some(stored) => Ok(stored),
            None => Err(std::io::Error::other(
                "media writer stopped before finishing",
            )),
        }
    }

    /// Drops the upload and waits until its temporary file is gone.
    pub async fn abort(self) {
        drop(self.tx);
        let _ = self.task.await;
    }

    async fn stopped(&mut self) -> std::io::Error {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => std::io::Error::other("media writer stopped early"),
            Err(e) => std::io::Error::other(e),
        }
    }
}

fn random_name() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_bytes_share_one_file_and_no_temp_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::open(dir.path().to_owned()).unwrap();
        let a = files
            .store_bytes(Bytes::from_static(b"hello"))
            .await
            .unwrap();
        let b = files
            .store_bytes(Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(std::fs::read(files.path(&a.sha256)).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn aborted_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::open(dir.path().to_owned()).unwrap();
        let mut w = files.writer();
        w.push(Bytes::from_static(b"partial")).await.unwrap();
        w.abort().await;
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "only tmp/ remains");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
