//! Attack tests: durability.
