//! Charla's integration tests, end to end over real HTTP against an in-process server.
//!
//! One test binary on purpose: every integration test file used to be its own crate, and each
//! linked the whole server (and matrix-sdk) again, which made a clean `cargo test` spend most of
//! its time linking and write ~8 GB of binaries. Each file below is one API area.

mod common;

mod accounts;
mod admin;
mod appservice_api;
mod appservice_echo;
mod architecture;
mod attacks;
mod backup;
mod durability;
mod e2ee;
mod e2ee_backup;
mod email;
mod ephemeral;
mod errors;
mod federation;
mod media;
mod metrics;
mod push_gateway;
mod relations;
mod rooms;
mod sdk;
mod sdk_e2ee;
mod search;
mod shutdown;
mod support;
mod thirdparty;
mod unread_threads;
mod url_preview;
mod webchat;
mod whatsapp_bridge;
