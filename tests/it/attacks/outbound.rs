//! Attack tests: outbound.
