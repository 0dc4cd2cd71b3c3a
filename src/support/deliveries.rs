//! Delivery states of agents' messages on the customer's channel, for the support API.
//!
//! A bridge running in this process (the WhatsApp bridge) keeps, per message it sent, the state
//! its network reported: `queued`, `sent`, `delivered`, `read` or `failed` with the network's
//! reason. Rooms show the same through receipts and `com.beeper.message_send_status` events;
//! the support API shows the stored state next to each message of a conversation's history,
//! with what only the bridge knows (the network's message id, its error code). The bridge still
//! talks to the homeserver only through the Application Service API: this is a read of its
//! store, attached once it has started.

use std::sync::{Arc, OnceLock, Weak};

use ruma::RoomId;
use serde_json::{Map, Value};

/// What a bridge's store says about one message.
pub(crate) trait DeliveryStates: Send + Sync {
    /// The state of `event_id` if this bridge sent it from `room_id`, as the support API shows
    /// it (`{"channel", "status", "updated_ts", …}`).
    fn delivery(&self, room_id: &RoomId, event_id: &str) -> Option<Value>;
}

/// The delivery states of the bridge in this process, if one runs. Held weakly: the bridge's
/// lifetime (and its store's) stays its handle's, also when the server stops.
#[derive(Default)]
pub(crate) struct Deliveries(OnceLock<Weak<dyn DeliveryStates>>);

impl Deliveries {
    /// Attaches the bridge's states; a server runs at most one bridge per channel.
    pub(crate) fn attach(&self, states: &Arc<dyn DeliveryStates>) {
        let _ = self.0.set(Arc::downgrade(states));
    }

    /// `{event_id: state}` for those of `events` (all in `room_id`) that a bridge sent.
    pub(crate) fn of<'a>(
        &self,
        room_id: &RoomId,
        events: impl IntoIterator<Item = &'a str>,
    ) -> Map<String, Value> {
        let Some(states) = self.0.get().and_then(Weak::upgrade) else {
            return Map::new();
        };
        events
            .into_iter()
            .filter_map(|event| Some((event.to_owned(), states.delivery(room_id, event)?)))
            .collect()
    }
}
