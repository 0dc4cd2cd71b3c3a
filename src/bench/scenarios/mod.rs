//! One module per scenario. Each exposes
//! `async fn run(&Ctx, &BenchArgs) -> Result<Report, BoxError>`: an `Err`
//! means setup failed and nothing was measured; measurement-time failures
//! (HTTP errors, wrong counts) are reported inside the [`Report`] instead.
//!
//! [`Report`]: super::report::Report

pub mod appservice;
pub mod backup;
pub mod email;
pub mod federation;
pub mod initial_sync;
pub mod keys;
pub mod media;
pub mod messages;
pub mod relations;
pub mod search;
pub mod send;
pub mod support;
pub mod sync_latency;
pub mod webchat;
pub mod whatsapp;
