//! Attack tests: visibility.
