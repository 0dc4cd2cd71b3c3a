//! Attack tests: support.
