//! Attack tests: wal.
