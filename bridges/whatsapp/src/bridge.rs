//! The bridge put together: state, clients, the router it serves and the workers it runs.
//!
//! [`BridgeService::new`] builds it; [`BridgeService::router`] is what a listener serves (the
//! toolkit's appservice endpoints plus `/webhook`, to be nested under `/bridges/whatsapp`);
//! [`BridgeService::start`] runs the inbox and outbox workers; [`BridgeHandle::stop`] ends them
//! and flushes the state.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use appservice::{AppService, Client, Intent, Registration};
use ruma::{OwnedRoomId, ServerName};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::BridgeConfig;
use crate::graph::Graph;
use crate::store::{Delivery, Store};

/// Everything the bridge's parts share.
pub struct Bridge {
    pub(crate) config: BridgeConfig,
    pub(crate) store: Store,
    pub(crate) graph: Graph,
    pub(crate) client: Client,
    pub(crate) bot: Intent,
    /// Wakes the inbox worker when a webhook was accepted.
    pub(crate) inbox_wake: Notify,
    /// Wakes the outbox worker when an agent action was queued.
    pub(crate) outbox_wake: Notify,
    /// Jobs queued (on disk) that the outbox worker has not taken yet.
    pub(crate) fresh_jobs: Mutex<Vec<(crate::store::OutboxKey, crate::store::Job)>>,
    /// Rooms told that WhatsApp is unreachable, until their queue drains.
    pub(crate) pending_rooms: Mutex<HashSet<OwnedRoomId>>,
    /// The customer message last marked read, per portal, so several agents' receipts on the
    /// same message mark it once.
    pub(crate) read_marks: Mutex<HashMap<String, String>>,
    /// What the inbox could not bring into Matrix yet ([`Bridge::backlog`]).
    pub(crate) backlog: crate::backlog::Backlog,
}

impl Bridge {
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The bridge bot's intent.
    pub fn bot(&self) -> &Intent {
        &self.bot
    }

    /// The delivery state of an agent's message (for the support API).
    pub fn delivery(&self, event_id: &str) -> Option<Delivery> {
        let event_id = ruma::EventId::parse(event_id).ok()?;
        self.store.delivery(&event_id).ok().flatten()
    }

    /// Whether `user` is one of the bridge's own users (its bot or a puppet).
    pub fn is_own_user(&self, user: &str) -> bool {
        user == self.bot.user_id().as_str()
            || (user
                .strip_prefix('@')
                .is_some_and(|u| u.starts_with(crate::config::PUPPET_PREFIX))
                && user.ends_with(&format!(":{}", self.client.server_name())))
    }

    /// The intent of a puppet.
    pub(crate) fn puppet(&self, user_id: &ruma::UserId) -> Intent {
        self.client.intent(user_id.to_owned())
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
        config: BridgeConfig,
        registration: Registration,
        homeserver: &str,
        server_name: &ServerName,
        state_dir: &Path,
    ) -> Result<Self, String> {
        config.validate()?;
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let store = Store::open(&state_dir.join("db")).map_err(|e| e.to_string())?;
        let backlog = crate::backlog::Backlog::load(&store).map_err(|e| e.to_string())?;
        let graph = Graph::new(
            &config.api_base,
            &config.phone_number_id,
            &config.access_token,
        );
        let app = AppService::builder(registration, homeserver, server_name)
            .state_dir(state_dir)
            .build_with(|parts| Bridge {
                config,
                store,
                graph,
                client: parts.client().clone(),
                bot: parts.bot(),
                inbox_wake: Notify::new(),
                outbox_wake: Notify::new(),
                fresh_jobs: Mutex::new(Vec::new()),
                pending_rooms: Mutex::new(HashSet::new()),
                read_marks: Mutex::new(HashMap::new()),
                backlog,
            })
            .map_err(|e| e.to_string())?;
        Ok(Self { app })
    }

    pub fn bridge(&self) -> Arc<Bridge> {
        self.app.handler().clone()
    }

    /// The appservice endpoints and the webhook, relative to where they are nested.
    pub fn router(&self) -> axum::Router {
        self.app
            .router()
            .merge(crate::webhook::routes(self.bridge()))
    }

    /// Starts the workers; messages accepted before a restart are picked up again.
    pub fn start(self) -> BridgeHandle {
        let bridge = self.bridge();
        let backup_sources = vec![
            ("db", bridge.store.backup_source()),
            ("transactions", self.app.txn_store().backup_source()),
        ];
        let (shutdown, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(crate::inbox::run(bridge.clone(), stopped.clone())),
            tokio::spawn(crate::outbox_worker::run(bridge.clone(), stopped)),
        ];
        tracing::info!(bot = %bridge.bot.user_id(), "WhatsApp bridge running");
        BridgeHandle {
            shutdown,
            tasks,
            bridge,
            backup_sources,
        }
    }
}

/// The running workers.
pub struct BridgeHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    bridge: Arc<Bridge>,
    /// The bridge's stores, by their folder under the state folder.
    backup_sources: Vec<(&'static str, charla_storage::BackupSource)>,
}

impl BridgeHandle {
    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }

    /// The bridge's durable stores, each with its folder under the state folder
    /// ([`state_dir`]): what a backup of the process that runs the bridge must take, together
    /// with the homeserver's, so that the two agree (see `charla_storage::Snapshot`).
    pub fn backup_sources(&self) -> &[(&'static str, charla_storage::BackupSource)] {
        &self.backup_sources
    }

    /// What waits to be brought into Matrix: see [`Bridge::backlog`].
    pub fn backlog(&self) -> crate::backlog::BacklogState {
        self.bridge.backlog()
    }

    /// Stops the workers after their current step and flushes the state.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Err(error) = self.bridge.store.flush().await {
            tracing::warn!(%error, "flushing the bridge state failed");
        }
    }
}

/// The state folder: `state_path` if set, else `bridges/whatsapp` under `data_dir`.
pub fn state_dir(config: &BridgeConfig, data_dir: &Path) -> PathBuf {
    if config.state_path.as_os_str().is_empty() {
        data_dir.join("bridges").join("whatsapp")
    } else {
        config.state_path.clone()
    }
}

/// Runs the bridge on its own listener (`charla bridge whatsapp`) until ctrl-c. The
/// registration file is written on first start; give it to the homeserver.
pub async fn run_standalone(
    config: BridgeConfig,
    server_name: &ServerName,
    default_homeserver: &str,
    data_dir: &Path,
) -> Result<(), String> {
    let state = state_dir(&config, data_dir);
    let file = if config.registration.as_os_str().is_empty() {
        state.join("registration.yaml")
    } else {
        config.registration.clone()
    };
    let url = format!("http://{}/bridges/whatsapp", config.listen);
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
    let router = axum::Router::new().nest_service("/bridges/whatsapp", service.router());
    if let Err(error) = service.bridge().bot.ensure_registered().await {
        tracing::warn!(%error, "cannot register the bridge bot yet");
    }
    let handle = service.start();
    println!(
        "WhatsApp bridge on {url} (webhook {url}/webhook); registration: {}",
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
