//! A WhatsApp Business Cloud API simulator, for tests, benchmarks and demos.
//!
//! It plays both sides of WhatsApp:
//! - the Graph API the business calls ([`graph_api`]): `POST /{version}/{phone_number_id}/messages`
//!   (messages, templates, read marks), `POST /{version}/{phone_number_id}/media`,
//!   `GET /{version}/{media_id}` and the download URL it returns, all behind the bearer token,
//!   answering with Meta's success and error bodies, enforcing the 24-hour customer service
//!   window (a free-form message outside it is accepted, then fails with `131047` as on the real
//!   API), and sending `sent`/`delivered` statuses as signed webhooks;
//! - the customers ([`control`]): a small HTTP API under `/sim/` that sends signed webhooks for
//!   any message type, shows what the business sent and its statuses, and injects faults
//!   (down, slow, rate limited, any error code).
//!
//! Its state lives in memory and survives [`Simulator::serve`] being stopped and started again
//! (so a test can take the API down and bring it back on the same port).

pub mod control;
pub mod graph_api;
pub mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the simulator is set up with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimConfig {
    pub phone_number_id: String,
    pub display_phone_number: String,
    pub access_token: String,
    pub app_secret: String,
    /// Where webhooks go (the bridge's `/bridges/whatsapp/webhook`).
    pub webhook_url: String,
    /// Send `sent` and `delivered` statuses on their own after each accepted message.
    pub auto_statuses: bool,
    /// Pause before those statuses.
    pub status_delay_ms: u64,
    /// The number's throughput ceiling, as Meta enforces it: sends beyond this many per second
    /// (a bucket that refills at this rate and holds one second of it) get `130429`.
    #[serde(default = "default_throughput")]
    pub throughput_per_second: f64,
}

fn default_throughput() -> f64 {
    1000.0
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            phone_number_id: "106540352242922".into(),
            display_phone_number: "15550783881".into(),
            access_token: "sim-access-token".into(),
            app_secret: "sim-app-secret".into(),
            webhook_url: "http://127.0.0.1:8008/bridges/whatsapp/webhook".into(),
            auto_statuses: true,
            status_delay_ms: 20,
            throughput_per_second: default_throughput(),
        }
    }
}

/// An injected fault of the Graph API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Fault {
    #[default]
    None,
    /// 503 with error code 2 ("Service temporarily unavailable") to every call.
    Down,
    /// Every call waits `delay_ms` first.
    Slow { delay_ms: u64 },
    /// 429 with error code 130429 to sends.
    RateLimited,
    /// The next `count` sends fail with `code` (HTTP 400).
    Error { code: i64, count: u32 },
}

/// A file in the simulator's media storage.
#[derive(Debug, Clone)]
pub struct StoredMedia {
    pub bytes: Bytes,
    pub mime_type: String,
    pub filename: Option<String>,
    pub sha256: String,
}

/// A message the business sent, as the simulator received it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentRecord {
    pub wamid: String,
    pub to: String,
    pub body: Value,
    pub status: String,
}

#[derive(Default)]
pub(crate) struct SimState {
    pub media: HashMap<String, StoredMedia>,
    pub sent: Vec<SentRecord>,
    /// The position in `sent` of each wamid, so statuses find their message without a scan.
    pub sent_index: HashMap<String, usize>,
    pub read_marks: Vec<String>,
    /// Milliseconds since the epoch of each customer's last message.
    pub last_customer_message: HashMap<String, u64>,
    pub fault: Fault,
    pub next_id: u64,
    /// Sends the throughput ceiling still allows now, and when it was last refilled.
    pub throughput: Option<(f64, std::time::Instant)>,
    /// Sends refused for exceeding the throughput ceiling.
    pub throttled: u64,
}

/// The simulator. Cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: SimConfig,
    pub state: Mutex<SimState>,
    pub http: reqwest::Client,
    /// `http://addr` once serving; the base of download URLs.
    pub base_url: Mutex<String>,
    /// Where webhooks go; starts as `config.webhook_url`.
    pub webhook_url: Mutex<String>,
}

/// The simulator serving on a listener.
pub struct SimServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl SimServer {
    /// The Graph API base to configure as `api_base`.
    pub fn api_base(&self) -> String {
        format!("http://{}/v21.0", self.addr)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving; connections are refused until served again.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Simulator {
    pub fn new(config: SimConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .expect("reqwest client");
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(SimState::default()),
                http,
                base_url: Mutex::new(String::new()),
                webhook_url: Mutex::new(config.webhook_url.clone()),
                config,
            }),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The Graph API and the control API.
    pub fn router(&self) -> axum::Router {
        graph_api::routes(self.clone()).merge(control::routes(self.clone()))
    }

    /// Serves on `listener` until the returned server is stopped.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<SimServer> {
        let addr = listener.local_addr()?;
        *self
            .inner
            .base_url
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = format!("http://{addr}");
        let (tx, rx) = oneshot::channel::<()>();
        let router = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(SimServer {
            addr,
            shutdown: Some(tx),
            task,
        })
    }

    /// Sends webhooks to `url` from now on (the bridge moved).
    pub fn set_webhook_url(&self, url: &str) {
        *self
            .inner
            .webhook_url
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = url.to_owned();
    }

    /// Sets the fault mode.
    pub fn set_fault(&self, fault: Fault) {
        self.inner.lock().fault = fault;
    }

    /// What the business sent so far, in order.
    pub fn sent(&self) -> Vec<SentRecord> {
        self.inner.lock().sent.clone()
    }

    /// How many sends were refused with `130429` for exceeding the throughput ceiling.
    pub fn throttled(&self) -> u64 {
        self.inner.lock().throttled
    }

    /// How many messages the business sent so far (without copying them, for polling).
    pub fn sent_count(&self) -> usize {
        self.inner.lock().sent.len()
    }

    /// The messages the business sent from position `from` on, in order.
    pub fn sent_since(&self, from: usize) -> Vec<SentRecord> {
        self.inner
            .lock()
            .sent
            .get(from..)
            .unwrap_or_default()
            .to_vec()
    }

    /// The message the business sent as `wamid`.
    pub fn sent_message(&self, wamid: &str) -> Option<SentRecord> {
        let state = self.inner.lock();
        state.sent_index.get(wamid).map(|&i| state.sent[i].clone())
    }

    /// The customer messages the business marked read, in order.
    pub fn read_marks(&self) -> Vec<String> {
        self.inner.lock().read_marks.clone()
    }

    /// A file by media id (uploaded by the business or by a customer).
    pub fn media(&self, id: &str) -> Option<StoredMedia> {
        self.inner.lock().media.get(id).cloned()
    }

    /// Stores a customer's file; returns its media id.
    pub fn store_media(&self, bytes: Bytes, mime_type: &str, filename: Option<String>) -> String {
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let mut state = self.inner.lock();
        state.next_id += 1;
        let id = format!("{}", 900_000_000_000_000u64 + state.next_id);
        state.media.insert(
            id.clone(),
            StoredMedia {
                bytes,
                mime_type: mime_type.to_owned(),
                filename,
                sha256,
            },
        );
        id
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh WhatsApp message id.
    pub(crate) fn new_wamid(&self) -> String {
        use base64::Engine;
        let n = {
            let mut state = self.lock();
            state.next_id += 1;
            state.next_id
        };
        let raw = format!("{n:012}{:016X}", rand::random::<u64>());
        format!(
            "wamid.{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    crate::now_ms()
}
