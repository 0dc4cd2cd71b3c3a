//! Requests to other servers: where a server name is reached, signed with `X-Matrix`, over TLS
//! that checks the peer's certificate (unless `[federation] verify_certificates = false`), never
//! to an address of `[federation] ip_range_blocklist`.
//!
//! Where a server is reached (spec v1.16, "Resolving server names"), in this order: an IP
//! literal, with its port or 8448; a host name with an explicit port; the host's
//! `/.well-known/matrix/server` delegation (cached for a day, a failure for an hour), whose
//! answer is an IP literal, a name with a port, or a name whose SRV records are read; the
//! host's SRV records (`_matrix-fed._tcp`, then `_matrix._tcp`: `dns.rs`); the host on port
//! 8448. Through an SRV record the request goes to the target's addresses and port, but names
//! the host (TLS server name, certificate, `Host`), as the spec requires.

use std::{sync::Arc, time::Duration};

use parking_lot::Mutex;
use reqwest::{Method, Url};
use ruma::{CanonicalJsonValue, OwnedServerName, ServerName};
use serde_json::Value;

use super::xmatrix::SignedRequest;
use crate::{
    events::SigningKey,
    expiring::ExpiringMap,
    ssrf::{GuardedClient, read_capped},
};

/// The port a server without delegation or explicit port listens on.
const DEFAULT_PORT: u16 = 8448;
/// How long a whole request to a peer may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `.well-known` answer, and a failure to get one, is kept.
const WELL_KNOWN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
const WELL_KNOWN_FAILURE: Duration = Duration::from_secs(60 * 60);
/// Most servers whose delegation is remembered.
const WELL_KNOWN_CAPACITY: usize = 10_000;
/// Largest answer read from a peer.
const MAX_ANSWER: u64 = 4 << 20;
/// Largest `.well-known` answer read (Synapse reads 50 kB).
const MAX_WELL_KNOWN: u64 = 50 << 10;

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("cannot reach {0}: {1}")]
    Unreachable(OwnedServerName, String),
    #[error("{0} answered {1}: {2}")]
    Status(OwnedServerName, u16, Value),
    #[error("{0} answered what is not JSON, or too much")]
    BadAnswer(OwnedServerName),
}

/// Most SRV targets whose clients are kept.
const SRV_CLIENTS: usize = 1_000;
/// How long a client for an SRV target is kept (the DNS answer itself is cached for its TTL).
const SRV_CLIENT_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Where a server is reached: the URL's authority (`host:port`), whose host is also the name
/// its certificate must hold, and the host actually connected to when an SRV record names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) authority: String,
    pub(crate) via: Option<String>,
}

pub(crate) struct FederationClient {
    http: Arc<GuardedClient>,
    /// Clients that connect to an SRV record's target, by target.
    via_srv: Mutex<ExpiringMap<Arc<GuardedClient>>>,
    filter: Arc<crate::ssrf::IpFilter>,
    dns: Arc<super::dns::Dns>,
    verify_certificates: bool,
    key: Arc<SigningKey>,
    /// Each host's delegation (`None`: it has none, or it failed), for a while.
    delegations: Mutex<ExpiringMap<(Option<String>, std::time::Instant)>>,
}

impl FederationClient {
    pub(crate) fn new(
        config: &crate::config::FederationConfig,
        key: Arc<SigningKey>,
    ) -> Result<Self, String> {
        let filter = Arc::new(crate::ssrf::IpFilter::exactly(&config.ip_range_blocklist)?);
        let dns = Arc::new(super::dns::Dns::new(&config.nameservers));
        let verify_certificates = config.verify_certificates;
        let http = Arc::new(http_client(&filter, &dns, None, verify_certificates));
        Ok(FederationClient {
            http,
            via_srv: Mutex::new(ExpiringMap::new(SRV_CLIENTS, SRV_CLIENT_LIFETIME)),
            filter,
            dns,
            verify_certificates,
            key,
            delegations: Mutex::new(ExpiringMap::new(WELL_KNOWN_CAPACITY, WELL_KNOWN_LIFETIME)),
        })
    }

