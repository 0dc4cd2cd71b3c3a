//! Writing an archive to disk steadily instead of in one burst.
//!
//! A file written through the page cache stays dirty until the kernel's flusher gets to it (by
//! default 30 s later, or once dirty memory passes a tenth of RAM), and then goes to the disk in
//! a burst; the final `fsync` writes whatever is left, also at once. An archive of a gigabyte
//! written on the disk of the server it backs up thus holds up the server's group commits, each
//! of which waits behind that burst. Measured with `charla bench --scenario backup` (1,000,000
//! messages, 64 clients sending during the backup, the archive on the server's disk): sends at
//! 60–70 % of their unloaded rate with the archive written through the page cache, 80 % with
//! its writeback paced as here, 85–91 % with no file written at all.
//!
//! So, as RocksDB's `bytes_per_sync` and PostgreSQL's `backend_flush_after` do, the writeback of
//! every [`WINDOW`] written is started at once (`sync_file_range`), and the window before it is
//! waited for: at most two windows are on their way to the disk at any time, the page cache
//! holds no backlog, and the final sync has little left. This is no durability promise: the
//! caller still syncs the file at the end. Elsewhere than on Linux the writes are plain.

use std::{
    fs::File,
    io::{self, Write},
};

use bytes::Bytes;

/// Bytes between two starts of writeback.
const WINDOW: u64 = 8 << 20;

/// Bytes gathered before they go to the file in one blocking write.
const BATCH: usize = 1 << 20;

/// A file being written from its start, chunk by chunk: the chunks are gathered into writes of
/// [`BATCH`] bytes, each made on tokio's blocking threads (waiting for a window's writeback
/// blocks), so a caller on the runtime never blocks and a stream of small chunks costs few
/// thread hops.
pub(crate) struct ArchiveFile {
    /// `None` once a write failed: a failed write may have written part of its batch.
    file: Option<Paced>,
    pending: Vec<u8>,
}

impl ArchiveFile {
    /// Writes into `file` (a handle of its own is kept), which must be empty.
    pub(crate) fn new(file: &File) -> io::Result<Self> {
        let paced = Paced {
            file: file.try_clone()?,
            written: 0,
            started: 0,
            waited: 0,
        };
        Ok(ArchiveFile {
            file: Some(paced),
            pending: Vec::with_capacity(BATCH),
        })
    }

    /// Appends `chunk`.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.pending.extend_from_slice(&chunk);
        if self.pending.len() >= BATCH {
            self.write_pending().await?;
        }
        Ok(())
    }

    /// Writes what is gathered. The file is not synced: the caller does that.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.write_pending().await
    }

    async fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("an earlier write to the archive failed"))?;
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        let (file, result) = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&batch);
            (file, result)
        })
        .await
        .map_err(io::Error::other)?;
        if result.is_ok() {
            self.file = Some(file);
        }
        result
    }
}

/// The file, with how far it was written, how far its writeback was started and how far it was
/// waited for.
struct Paced {
    file: File,
    written: u64,
    started: u64,
    waited: u64,
}

impl Write for Paced {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.file.write(data)?;
        self.written += n as u64;
        if self.written - self.started >= WINDOW {
            self.pace()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Paced {
    /// Starts the writeback of what was written since the last start, and waits for the window
    /// before it.
    #[cfg(target_os = "linux")]
    fn pace(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let range = |from: u64, to: u64| {
            let offset = libc::off64_t::try_from(from).map_err(io::Error::other)?;
            let len = libc::off64_t::try_from(to - from).map_err(io::Error::other)?;
            Ok::<_, io::Error>((offset, len))
        };
        let (offset, len) = range(self.started, self.written)?;
        // SAFETY: a plain syscall on a descriptor this struct owns.
        if unsafe { libc::sync_file_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if self.started > self.waited {
            let (offset, len) = range(self.waited, self.started)?;
            let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: as above.
            if unsafe { libc::sync_file_range(fd, offset, len, wait) } != 0 {
                return Err(io::Error::last_os_error());
            }
            self.waited = self.started;
        }
        self.started = self.written;
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn pace(&mut self) -> io::Result<()> {
        self.started = self.written;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte arrives, in order, across many windows and chunk sizes that straddle them.
    #[tokio::test]
    async fn writes_every_byte_in_order_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive");
        let file = File::create(&path).unwrap();
        let mut out = ArchiveFile::new(&file).unwrap();
        let mut expected = Vec::new();
        let mut n = 0u32;
        while (expected.len() as u64) < 4 * WINDOW + 12_345 {
            // Chunks of 1 to ~700 KiB, each byte from a counter.
            let len = 1 + (n as usize * 7_919) % 700_000;
            let chunk: Vec<u8> = (0..len).map(|i| (i as u32 ^ n) as u8).collect();
            expected.extend_from_slice(&chunk);
            out.write(Bytes::from(chunk)).await.unwrap();
            n += 1;
        }
        out.flush().await.unwrap();
        let paced = out.file.as_ref().unwrap();
        assert_eq!(paced.written, expected.len() as u64);
        if cfg!(target_os = "linux") {
            // Writeback was started for all but the last window, and waited for before that.
            assert!(paced.written - paced.started < WINDOW);
            assert!(paced.waited >= WINDOW && paced.waited < paced.started);
        }
        file.sync_all().unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written.len(), expected.len());
        assert!(
            written == expected,
            "the file differs from what was written"
        );
    }
}
