//! Content-addressed files: `<root>/<aa>/<bb>/<sha256>`, written through `<root>/tmp`.
//!
//! A file is named by the sha256 of its bytes, so the same bytes uploaded twice share one file
//! and a name never points at changed content. Bytes are hashed while they are written to a
//! temporary file; the file is fsynced and renamed into place (and its folder fsynced) before
//! the caller is told it is stored, so an acknowledged upload survives a crash.
//!
//! All file I/O is async (`tokio::fs`): an upload or a download that waits on a slow client holds
//! no thread, only a task. Each disk operation borrows a blocking thread for as long as the disk
//! takes, never for as long as the network does, so slow clients cannot exhaust the blocking
//! pool that argon2, thumbnails and previews share. Hashing runs on the async side, a chunk at
//! a time as it arrives; the upload is never held in memory whole.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use rand::{Rng, distributions::Alphanumeric};
use sha2::{Digest, Sha256};
use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncWriteExt, BufWriter},
};

/// The writer's buffer: few, large disk writes instead of one per network chunk.
const WRITE_BUFFER: usize = 1 << 20;
/// Bytes read per chunk when a file is streamed out: one disk read per chunk.
const READ_CHUNK: usize = 256 * 1024;

/// The folder of the media files.
#[derive(Debug, Clone)]
pub(crate) struct FileStore {
    root: PathBuf,
}

/// A file stored under its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub sha256: String,
    pub size: u64,
}

/// A file's bytes as a stream of chunks, read as the connection takes them: a client that does
/// not read holds an open file, not a thread.
pub(crate) fn read_stream(file: File) -> impl Stream<Item = std::io::Result<Bytes>> {
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        if file.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
        Ok(Some((buf.freeze(), file)))
    })
}

/// An upload being written: feed it chunks, then [`Writer::finish`] or [`Writer::abort`].
/// Dropped unfinished (the request went away), it removes its temporary file.
pub(crate) struct Writer {
    root: FileStore,
    tmp_path: PathBuf,
    /// `None` once finished or aborted.
    out: Option<BufWriter<File>>,
    hasher: Sha256,
    size: u64,
    /// The temporary file no longer exists under `tmp_path` (renamed into place or removed).
    gone: bool,
}

impl FileStore {
    /// Opens the folder, creating it, and removes temporary files a crash left behind.
    pub(crate) fn open(root: PathBuf) -> std::io::Result<Self> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(FileStore { root })
    }

    /// Where the file with this hash lives.
    pub(crate) fn path(&self, sha256: &str) -> PathBuf {
        self.root
            .join(&sha256[0..2])
            .join(&sha256[2..4])
            .join(sha256)
    }

    /// Opens the file with this hash for reading.
    pub(crate) async fn open_file(&self, sha256: &str) -> std::io::Result<File> {
        File::open(self.path(sha256)).await
    }

    /// Starts writing an upload into a new temporary file.
    pub(crate) async fn writer(&self) -> std::io::Result<Writer> {
        let tmp_path = self.root.join("tmp").join(random_name());
        let file = File::create(&tmp_path).await?;
        Ok(Writer {
            root: self.clone(),
            tmp_path,
            out: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            hasher: Sha256::new(),
            size: 0,
            gone: false,
        })
    }

    /// Stores bytes already in memory (thumbnails, fetched preview images).
    pub(crate) async fn store_bytes(&self, bytes: Bytes) -> std::io::Result<Stored> {
        let mut w = self.writer().await?;
        w.push(&bytes).await?;
        w.finish().await
    }
}

impl Writer {
    /// Hashes and writes a chunk (waits while the disk is behind).
    pub(crate) async fn push(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let out = self.out.as_mut().ok_or_else(finished)?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        out.write_all(chunk).await
    }

    /// Completes the upload: durable and in place when this returns. Bytes stored before share
    /// that file and this copy is removed.
    pub(crate) async fn finish(mut self) -> std::io::Result<Stored> {
        let mut out = self.out.take().ok_or_else(finished)?;
        out.flush().await?;
        let file = out.into_inner();
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let stored = Stored {
            sha256,
            size: self.size,
        };
        let target = self.root.path(&stored.sha256);
        let folder = target
            .parent()
            .expect("sharded path has a parent")
            .to_owned();
        if tokio::fs::try_exists(&target).await? {
            // Same bytes stored before: share that file. Its writer may still be about to sync
            // the folder, so sync it here too (cheap) before saying it is durable.
            drop(file);
            sync_folder(&folder).await?;
            self.remove_temporary().await;
            return Ok(stored);
        }
        file.sync_all().await?;
        drop(file);
        tokio::fs::create_dir_all(&folder).await?;
        tokio::fs::rename(&self.tmp_path, &target).await?;
        self.gone = true;
        // The rename is durable only once the folder holding the new name is.
        sync_folder(&folder).await?;
        Ok(stored)
    }

    /// Drops the upload and waits until its temporary file is gone.
    pub(crate) async fn abort(mut self) {
        self.out = None;
        self.remove_temporary().await;
    }

    async fn remove_temporary(&mut self) {
        if !self.gone {
            let _ = tokio::fs::remove_file(&self.tmp_path).await;
            self.gone = true;
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.gone {
            return;
        }
        // The request went away mid-upload. Drop cannot wait, so the file is removed in the
        // background; if the process dies first, `FileStore::open` clears it on the next start.
        let path = std::mem::take(&mut self.tmp_path);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = tokio::fs::remove_file(path).await;
                });
            }
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Makes the names in a folder durable.
async fn sync_folder(folder: &Path) -> std::io::Result<()> {
    File::open(folder).await?.sync_all().await
}

fn finished() -> std::io::Error {
    std::io::Error::other("media writer already finished")
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
    use futures_util::TryStreamExt;

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
        let mut w = files.writer().await.unwrap();
        w.push(b"partial").await.unwrap();
        w.abort().await;
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "only tmp/ remains");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn a_dropped_upload_removes_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::open(dir.path().to_owned()).unwrap();
        let mut w = files.writer().await.unwrap();
        w.push(b"partial").await.unwrap();
        drop(w);
        let tmp = dir.path().join("tmp");
        for _ in 0..500 {
            if std::fs::read_dir(&tmp).unwrap().count() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the temporary file of a dropped upload stayed");
    }

    #[tokio::test]
    async fn a_large_file_streams_back_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::open(dir.path().to_owned()).unwrap();
        let bytes: Vec<u8> = (0..3 * READ_CHUNK + 5).map(|i| (i % 251) as u8).collect();
        let mut w = files.writer().await.unwrap();
        for chunk in bytes.chunks(1000) {
            w.push(chunk).await.unwrap();
        }
        let stored = w.finish().await.unwrap();
        assert_eq!(stored.size, bytes.len() as u64);
        let file = files.open_file(&stored.sha256).await.unwrap();
        let chunks: Vec<Bytes> = read_stream(file).try_collect().await.unwrap();
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        assert_eq!(chunks.concat(), bytes);
    }
}
