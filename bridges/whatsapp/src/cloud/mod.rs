//! The wire format of the WhatsApp Business Cloud API, as Meta documents it: webhook envelopes
//! (inbound messages, statuses, errors), the bodies of `POST /{phone_number_id}/messages`, and
//! Graph error bodies. Used both by the bridge and by the simulator, so the two cannot drift.

pub mod error;
pub mod send;
pub mod webhook;

pub use error::{CloudError, GraphError, GraphErrorBody};
pub use webhook::{Customer, Envelope, InboundMessage, Status};
