//! The HTTP listener: accepts connections and serves each with hyper, within time limits.
//!
//! `axum::serve` reads headers and bodies and writes responses for as long as a client cares
//! to take, so a few hundred clients sending one byte a minute (slowloris) or never reading
//! hold their connections, tasks and upload slots forever. Each connection here is served by
//! hyper's HTTP/1 connection builder directly, which bounds the header read (and with it how
//! long an idle keep-alive connection stays open), while [`idle`] bounds the waits on a
//! request body and on a response write. Stopping waits for requests in flight, as
//! `axum::serve`'s graceful shutdown did, for at most [`GRACE`].
//!
//! Connections may be upgraded (the web chat's WebSocket): hyper then hands the connection
//! over and its future ends, so a stop does not wait for sockets; they close themselves when
//! the notifier stops.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use super::idle::{IdleBody, WriteTimeout};

/// How long a client may take over each part of an exchange.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To send a request's headers, counted from when the server is ready to read them: a new
    /// connection and an idle keep-alive one alike.
    pub header_read: Duration,
    /// To send the next piece of a request body, or to read the next piece of a response.
    pub idle: Duration,
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then waits
/// for the requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(true);
    // Every connection's task holds a receiver: `closed` resolves when the last one ended.
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (app, builder, tls) = (app.clone(), builder.clone(), tls.clone());
        // Held until the connection (and the router in it) is dropped: the stop's wait below
        // ends only then.
        let held = stopping.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return connection(tcp, peer, app, &builder, timeouts, held).await;
            };
            // The handshake is part of the time a client has to send its request's headers.
            match tokio::time::timeout(timeouts.header_read, tls.accept(tcp)).await {
                Ok(Ok(stream)) => connection(stream, peer, app, &builder, timeouts, held).await,
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    drop(stopping);
    stop.send_replace(true);
    // Idle connections close at once and waiting long polls answer (the notifier stopped);
    // what still runs after the grace period (an upload that crawls) is cut, so that a stop
    // ends in bounded time.
    if tokio::time::timeout(GRACE, stop.closed()).await.is_err() {
        tracing::warn!(grace = ?GRACE, "requests still in flight at shutdown were cut");
    }
    Ok(())
}

/// Serves one connection until it closes, or answers its request in flight and closes once
/// `held` says the server stops.
async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    app: Router,
    builder: &http1::Builder,
    timeouts: Timeouts,
    held: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(WriteTimeout::new(io, timeouts.idle));
    let service = service_fn(move |request: http::Request<Incoming>| {
        let mut request = request.map(|body| IdleBody::new(body, timeouts.idle));
        // Who is asking, for per-address limits (`api::client_ip`).
        request.extensions_mut().insert(ConnectInfo(peer));
        // A router is always ready: no `poll_ready` needed before `call`.
        app.clone().call(request)
    });
    let mut connection = Box::pin(builder.serve_connection(io, service).with_upgrades());
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stopped(held.clone()) => {
            // Answers the request in flight, then closes.
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(e) = served {
        // Timeouts, resets and malformed requests: the client's doing, not ours.
        tracing::debug!(error = %e, "connection closed with an error");
    }
    drop(connection);
    drop(held);
}

/// Resolves once `stopping` turns true (or its sender is gone).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// How long a stop waits for the requests in flight.
const GRACE: Duration = Duration::from_secs(5);

/// Like `axum::serve`: a connection that failed before it was accepted is the peer's affair;
/// anything else (out of file descriptors) is logged and retried after a pause, not in a spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
