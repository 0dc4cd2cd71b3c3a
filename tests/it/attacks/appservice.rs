//! Attack tests: appservice.
