//! Running the server: bind, serve the router, shut down cleanly.
//!
//! Connections are served by [`listener`], which bounds how long a client may take to send a
//! request or read a response ([`idle`]); the limits are `[server]` config keys. With
//! `[metrics] enabled`, a second listener serves `GET /metrics` ([`observed`] is what it reads).
//!
//! Stopping ([`RunningServer::stop`], on SIGTERM or Ctrl-C under `charla serve`): the bridge
//! finishes its step, both listeners stop accepting, waiting `/sync` long polls are answered
//! with what they have, requests in flight finish (within a grace period), and the store's log
//! is synced, so the process can exit 0 with nothing written left behind.

mod idle;
mod listener;
mod observed;
mod tls;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{config::Config, error::Error, metrics::Metrics, services::Services};

/// How long a stop waits for the store's last log sync.
const FINAL_SYNC: Duration = Duration::from_secs(3);
/// How long a stop waits for the background tasks to let go of the services.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// A server running in this process (used by `charla serve` and by the integration tests).
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `GET /metrics` answers, when `[metrics] enabled`.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the Server-Server API answers (TLS), when `[federation] enabled`.
    pub federation_addr: Option<SocketAddr>,
    pub services: Arc<Services>,
    /// The WhatsApp bridge, when `[bridges.whatsapp]` enables it.
    pub whatsapp: Option<whatsapp::BridgeHandle>,
    /// The email bridge, when `[bridges.email]` enables it.
    pub email: Option<email::BridgeHandle>,
    /// Set to `true` to stop both listeners.
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    /// The metrics and federation listeners' tasks.
    side_tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// The base URL clients use.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, answers waiting long polls, waits for in-flight requests, and
    /// syncs the store's log.
    pub async fn stop(mut self) {
        // The bridge first: its workers finish their step while the server still answers.
        if let Some(bridge) = self.whatsapp.take() {
            bridge.stop().await;
        }
        if let Some(bridge) = self.email.take() {
            bridge.stop().await;
        }
        self.shutdown.send_replace(true);
        // Long polls return what they have, so the listener's wait for them is short.
        self.services.notifier.stop();
        let _ = (&mut self.task).await;
        for task in self.side_tasks.drain(..) {
            let _ = task.await;
        }
        // Acknowledged writes are on disk already; this syncs the rest (consumers' cursors,
        // lazily saved), so a restart replays nothing it need not. Bounded: on a full disk the
        // log retries its sync forever, and what it holds was never acknowledged.
        let store = &self.services.store;
        match tokio::time::timeout(FINAL_SYNC, store.durable(store.latest_ticket())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "syncing the store's log at shutdown failed"),
            Err(_) => {
                tracing::error!("the store's log could not be synced at shutdown (disk full?)")
            }
        }
        // The background tasks (stream consumers, sockets, sweeps) end when they see the stop,
        // each on its own thread: wait for the last to let go of the services, so that the
        // store's lock is free once this returns (a restart in the same process opens it).
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        while Arc::strong_count(&self.services) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&self.services) > 1 {
            tracing::warn!("background tasks still hold the services after the stop");
        }
    }

    /// Waits until the server stops on its own (signal).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::internal(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::internal(e.to_string()))?;
    Ok((listener, local))
}

