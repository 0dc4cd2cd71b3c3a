//! Attack tests: shared_secret.
