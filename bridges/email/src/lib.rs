//! A Matrix ↔ email bridge for customer support, on the `charla-appservice` toolkit.
//!
//! Customers write to the desk's address; each email thread becomes a conversation room
//! (channel `email`) with the customer as a puppet (`@email_<hash>`); what agents write there
//! goes back by mail, threaded. The bridge talks to the homeserver only through the
//! Application Service API, so it runs inside `charla serve` or on its own alike.
//!
//! - [`smtp`]: the inbound SMTP listener; `intake`: what it asks of the bridge (addresses,
//!   the per-sender [`limit`], the durable inbox).
//! - `inbox` → [`mail`] / [`portal`] / [`auth`]: mails into Matrix events: parsed, placed in
//!   their thread's conversation, checked (SPF, DKIM, DMARC); bounces into delivery states.
//! - `matrix`: the appservice handler, agents' messages into the durable outbox.
//! - `outbox` → [`compose`] → [`relay`]: answers built as MIME and handed to the relay, in
//!   order per conversation, retried.
//!
//! # What survives a crash, and what can happen twice
//!
//! - **Customers' mails: exactly once in Matrix.** The listener answers `250` only once the
//!   mail is on disk; it leaves the inbox in the write that records its events. A replay
//!   posts with the same transaction ids (the homeserver answers with the events it has), and
//!   a conversation's room is found again by its alias instead of being created twice.
//! - **Agents' answers: at least once to the relay.** A job is on disk before the appservice
//!   transaction is acknowledged and leaves the outbox with the relay's answer; a crash
//!   between the two sends it again, with the same Message-ID (mail clients show one).

pub mod auth;
pub mod bridge;
pub mod compose;
pub mod config;
mod inbox;
mod intake;
pub mod limit;
pub mod mail;
mod matrix;
mod outbox;
pub mod portal;
pub mod registration;
pub mod relay;
pub mod smtp;
pub mod store;

pub use bridge::{Bridge, BridgeHandle, BridgeService};
pub use config::EmailConfig;

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