/// Opens the store, binds the listeners and starts serving.
pub async fn start(mut config: Config) -> Result<RunningServer, Error> {
    let (listener, addr) = bind(config.server.listen).await?;
    // Bound before anything starts, so a taken port fails the start rather than the scrape.
    let metrics_listener = match config.metrics.enabled {
        true => Some(bind(config.metrics.listen).await?),
        false => None,
    };
    let federation_listener = match config.federation.enabled {
        true => {
            let f = &config.federation;
            let tls = tls::acceptor(&f.tls_certificate, &f.tls_private_key)?;
            Some((bind(f.listen).await?, tls))
        }
        false => None,
    };
    let whatsapp = crate::bridges::prepare_whatsapp(&mut config, addr)?;
    let email = crate::bridges::prepare_email(&mut config, addr)?;
    let services = Services::open(config).await?;
    crate::bot::start(services.clone()).await?;
    crate::webchat::feed::start(services.clone()).await?;
    crate::federation::sender::start(services.clone(), Services::federation_sender).await?;
    if let Some(indexer) = crate::search::indexer::start(services.clone()).await? {
        tokio::spawn(indexer);
    }
    let push = crate::push::gateway::open(&services.push_delivery()).await?;
    let s = services.clone();
    tokio::spawn(async move { crate::push::gateway::run(&s.push_delivery(), push).await });
    let http_metrics = metrics_listener
        .as_ref()
        .map(|_| crate::metrics::HttpMetrics::new());
    let mut app = crate::api::router(services.clone(), http_metrics.as_ref());
    let mut whatsapp_handle = None;
    if let Some(prepared) = whatsapp {
        let (with_bridge, handle) = crate::bridges::start_whatsapp(
            prepared,
            &services.config,
            addr,
            app,
            http_metrics.as_ref(),
        )?;
        app = with_bridge;
        let states: Arc<dyn crate::support::DeliveryStates> = handle.bridge().clone();
        services.support.deliveries.attach(&states);
        services
            .backup
            .attach_bridge("whatsapp", handle.backup_sources());
        whatsapp_handle = Some(handle);
    }
    let mut email_handle = None;
    if let Some(prepared) = email {
        let (with_bridge, handle) = crate::bridges::start_email(
            prepared,
            &services.config,
            addr,
            app,
            http_metrics.as_ref(),
            email_tls(&services.config)?,
        )
        .await?;
        app = with_bridge;
        let states: Arc<dyn crate::support::DeliveryStates> = handle.bridge().clone();
        services.support.deliveries.attach(&states);
        services
            .backup
            .attach_bridge("email", handle.backup_sources());
        email_handle = Some(handle);
    }
    let (shutdown, stopped) = watch::channel(false);
    let timeouts = listener::Timeouts {
        header_read: Duration::from_secs(services.config.server.header_read_timeout_secs),
        idle: Duration::from_secs(services.config.server.idle_timeout_secs),
    };
    let task = tokio::spawn(listener::serve(
        listener,
        app,
        timeouts,
        None,
        stopping(stopped.clone()),
    ));
    let mut side_tasks = Vec::new();
    let mut federation_addr = None;
    if let Some(((listener, at), tls)) = federation_listener {
        let router = crate::api::federation::router(services.clone());
        side_tasks.push(tokio::spawn(listener::serve(
            listener,
            router,
            timeouts,
            Some(tls),
            stopping(stopped.clone()),
        )));
        federation_addr = Some(at);
        tracing::info!(addr = %at, "federation (Server-Server API, TLS)");
    }
    let mut metrics_addr = None;
    if let (Some((listener, at)), Some(http)) = (metrics_listener, http_metrics) {
        let observed = observed::Observed {
            services: services.clone(),
            whatsapp: whatsapp_handle.as_ref().map(|h| h.bridge().clone()),
            email: email_handle.as_ref().map(|h| h.bridge().clone()),
        };
        let router = Metrics::new(observed, http).router();
        side_tasks.push(tokio::spawn(listener::serve(
            listener,
            router,
            timeouts,
            None,
            stopping(stopped),
        )));
        metrics_addr = Some(at);
        tracing::info!(addr = %at, "metrics at /metrics");
    }
    tokio::spawn(presence_timeouts(services.clone()));
    start_appservice_pushers(&services);
    tracing::info!(%addr, server_name = %services.config.server_name, "listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        federation_addr,
        services,
        whatsapp: whatsapp_handle,
        email: email_handle,
        shutdown,
        task,
        side_tasks,
    })
}

/// The email bridge's STARTTLS: its own certificate, else the federation's, else none.
pub fn email_tls(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, Error> {
    let bridge = &config.bridges.email;
    let (certificate, key) = if !bridge.tls_certificate.as_os_str().is_empty() {
        (&bridge.tls_certificate, &bridge.tls_private_key)
    } else if config.federation.enabled {
        (
            &config.federation.tls_certificate,
            &config.federation.tls_private_key,
        )
    } else {
        return Ok(None);
    };
    Ok(Some(Arc::new(tls::server_config(certificate, key)?)))
}

/// Resolves once `stopped` says so (or its sender is gone).
async fn stopping(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Starts the appservice pushers on a thread of their own (`appservice::run_pushers`), also
/// with none registered yet: one registered at runtime gets its pusher there.
fn start_appservice_pushers(services: &Arc<Services>) {
    let s = services.clone();
    let spawned = std::thread::Builder::new()
        .name("charla-appservice".into())
        .spawn(move || crate::appservice::run_pushers(&s.appservice_pushers()));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the appservice pushers");
    }
}

/// Applies presence timeouts until the server stops.
async fn presence_timeouts(services: Arc<Services>) {
    let p = &services.config.presence;
    let every = std::time::Duration::from_secs(p.idle_timeout_secs.min(p.offline_timeout_secs))
        .div_f64(4.0)
        .clamp(
            std::time::Duration::from_millis(250),
            std::time::Duration::from_secs(5),
        );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = services.notifier.stopped() => return,
        }
        if let Err(e) = services.presence.sweep(&services.rooms) {
            tracing::warn!(error = %e, "presence sweep failed");
        }
    }
}

/// `charla serve`: runs until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), Error> {
    let server = start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
