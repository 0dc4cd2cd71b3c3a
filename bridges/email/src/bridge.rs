//! The bridge put together: state, clients, the router it serves and the workers it runs.
//!
//! [`BridgeService::new`] builds it; [`BridgeService::router`] is what an HTTP listener serves
//! (the toolkit's appservice endpoints, to be nested under `/bridges/email`);
//! [`BridgeService::start`] binds the SMTP listener and runs the inbox and outbox workers;
//! [`BridgeHandle::stop`] ends them and flushes the state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use appservice::{AppService, Client, Intent, Registration};
use parking_lot::Mutex;
use ruma::{OwnedUserId, ServerName};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::config::EmailConfig;
use crate::limit::SenderLimiter;
use crate::relay::Relay;
use crate::store::{Delivery, Store};

/// Everything the bridge's parts share.
pub struct Bridge {
    pub(crate) config: EmailConfig,
    pub(crate) store: Store,
    pub(crate) client: Client,
    pub(crate) bot: Intent,
    pub(crate) relay: Relay,
    /// SPF, DKIM and DMARC of inbound mail, when `authenticate` is on.
    pub(crate) auth: Option<Authenticator>,
    pub(crate) limiter: SenderLimiter,
    /// Wakes the inbox worker when a mail was taken in.
    pub(crate) inbox_wake: Notify,
    /// Wakes the outbox worker when an agent's message was queued.
    pub(crate) outbox_wake: Notify,
    /// Agents' display names, for `From: "Ana (Support)"`: asked once per process and agent.
    pub(crate) names: Mutex<HashMap<OwnedUserId, String>>,
    /// Answers with attachments being built and sent (`outbox`): bounds the memory they hold.
    pub(crate) attachment_sends: tokio::sync::Semaphore,
}

impl Bridge {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &EmailConfig {
        &self.config
    }

    /// The delivery state of an agent's message (for the support API).
    pub fn delivery(&self, event_id: &str) -> Option<Delivery> {
        let event_id = ruma::EventId::parse(event_id).ok()?;
        self.store.delivery(&event_id).ok().flatten()
    }

    /// Whether `user` is one of the bridge's own users (its bot or a customer's puppet).
    pub fn is_own_user(&self, user: &str) -> bool {
        user == self.bot.user_id().as_str()
            || (user
                .strip_prefix('@')
                .is_some_and(|u| u.starts_with(crate::config::PUPPET_PREFIX))
                && user.ends_with(&format!(":{}", self.client.server_name())))
    }
}

/// The bridge, built but not running yet.
pub struct BridgeService {
    app: AppService<Bridge>,
}

impl BridgeService {
    /// Opens the state under `state_dir` and builds the clients. `homeserver` is the URL the
    /// bridge reaches the homeserver at.
    pub fn new(
        config: EmailConfig,
        registration: Registration,
        homeserver: &str,
        server_name: &ServerName,
        state_dir: &Path,
    ) -> Result<Self, String> {
        config.validate()?;
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let store = Store::open(&state_dir.join("db")).map_err(|e| e.to_string())?;
        let relay = Relay::new(&config)?;
        let auth = if config.authenticate {
            Some(Authenticator::new(&config.nameservers)?)
        } else {
            None
        };
        let limiter = SenderLimiter::new(
            config.mails_per_sender_per_hour,
            config.mails_per_sender_burst,
        );
        let app = AppService::builder(registration, homeserver, server_name)
            .state_dir(state_dir)
            .build_with(|parts| Bridge {
                config,
                store,
                client: parts.client().clone(),
                bot: parts.bot(),
                relay,
                auth,
                limiter,
                inbox_wake: Notify::new(),
                outbox_wake: Notify::new(),
                names: Mutex::new(HashMap::new()),
                attachment_sends: tokio::sync::Semaphore::new(crate::outbox::ATTACHMENT_SENDS),
            })
            .map_err(|e| e.to_string())?;
        Ok(Self { app })
    }

    pub fn bridge(&self) -> Arc<Bridge> {
        self.app.handler().clone()
    }

    /// The appservice endpoints, relative to where they are nested.
    pub fn router(&self) -> axum::Router {
        self.app.router()
    }

