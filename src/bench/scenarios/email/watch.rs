//! What the server's event stream shows: when each customer message became an event.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::events::TimelineEventType;
use serde_json::Value;

use crate::server::RunningServer;

/// A customer's message as first seen in the server's event stream.
#[derive(Clone)]
pub(super) struct Seen {
    pub(super) at: Instant,
    pub(super) room: String,
    /// Times a message with this body was seen (1 unless doubled).
    pub(super) count: usize,
    pub(super) url: Option<String>,
}

/// Reads the server's event stream as a consumer would: when each of the customers' (the
/// bridge's puppets') messages became an event, by body.
pub(super) struct Watcher {
    pub(super) seen: Arc<Mutex<HashMap<String, Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    pub(super) fn start(server: &RunningServer) -> Watcher {
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let services = server.services.clone();
        let (seen_w, stop_w) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut heads = services.stream.watch();
            let mut after = 0;
            while !stop_w.load(Ordering::Relaxed) {
                let head = services.stream.head();
                let Ok(events) = services.rooms.events_in_range(after, head, 4096) else {
                    return;
                };
                let now = Instant::now();
                for (pos, event) in &events {
                    after = *pos;
                    let pdu = &event.pdu;
                    if pdu.kind != TimelineEventType::RoomMessage
                        || !pdu.sender.localpart().starts_with("email_")
                    {
                        continue;
                    }
                    let Ok(content) = pdu.content_as::<Value>() else {
                        continue;
                    };
                    let Some(body) = content["body"].as_str() else {
                        continue;
                    };
                    seen_w
                        .lock()
                        .entry(body.to_owned())
                        .and_modify(|s| s.count += 1)
                        .or_insert_with(|| Seen {
                            at: now,
                            room: pdu.room_id.to_string(),
                            count: 1,
                            url: content["url"].as_str().map(str::to_owned),
                        });
                }
                if events.is_empty() {
                    after = after.max(head);
                    let _ = tokio::time::timeout(Duration::from_millis(50), heads.changed()).await;
                }
            }
        });
        Watcher { seen, stop }
    }

    pub(super) fn get(&self, body: &str) -> Option<Seen> {
        self.seen.lock().get(body).cloned()
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
