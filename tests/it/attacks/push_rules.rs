//! Attack tests: push_rules.
