//! A Matrix ↔ WhatsApp bridge for customer support, on the `charla-appservice` toolkit and the
//! WhatsApp Business Cloud API.
//!
//! Customers write to the business number; each becomes a puppet (`@whatsapp_<wa_id>`) with a
//! portal room carrying `io.charla.conversation`; what agents write there goes back to the
//! customer. The bridge talks to the homeserver only through the Application Service API, so
//! it runs inside `charla serve` or on its own host alike.
//!
//! - [`webhook`]: verification handshake, signed POSTs into the durable inbox.
//! - [`inbox`] → [`lane`] → [`inbound`] / [`portal`] / [`statuses`]: webhooks into Matrix
//!   events; [`failure`], [`backlog`]: what a refusal holds back, and for how long;
//!   [`portal_setup`]: one portal per customer across crashes.
//! - [`matrix`]: the appservice handler, agent actions into the durable [`outbox`].
//! - [`outbox`] / [`outbox_worker`] → [`graph`]: sends to the Cloud API, in order per customer,
//!   paced ([`pacing`]), retrying.
//! - [`sim`]: a Cloud API simulator for tests, benchmarks and demos.
//!
//! # What survives a crash, and what can happen twice
//!
//! Every step whose result a later step, the homeserver or WhatsApp acts on is on disk first
//! (the bridge's store is one write-ahead log, so a write on disk means every earlier one is
//! too; see [`store`]). After `kill -9` at any point:
//!
//! - **Customers' messages: exactly once in Matrix.** A webhook is answered 200 only once its
//!   body is on disk; it leaves the inbox only after its messages are events (or held, or set
//!   aside, in the same write). A replay posts the same events again with txnIds derived from
//!   the wamid, which the homeserver answers with the events it already has. A portal is
//!   created once: the intent is on disk before `createRoom`, and a replay finds the room (even
//!   one the homeserver only half created) instead of creating another ([`portal_setup`]).
//!   Nothing acknowledged is dropped on a refusal an operator can fix ([`failure`]); what the
//!   homeserver can never take is kept in the dead-letter table ([`backlog`]).
//! - **Agents' messages: at least once to WhatsApp.** A job is on disk before the appservice
//!   transaction is acknowledged, and leaves the outbox only in the write that records
//!   WhatsApp's answer (the wamid link its statuses need, or the refusal). The Cloud API has
//!   no idempotency key, so a crash after WhatsApp received a send and before that write is on
//!   disk sends it again at the next start, with a new wamid: the window is the Cloud API's
//!   answer time plus one `fdatasync` of the bridge's log, for the one job per customer that
//!   is in flight (at most `send_concurrency` messages per crash). Read marks and reactions
//!   behave the same (sending them twice changes nothing for the customer).
//! - **Delivery states: every one shown.** Statuses apply once their message's link exists,
//!   which is on disk with the job's removal; statuses that come earlier are kept and applied
//!   then. What a send leaves to show in Matrix (early statuses, a refusal's notice) is
//!   recorded with the removal and shown again after a crash; every event it sends has a
//!   fixed txnId, so showing twice changes nothing. Only the acceptance notice
//!   (`com.beeper.message_send_status` `SUCCESS` when WhatsApp's `sent` is late) is best
//!   effort: `sent` says the same and more.
//!
//! One window stays open: a customer's message event can be in its room a moment before the
//! bridge's link from its wamid is on disk. An agent who reacts to it in that moment, and a
//! crash right after, lose the reaction (and a reply its quote) if the agent's transaction
//! comes back before the webhook's replay has linked the message again.

pub mod backlog;
pub mod bridge;
mod cloud;
pub mod config;
mod failure;
mod graph;
mod inbound;
mod inbox;
mod lane;
mod matrix;
mod notices;
mod outbox;
mod outbox_worker;
mod pacing;
mod portal;
mod portal_setup;
pub mod registration;
pub mod signature;
pub mod sim;
mod statuses;
pub mod store;
mod webhook;

pub use bridge::{Bridge, BridgeHandle, BridgeService};
pub use config::BridgeConfig;

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
