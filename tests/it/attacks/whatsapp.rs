//! Attack tests: whatsapp.
