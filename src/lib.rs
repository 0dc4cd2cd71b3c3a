//! Charla: a compact Matrix homeserver for customer support.
//!
//! See `docs/architecture.md` for the bird's-eye view. In short: `api` parses HTTP requests into
//! ruma types and calls services (`users`, `rooms`, `sync`); services build and check events
//! (`events`) and store them through `storage`, with positions from `stream`.

pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod appservice;
pub(crate) mod backup;
pub mod bench;
pub(crate) mod bot;
pub mod bridges;
pub mod cli;
pub mod config;
pub mod e2ee;
pub(crate) mod ephemeral;
pub mod error;
pub(crate) mod events;
pub(crate) mod expiring;
pub(crate) mod federation;
pub(crate) mod media;
pub(crate) mod metrics;
pub(crate) mod push;
pub(crate) mod ratelimit;
pub(crate) mod read_cache;
pub(crate) mod rooms;
pub(crate) mod search;
pub(crate) mod secret_file;
pub mod server;
pub mod services;
pub(crate) mod ssrf;
pub mod storage;
pub mod stream;
pub(crate) mod support;
pub(crate) mod sync;
pub(crate) mod users;
pub(crate) mod webchat;
