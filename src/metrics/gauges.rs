//! The gauges, read when Prometheus scrapes rather than kept up to date by the code they
//! describe: the stream head, waiting syncs, queues and sizes already exist as numbers
//! somewhere (an atomic, a store record, a directory), so the request path pays nothing for
//! them and a scrape reads each once.
//!
//! [`Source`] is what the server gives (`server/observed.rs` implements it over the running
//! services), so this module names no service.

use crate::appservice::QueueDepth;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

/// Everything the gauges show, read at once.
#[derive(Default)]
pub struct Snapshot {
    /// The highest durable stream position.
    pub stream_head: u64,
    /// Events made durable since the process started.
    pub events_stored: u64,
    /// `/sync` long polls waiting now.
    pub syncs_waiting: u64,
    /// Each running stream consumer's name and the position it handled everything up to.
    pub consumers: Vec<(String, u64)>,
    /// Each pushing appservice's backlog.
    pub appservices: Vec<QueueDepth>,
    /// The in-process WhatsApp bridge's queues, when it runs.
    pub whatsapp: Option<WhatsappQueues>,
    /// The in-process email bridge's queues, when it runs.
    pub email: Option<EmailQueues>,
    /// Bytes of the store's write-ahead log segments.
    pub storage_log_bytes: Option<u64>,
    /// Bytes of the whole store (sled's files and the log).
    pub storage_bytes: Option<u64>,
    /// Open web chat WebSockets, when the web chat is on.
    pub webchat_sockets: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct WhatsappQueues {
    /// Agents' messages queued for the Cloud API.
    pub outbox: u64,
    /// Webhooks accepted and not brought into Matrix yet.
    pub inbox: u64,
    /// Customer messages the homeserver refused, held for a retry, and the customers they
    /// belong to.
    pub held: u64,
    pub held_customers: u64,
    /// Messages set aside for good.
    pub dead_letters: u64,
    /// Seconds every inbox round has been failing (0 while rounds succeed).
    pub failing_seconds: u64,
}

#[derive(Debug, Clone, Default)]
pub struct EmailQueues {
    /// Mails taken in (SMTP `250`) and not brought into Matrix yet.
    pub inbox: u64,
    /// Agents' answers the relay has not taken yet.
    pub outbox: u64,
    /// Mails the homeserver kept refusing, set aside.
    pub dead_letters: u64,
}

/// Where the gauges come from.
pub trait Source: Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// The collector registered with the registry: one snapshot per scrape.
pub(super) struct Gauges(pub(super) Box<dyn Source>);

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gauges")
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        let e = &mut encoder;
        gauge(
            e,
            "charla_stream_head",
            "Highest durable stream position",
            None,
            s.stream_head,
        )?;
        let events = ConstCounter::new(s.events_stored);
        events.encode(e.encode_descriptor(
            "charla_events_stored",
            "Events made durable since the process started",
            None,
            events.metric_type(),
        )?)?;
        gauge(
            e,
            "charla_syncs_waiting",
            "/sync long polls waiting now",
            None,
            s.syncs_waiting,
        )?;
        labelled(
            e,
            "charla_consumer_lag",
            "Stream positions a consumer (support bot, push delivery, appservice pusher) has \
             yet to handle: the stream head minus its position",
            "consumer",
            s.consumers
                .iter()
                .map(|(name, pos)| (name.as_str(), s.stream_head.saturating_sub(*pos))),
        )?;
        labelled(
            e,
            "charla_appservice_behind",
            "Stream positions after what the appservice acknowledged",
            "appservice",
            s.appservices
                .iter()
                .map(|q| (q.appservice.as_str(), q.behind)),
        )?;
        labelled(
            e,
            "charla_appservice_transactions_pending",
            "Transactions prepared for the appservice and not acknowledged yet",
            "appservice",
            s.appservices
                .iter()
                .map(|q| (q.appservice.as_str(), q.transactions)),
        )?;
        if let Some(w) = &s.whatsapp {
            whatsapp(e, w)?;
        }
        if let Some(q) = &s.email {
            gauge(
                e,
                "charla_email_inbox",
                "Mails taken in and not brought into Matrix yet",
                None,
                q.inbox,
            )?;
            gauge(
                e,
                "charla_email_outbox",
                "Agents' answers the mail relay has not taken yet",
                None,
                q.outbox,
            )?;
            gauge(
                e,
                "charla_email_dead_letters",
                "Mails set aside after the homeserver refused them again and again",
                None,
                q.dead_letters,
            )?;
        }
        if let Some(n) = s.webchat_sockets {
            gauge(
                e,
                "charla_webchat_sockets",
                "Open web chat WebSockets",
                None,
                n,
            )?;
        }
        let bytes = Some(&Unit::Bytes);
        if let Some(b) = s.storage_log_bytes {
            gauge(
                e,
                "charla_storage_log",
                "Size of the store's write-ahead log",
                bytes,
                b,
            )?;
        }
        if let Some(b) = s.storage_bytes {
            gauge(
                e,
                "charla_storage",
                "Size of the store on disk, log included",
                bytes,
                b,
            )?;
        }
        if let Some(b) = super::process::resident_bytes() {
            gauge(
                e,
                "process_resident_memory",
                "Resident memory size",
                bytes,
                b,
            )?;
        }
        Ok(())
    }
}

fn whatsapp(e: &mut DescriptorEncoder, w: &WhatsappQueues) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "charla_whatsapp_outbox",
        "Agents' messages queued for WhatsApp",
        None,
        w.outbox,
    )?;
    gauge(
        e,
        "charla_whatsapp_inbox",
        "WhatsApp webhooks accepted and not brought into Matrix yet",
        None,
        w.inbox,
    )?;
    gauge(
        e,
        "charla_whatsapp_held",
        "Customer messages the homeserver refused, held for a retry",
        None,
        w.held,
    )?;
    gauge(
        e,
        "charla_whatsapp_held_customers",
        "Customers with held messages",
        None,
        w.held_customers,
    )?;
    gauge(
        e,
        "charla_whatsapp_dead_letters",
        "WhatsApp messages set aside for good after repeated refusals",
        None,
        w.dead_letters,
    )?;
    gauge(
        e,
        "charla_whatsapp_inbox_failing",
        "How long every round of the WhatsApp inbox has been failing (0 while it works)",
        Some(&Unit::Seconds),
        w.failing_seconds,
    )
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

/// A gauge family with one label, written only when it has a series (an empty family is noise
/// on a server without appservices).
fn labelled<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut values = values.peekable();
    if values.peek().is_none() {
        return Ok(());
    }
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, n) in values {
        ConstGauge::new(n).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}
