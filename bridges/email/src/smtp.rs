//! The inbound SMTP listener: where customers' mail enters the bridge.
//!
//! Other mail servers (MTAs) connect and hand over messages for the support addresses. What the
//! listener promises them decides whether mail is ever lost, so it is strict about three things:
//!
//! * **250 means durable.** The final reply to DATA is `250` only once [`MailSink::deliver`] has
//!   answered `Ok`, which it does only when the message is stored. Until then the sending MTA
//!   still holds the message; a crash before the 250 costs at most a duplicate, never a loss.
//! * **4xx for temporary trouble.** Storage errors and rate limits answer 4xx
//!   ([`Refusal::Temporary`]): the sender queues the mail and retries later. 5xx
//!   ([`Refusal::Permanent`], unknown recipients, oversized mail) bounces it to its author at once.
//! * **Bounded work per client.** The size limit is advertised (RFC 1870 `SIZE`) and enforced
//!   while reading, without buffering past it; command lines are at most 64 KiB; every wait has
//!   an idle timeout; a session that keeps erring is closed; and only `max_connections` sessions
//!   run at once.
//!
//! It speaks RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8 and, when
//! given a certificate, STARTTLS (RFC 3207). There is no AUTH and no relaying: it only takes mail
//! for the recipients the sink accepts.

mod command;
mod data;
mod session;

use std::{net::IpAddr, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tracing::{Instrument, debug, warn};

/// What the listener needs to know of the bridge: which recipients it takes and where mail goes.
pub trait MailSink: Send + Sync + 'static {
    /// Whether RCPT TO may name `address` (the bare address, without <>, as given).
    fn accepts_recipient(&self, address: &str) -> bool;
    /// Called at MAIL FROM (reverse path `from`, "" for the null sender) from `peer`: a
    /// per-sender rate limit answers Err(Refusal::Temporary(..)).
    fn check_sender(&self, from: &str, peer: IpAddr) -> Result<(), Refusal>;
    /// The whole message (after dot-unstuffing, with the listener's `Received:` line prepended),
    /// for the envelope. Answer Ok only once the mail is durable: the listener says 250 then.
    fn deliver(
        &self,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), Refusal>> + Send;
}

/// Who sent a message, to whom, and how it arrived: the SMTP envelope, which the message's own
/// headers may contradict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// The reverse path without <>, "" for the null sender (bounces).
    pub mail_from: String,
    /// The accepted RCPT TO addresses, without <>.
    pub recipients: Vec<String>,
    /// The address the client connected from.
    pub peer: IpAddr,
    /// The EHLO/HELO domain the client gave.
    pub helo: String,
    /// Whether the message came over STARTTLS.
    pub tls: bool,
}

/// Why the bridge will not take a sender or a message now. The class decides what the sending
/// MTA does, so pick it by whether trying again could succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 4xx: the sender's MTA retries later (storage trouble, rate limit).
    #[error("temporary: {0}")]
    Temporary(String),
    /// 5xx: never retried.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// How the listener presents itself and the limits it holds clients to.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Said in the greeting, the EHLO answer and the `Received:` line.
    pub hostname: String,
    /// Advertised as SIZE and enforced on the message as received (before `Received:`).
    pub max_message_bytes: usize,
    /// Concurrent sessions; beyond it: 421 and close.
    pub max_connections: usize,
    /// Recipients per message; beyond: 452 4.5.3, so the sender retries the rest later.
    pub max_recipients: usize,
    /// STARTTLS is offered only when this is Some.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Idle time allowed waiting for a command line or a DATA chunk.
    pub command_timeout: Duration,
}

/// Serves SMTP on `listener` until `shutdown` turns true (then stops accepting; sessions in
/// progress are ended with 421 at their next command). Spawns one task per connection.
///
/// Returns once every session has ended, so the caller knows no delivery is still running. A
/// dropped shutdown sender counts as a shutdown.
pub async fn serve<S: MailSink>(
    listener: TcpListener,
    settings: Arc<Settings>,
    sink: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = settings
        .max_connections
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(permits));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = signalled(&mut shutdown) => break,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, usually: pause rather than spin on the error.
                warn!(error = %e, "SMTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = address.ip().to_canonical();
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // Never wait on a client here: a non-blocking write of the refusal, then close.
            debug!(%peer, "too many SMTP connections");
            let _ = stream.try_write(b"421 4.7.0 Too many connections\r\n");
            continue;
        };
        let session = session::Session::new(
            stream,
            peer,
            Arc::clone(&settings),
            Arc::clone(&sink),
            shutdown.clone(),
        );
        let span = tracing::debug_span!("smtp", %peer);
        tokio::spawn(
            async move {
                session.run().await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    debug!("SMTP listener stopped accepting; waiting for sessions to end");
    // Each session holds a permit until it ends: having them all back means none is left.
    let _ = slots
        .acquire_many(u32::try_from(permits).unwrap_or(u32::MAX))
        .await;
}

/// Resolves once the shutdown flag is true, or its sender is gone.
async fn signalled(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

#[cfg(test)]
mod tests;
