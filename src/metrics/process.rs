//! The process's resident memory, read from `/proc/self/statm` at scrape time.
//!
//! prometheus-client has no process collector, and the one other crate that has one would
//! bring a second Prometheus client; the figure is one line of procfs.

/// Resident set size in bytes; `None` where procfs is missing (not Linux) or unreadable.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    // Fields: size resident shared text lib data dt, in pages.
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn resident_memory_is_read() {
        // A running test process holds at least its own binary's pages.
        let bytes = super::resident_bytes().unwrap();
        assert!(bytes > 1024 * 1024, "{bytes}");
    }
}
