//! Running the server: bind, serve the router, shut down cleanly.
//!
//! Connections are served by [`listener`], which bounds how long a client may take to send a
//! request or read a response ([`idle`]); the limits are `[server]` config keys.

mod idle;
mod listener;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{config::Config, error::Error, services::Services};

/// A server running in this process (used by `charla serve` and by the integration tests).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub services: Arc<Services>,
    /// The WhatsApp bridge, when `[bridges.whatsapp]` enables it.
    pub whatsapp: Option<whatsapp::BridgeHandle>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// The base URL clients use.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, waits for in-flight ones, and closes the store.
    pub async fn stop(mut self) {
        // The bridge first: its workers finish their step while the server still answers.
        if let Some(bridge) = self.whatsapp.take() {
            bridge.stop().await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.services.notifier.stop();
        let _ = (&mut self.task).await;
    }

    /// Waits until the server stops on its own (signal).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Opens the store, binds the listener and starts serving.
pub async fn start(mut config: Config) -> Result<RunningServer, Error> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| Error::internal(format!("cannot listen on {}: {e}", config.server.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(e.to_string()))?;
    let whatsapp = crate::bridges::prepare_whatsapp(&mut config, addr)?;
    let services = Services::open(config).await?;
    crate::bot::start(services.clone()).await?;
    let push = crate::push::gateway::open(&services.push_delivery()).await?;
    let s = services.clone();
    tokio::spawn(async move { crate::push::gateway::run(&s.push_delivery(), push).await });
    let mut app = crate::api::router(services.clone());
    let mut whatsapp_handle = None;
    if let Some(prepared) = whatsapp {
        let (with_bridge, handle) =
            crate::bridges::start_whatsapp(prepared, &services.config, addr, app)?;
        app = with_bridge;
        let states: Arc<dyn crate::support::DeliveryStates> = handle.bridge().clone();
        services.support.deliveries.attach(&states);
        whatsapp_handle = Some(handle);
    }
    let (tx, rx) = oneshot::channel::<()>();
    let timeouts = listener::Timeouts {
        header_read: Duration::from_secs(services.config.server.header_read_timeout_secs),
        idle: Duration::from_secs(services.config.server.idle_timeout_secs),
    };
    let task = tokio::spawn(listener::serve(listener, app, timeouts, async move {
        let _ = rx.await;
    }));
    tokio::spawn(presence_timeouts(services.clone()));
    start_appservice_pushers(&services);
    tracing::info!(%addr, server_name = %services.config.server_name, "listening");
    Ok(RunningServer {
        addr,
        services,
        whatsapp: whatsapp_handle,
        shutdown: Some(tx),
        task,
    })
}

/// Starts the appservice pushers on a thread of their own (`appservice::run_pushers`), if any
/// appservice has a URL to push to.
fn start_appservice_pushers(services: &Arc<Services>) {
    if !crate::appservice::any_to_push(&services.appservices) {
        return;
    }
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
