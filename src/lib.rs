//! Charla: a compact Matrix homeserver for customer support.
//!
//! See `docs/architecture.md` for the bird's-eye view. In short: `api` parses HTTP requests into
//! ruma types and calls services (`users`, `rooms`, `sync`); services build and check events
//! (`events`) and store them through `storage`, with positions from `stream`.

pub mod api;
pub(crate) mod appservice;
pub mod bench;
pub(crate) mod bot;
pub mod bridges;
pub mod config;
pub mod e2ee;
pub mod ephemeral;
pub mod error;
pub mod events;
pub mod expiring;
pub mod media;
pub mod push;
pub mod ratelimit;
pub mod read_cache;
pub mod rooms;
pub mod server;
pub mod services;
pub mod ssrf;
pub mod storage;
pub(crate) mod stream;
pub mod support;
pub mod sync;
pub mod users;
