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
    io::{self, BufWriter, Write},
};

use bytes::Bytes;

/// Bytes between two starts of writeback.
const WINDOW: u64 = 8 << 20;

/// A file being written from its start, chunk by chunk, on tokio's blocking threads (waiting for
/// a window's writeback blocks).
pub(crate) struct ArchiveFile {
    out: Option<BufWriter<Paced>>,
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
            out: Some(BufWriter::with_capacity(1 << 20, paced)),
        })
    }

    /// Appends `chunk`.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.blocking(move |out| out.write_all(&chunk)).await
    }

    /// Writes what is buffered. The file is not synced: the caller does that.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.blocking(|out| out.flush()).await
    }

    async fn blocking(
        &mut self,
        work: impl FnOnce(&mut BufWriter<Paced>) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("an earlier write to the archive failed"))?;
        let (out, result) = tokio::task::spawn_blocking(move || {
            let result = work(&mut out);
            (out, result)
        })
        .await
        .map_err(io::Error::other)?;
        // Kept only while every write succeeded: a failed one may have written part of a chunk.
        if result.is_ok() {
            self.out = Some(out);
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
        let paced = out.out.as_ref().unwrap().get_ref();
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
