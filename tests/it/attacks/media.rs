//! Attack tests: media.
