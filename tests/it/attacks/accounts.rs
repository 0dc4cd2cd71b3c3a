//! Attack tests: accounts.
