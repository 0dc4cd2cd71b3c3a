//! A Matrix ↔ WhatsApp bridge for customer support, on the `charla-appservice` toolkit and the
//! WhatsApp Business Cloud API.
//!
//! Customers write to the business number; each becomes a puppet (`@whatsapp_<wa_id>`) with a
//! portal room carrying `io.charla.conversation`; what agents write there goes back to the
//! customer. The bridge talks to the homeserver only through the Application Service API, so
//! it runs inside `charla serve` or on its own host alike.
//!
//! - [`webhook`]: verification handshake, signed POSTs into the durable inbox.
//! - [`inbox`] → [`inbound`] / [`portal`] / [`statuses`]: webhooks into Matrix events.
//! - [`matrix`]: the appservice handler, agent actions into the durable [`outbox`].
//! - [`outbox`] / [`outbox_worker`] → [`graph`]: sends to the Cloud API, in order per customer,
//!   paced ([`pacing`]), retrying.
//! - [`sim`]: a Cloud API simulator for tests, benchmarks and demos.

pub mod bridge;
pub mod cloud;
pub mod config;
pub mod graph;
pub mod inbound;
pub mod inbox;
pub mod matrix;
pub mod notices;
pub mod outbox;
pub mod outbox_worker;
pub mod pacing;
pub mod portal;
pub mod registration;
pub mod signature;
pub mod sim;
pub mod statuses;
pub mod store;
pub mod webhook;

pub use bridge::{Bridge, BridgeHandle, BridgeService};
pub use config::BridgeConfig;

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