    /// Binds the SMTP listener and starts the workers; mails taken in and answers queued
    /// before a restart are picked up again. `tls` is the listener's STARTTLS configuration.
    pub async fn start(
        self,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<BridgeHandle, String> {
        let bridge = self.bridge();
        let config = &bridge.config;
        let listener = tokio::net::TcpListener::bind(&config.smtp_listen)
            .await
            .map_err(|e| format!("bridges.email.smtp_listen {}: {e}", config.smtp_listen))?;
        let smtp_addr = listener
            .local_addr()
            .map_err(|e| format!("bridges.email.smtp_listen: {e}"))?;
        let settings = Arc::new(crate::smtp::Settings {
            hostname: config.smtp_hostname(),
            max_message_bytes: config.max_message_bytes,
            max_connections: config.max_connections,
            max_recipients: 50,
            tls,
            command_timeout: std::time::Duration::from_secs(300),
        });
        let backup_sources = vec![
            ("db", bridge.store.backup_source()),
            ("transactions", self.app.txn_store().backup_source()),
        ];
        let (shutdown, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(crate::smtp::serve(
                listener,
                settings,
                bridge.clone(),
                stopped.clone(),
            )),
            tokio::spawn(crate::inbox::run(bridge.clone(), stopped.clone())),
            tokio::spawn(crate::outbox::run(bridge.clone(), stopped)),
        ];
        tracing::info!(bot = %bridge.bot.user_id(), smtp = %smtp_addr, "email bridge running");
        Ok(BridgeHandle {
            shutdown,
            tasks,
            bridge,
            smtp_addr,
            backup_sources,
        })
    }
}

/// The running bridge.
pub struct BridgeHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    bridge: Arc<Bridge>,
    smtp_addr: std::net::SocketAddr,
    backup_sources: Vec<(&'static str, charla_storage::BackupSource)>,
}

impl BridgeHandle {
    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }

    /// Where the SMTP listener listens (the bound port when `smtp_listen` asked for port 0).
    pub fn smtp_addr(&self) -> std::net::SocketAddr {
        self.smtp_addr
    }

    /// The bridge's durable stores, each with its folder under the state folder: what a
    /// backup of the process that runs the bridge must take with the homeserver's.
    pub fn backup_sources(&self) -> &[(&'static str, charla_storage::BackupSource)] {
        &self.backup_sources
    }

    /// Stops the listener and the workers after their current step and flushes the state.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Err(error) = self.bridge.store.flush().await {
            tracing::warn!(%error, "flushing the email bridge state failed");
        }
    }
}

/// The state folder: `state_path` if set, else `bridges/email` under `data_dir`.
pub fn state_dir(config: &EmailConfig, data_dir: &Path) -> PathBuf {
    if config.state_path.as_os_str().is_empty() {
        data_dir.join("bridges").join("email")
    } else {
        config.state_path.clone()
    }
}

/// The registration file: `registration` if set, else in the state folder.
pub fn registration_file(config: &EmailConfig, data_dir: &Path) -> PathBuf {
    if config.registration.as_os_str().is_empty() {
        state_dir(config, data_dir).join("registration.yaml")
    } else {
        config.registration.clone()
    }
}

/// Runs the bridge on its own listener (`charla bridge email`) until ctrl-c. The registration
/// file is written on first start; give it to the homeserver.
pub async fn run_standalone(
    config: EmailConfig,
    server_name: &ServerName,
    default_homeserver: &str,
    data_dir: &Path,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), String> {
    let state = state_dir(&config, data_dir);
    let file = registration_file(&config, data_dir);
    let url = format!("http://{}/bridges/email", config.listen);
    let registration =
        crate::registration::load_or_generate(&file, &url, server_name, &config.bot_localpart)
            .map_err(|e| e.to_string())?;
    let homeserver = if config.homeserver_url.is_empty() {
        default_homeserver.to_owned()
    } else {
        config.homeserver_url.clone()
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let service = BridgeService::new(config, registration, &homeserver, server_name, &state)?;
    let router = axum::Router::new().nest_service("/bridges/email", service.router());
    if let Err(error) = service.bridge().bot.ensure_registered().await {
        tracing::warn!(%error, "cannot register the email bridge bot yet");
    }
    let handle = service.start(tls).await?;
    println!(
        "Email bridge: SMTP on {}, appservice on {url}; registration: {}",
        handle.smtp_addr(),
        file.display()
    );
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    handle.stop().await;
    served.map_err(|e| e.to_string())
}
