//! Attack tests: pagination.
