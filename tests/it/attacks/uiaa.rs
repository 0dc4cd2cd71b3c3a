//! Attack tests: uiaa.
