//! The toolkit's integration tests: its router, transactions and intent client against a fake
//! homeserver over real HTTP. One binary, so the crate links once instead of once per file.

mod common;

mod echo_bot;
mod intent;
mod registration;
mod router;
mod thirdparty;
mod transactions;