    /// Where `server` is reached.
    pub(crate) async fn resolve(&self, server: &ServerName) -> Destination {
        if let Some(authority) = explicit(server.as_str()) {
            return Destination {
                authority,
                via: None,
            };
        }
        let host = server.host();
        let cached = self
            .delegations
            .lock()
            .get_mut(host)
            .and_then(|(d, until)| (std::time::Instant::now() < *until).then(|| d.clone()));
        let delegated = match cached {
            Some(delegated) => delegated,
            None => {
                let found = self.well_known(host).await;
                let keep = match found {
                    Some(_) => WELL_KNOWN_LIFETIME,
                    None => WELL_KNOWN_FAILURE,
                };
                let until = std::time::Instant::now() + keep;
                self.delegations
                    .lock()
                    .insert(host.to_owned(), (found.clone(), until));
                found
            }
        };
        match delegated {
            Some(delegated) => match explicit(&delegated) {
                Some(authority) => Destination {
                    authority,
                    via: None,
                },
                None => self.by_srv(&delegated).await,
            },
            None => self.by_srv(host).await,
        }
    }

    /// Where `host` (a name without a port) is reached: its SRV record's target and port, or
    /// port 8448 of its own addresses.
    async fn by_srv(&self, host: &str) -> Destination {
        match self.dns.srv(host).await {
            Some(target) => Destination {
                authority: format!("{host}:{}", target.port),
                via: (target.host != host).then_some(target.host),
            },
            None => Destination {
                authority: format!("{host}:{DEFAULT_PORT}"),
                via: None,
            },
        }
    }

    /// The client for `destination`: one connecting to its SRV target, or the usual one.
    fn http_for(&self, destination: &Destination) -> Arc<GuardedClient> {
        let Some(target) = &destination.via else {
            return self.http.clone();
        };
        let mut clients = self.via_srv.lock();
        if let Some(client) = clients.get_mut(target) {
            return client.clone();
        }
        let client = Arc::new(http_client(
            &self.filter,
            &self.dns,
            Some(target.clone()),
            self.verify_certificates,
        ));
        clients.insert(target.clone(), client.clone());
        client
    }

    /// `m.server` of `https://<host>/.well-known/matrix/server`, when it names a server.
    async fn well_known(&self, host: &str) -> Option<String> {
        let url = Url::parse(&format!("https://{host}/.well-known/matrix/server")).ok()?;
        let mut response = self
            .http
            .request(Method::GET, &url)
            .ok()?
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = read_capped(&mut response, MAX_WELL_KNOWN).await.ok()?;
        let answer: Value = serde_json::from_slice(&body).ok()?;
        let delegated = answer.get("m.server")?.as_str()?;
        ServerName::parse(delegated).ok().map(|s| s.to_string())
    }

    /// `GET path` on `server`, unsigned (the key server's documents sign themselves).
    pub(crate) async fn get_unsigned(
        &self,
        server: &ServerName,
        path: &str,
    ) -> Result<Value, PeerError> {
        self.send(server, Method::GET, path, None, false).await
    }

