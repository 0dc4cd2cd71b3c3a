//! Delivery states of agents' messages on the customer's channel, for the support API.
//!
//! A bridge running in this process (the WhatsApp or the email bridge) keeps, per message it sent, the state
//! its network reported: `queued`, `sent`, `delivered`, `read` or `failed` with the network's
//! reason. Rooms show the same through receipts and `com.beeper.message_send_status` events;
//! the support API shows the stored state next to each message of a conversation's history,
//! with what only the bridge knows (the network's message id, its error code). The bridge still
//! talks to the homeserver only through the Application Service API: this is a read of its
//! store, attached once it has started.

use std::sync::{Arc, Weak};

use parking_lot::RwLock;

use ruma::RoomId;
use serde_json::{Map, Value};

/// What a bridge's store says about one message.
pub(crate) trait DeliveryStates: Send + Sync {
    /// The state of `event_id` if this bridge sent it from `room_id`, as the support API shows
    /// it (`{"channel", "status", "updated_ts", …}`).
    fn delivery(&self, room_id: &RoomId, event_id: &str) -> Option<Value>;
}

/// The delivery states of the bridges in this process (one per channel: WhatsApp, email).
/// Held weakly: a bridge's lifetime (and its store's) stays its handle's, also when the server
/// stops.
#[derive(Default)]
pub(crate) struct Deliveries(RwLock<Vec<Weak<dyn DeliveryStates>>>);

impl Deliveries {
    /// Attaches a bridge's states.
    pub(crate) fn attach(&self, states: &Arc<dyn DeliveryStates>) {
        self.0.write().push(Arc::downgrade(states));
    }

    /// `{event_id: state}` for those of `events` (all in `room_id`) that a bridge sent.
    pub(crate) fn of<'a>(
        &self,
        room_id: &RoomId,
        events: impl IntoIterator<Item = &'a str>,
    ) -> Map<String, Value> {
        let bridges: Vec<Arc<dyn DeliveryStates>> =
            self.0.read().iter().filter_map(Weak::upgrade).collect();
        if bridges.is_empty() {
            return Map::new();
        }
        events
            .into_iter()
            .filter_map(|event| {
                let state = bridges.iter().find_map(|b| b.delivery(room_id, event))?;
                Some((event.to_owned(), state))
            })
            .collect()
    }
}
