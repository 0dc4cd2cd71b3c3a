//! What `/metrics` reads of a running server: the gauges' [`Source`], built by the server over
//! the services and the bridge it runs, so that `metrics` itself names no service.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    metrics::{EmailQueues, Snapshot, Source, WhatsappQueues},
    services::Services,
};

pub(super) struct Observed {
    pub(super) services: Arc<Services>,
    pub(super) whatsapp: Option<Arc<whatsapp::Bridge>>,
    pub(super) email: Option<Arc<email::Bridge>>,
}

impl Source for Observed {
    fn snapshot(&self) -> Snapshot {
        let s = &self.services;
        let head = s.stream.head();
        Snapshot {
            stream_head: head,
            events_stored: s.stream.events_stored(),
            syncs_waiting: s.sync.waiting() as u64,
            consumers: s.stream.progress().positions(),
            appservices: crate::appservice::queue_depths(&s.appservices, &s.store, head),
            whatsapp: self.whatsapp.as_deref().map(whatsapp_queues),
            // The inbox is counted as it changes; the outbox and the dead letters are scans of
            // small tables (a handful unless the relay or the homeserver is down).
            email: self.email.as_deref().map(|bridge| EmailQueues {
                inbox: bridge.store().inbox_len() as u64,
                outbox: bridge.store().outbox_len() as u64,
                dead_letters: bridge.store().dead_letters() as u64,
            }),
            storage_log_bytes: s.store.log_size_on_disk().ok(),
            storage_bytes: s.store.size_on_disk().ok(),
            webchat_sockets: s.webchat.as_ref().map(|w| w.hub.open_sockets()),
        }
    }
}

fn whatsapp_queues(bridge: &whatsapp::Bridge) -> WhatsappQueues {
    let backlog = bridge.backlog();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    WhatsappQueues {
        // A scan of the outbox table: it holds what WhatsApp has not taken yet, a handful
        // unless WhatsApp is down, and a scrape comes every few seconds at most.
        outbox: bridge.store().outbox_len() as u64,
        inbox: backlog.inbox_waiting,
        held: backlog.held,
        held_customers: backlog.held_customers,
        dead_letters: backlog.dead_letters,
        failing_seconds: backlog
            .failing_since_ms
            .map_or(0, |since| now_ms.saturating_sub(since) / 1000),
    }
}
