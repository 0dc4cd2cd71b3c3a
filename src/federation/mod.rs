//! The Server-Server API (Matrix spec v1.16, "Server-Server API"): how other homeservers reach
//! this one and how this one proves who it is.
//!
//! Built so far: the server's published keys (`keys.rs`), served with the version endpoint on
//! the federation listener (`[federation] listen`, TLS with rustls: `server/tls.rs`), and the
//! `/.well-known/matrix/server` delegation on the client listener. Joining, transactions and
//! the rest of issue #23 come next, on this listener.

pub(crate) mod keys;