    /// `method path` on `server` with `body`, signed by this server.
    pub(crate) async fn send_signed(
        &self,
        server: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, PeerError> {
        self.send(server, method, path, body, true).await
    }

    /// [`send_signed`](Self::send_signed) for an answer that may be larger than most: a
    /// room's whole state and auth chain (`send_join`), up to `limit` bytes.
    pub(crate) async fn send_signed_large(
        &self,
        server: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
        limit: u64,
    ) -> Result<Value, PeerError> {
        self.send_limited(server, method, path, body, true, limit)
            .await
    }

    async fn send(
        &self,
        server: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
        signed: bool,
    ) -> Result<Value, PeerError> {
        self.send_limited(server, method, path, body, signed, MAX_ANSWER)
            .await
    }

    async fn send_limited(
        &self,
        server: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
        signed: bool,
        limit: u64,
    ) -> Result<Value, PeerError> {
        let (status, _, body) = self
            .exchange(server, method, path, body, signed, limit)
            .await?;
        let value: Value =
            serde_json::from_slice(&body).map_err(|_| PeerError::BadAnswer(server.to_owned()))?;
        if !status.is_success() {
            return Err(PeerError::Status(server.to_owned(), status.as_u16(), value));
        }
        Ok(value)
    }

    /// `GET path` on `server`, signed, answered with anything up to `limit` bytes: its
    /// headers and body (media). A JSON error answer is [`PeerError::Status`].
    pub(crate) async fn get_bytes(
        &self,
        server: &ServerName,
        path: &str,
        limit: u64,
    ) -> Result<(reqwest::header::HeaderMap, bytes::Bytes), PeerError> {
        let (status, headers, body) = self
            .exchange(server, Method::GET, path, None, true, limit)
            .await?;
        if !status.is_success() {
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(PeerError::Status(server.to_owned(), status.as_u16(), value));
        }
        Ok((headers, body))
    }

    /// One request to `server`: resolved, signed when `signed`, the answer read up to `limit`.
    async fn exchange(
        &self,
        server: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
        signed: bool,
        limit: u64,
    ) -> Result<
        (
            reqwest::StatusCode,
            reqwest::header::HeaderMap,
            bytes::Bytes,
        ),
        PeerError,
    > {
        let unreachable =
            |e: &dyn std::fmt::Display| PeerError::Unreachable(server.to_owned(), e.to_string());
        let destination = self.resolve(server).await;
        let url = Url::parse(&format!("https://{}{path}", destination.authority))
            .map_err(|e| unreachable(&e))?;
        let mut request = self
            .http_for(&destination)
            .request(method.clone(), &url)
            .map_err(|e| unreachable(&e))?;
        if signed {
            let content: Option<CanonicalJsonValue> = body
                .map(|b| serde_json::from_value(b.clone()))
                .transpose()
                .map_err(|e| unreachable(&e))?;
            // What the request line carries, as the peer reads it back.
            let uri = match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_owned(),
            };
            let header = SignedRequest {
                method: method.as_str(),
                uri: &uri,
                origin: &self.key.server_name,
                destination: server,
                content: content.as_ref(),
            }
            .sign(&self.key.key_pair)
            .map_err(|e| unreachable(&e))?;
            request = request.header(reqwest::header::AUTHORIZATION, header.to_header());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(|e| unreachable(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(&mut response, limit)
            .await
            .map_err(|_| PeerError::BadAnswer(server.to_owned()))?;
        Ok((status, headers, body))
    }
}

/// A client for federation requests, connecting to `connect_to` whatever the URL's host when
/// it is given.
fn http_client(
    filter: &Arc<crate::ssrf::IpFilter>,
    dns: &Arc<super::dns::Dns>,
    connect_to: Option<String>,
    verify_certificates: bool,
) -> GuardedClient {
    GuardedClient::with_lookup(
        filter.clone(),
        (
            Arc::new(super::dns::FederationLookup(dns.clone())),
            connect_to,
        ),
        concat!("Charla/", env!("CARGO_PKG_VERSION")),
        Some(REQUEST_TIMEOUT),
        verify_certificates,
    )
}

/// `host:port` for a name that says where it is: an IP literal (port 8448 unless given) or a
/// host with an explicit port.
fn explicit(name: &str) -> Option<String> {
    let server = ServerName::parse(name).ok()?;
    if server.is_ip_literal() {
        return Some(match server.port() {
            Some(_) => name.to_owned(),
            None => format!("{name}:{DEFAULT_PORT}"),
        });
    }
    server.port().map(|_| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_say_where_they_are_need_no_lookup() {
        for (name, want) in [
            ("127.0.0.1", Some("127.0.0.1:8448")),
            ("127.0.0.1:9000", Some("127.0.0.1:9000")),
            ("[::1]", Some("[::1]:8448")),
            ("[::1]:9000", Some("[::1]:9000")),
            ("example.com:443", Some("example.com:443")),
            ("example.com", None),
        ] {
            assert_eq!(explicit(name).as_deref(), want, "{name}");
        }
    }
}
