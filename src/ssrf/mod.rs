//! Requests the server makes to URLs its users chose (URL previews, push gateways), guarded so
//! that no user can make the server reach what it must not: the loopback interface, the private
//! network it sits in, a cloud metadata service (server-side request forgery).
//!
//! One mechanism for every such request: a [`GuardedClient`] checks each URL it is given (only
//! `http(s)`, a literal IP must pass the [`IpFilter`]) and resolves host names through a resolver
//! that refuses a name if any of its addresses is blocked, so the addresses checked are the
//! addresses connected to (no DNS rebinding between a check and the connect). It never follows
//! redirects and never uses a proxy (a proxy would connect on our behalf to addresses the
//! filter never sees); a caller that follows redirects (previews) checks every hop's URL again.
//! Federation looks host names up through its own DNS ([`NameLookup`]), under the same filter.

mod ip_filter;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

pub use ip_filter::{DEFAULT_BLOCKED, IpFilter};

/// Why a request was not made or failed before an answer.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("IP address {0} is blocked")]
    BlockedAddress(IpAddr),
    #[error("DNS resolution refused or failed for {0}")]
    Resolve(String),
}

/// The failure the resolver reports for a name with a blocked address, or none.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolution refused or failed for {0}")]
struct ResolveRefused(String);

/// A host's addresses, looked up.
pub type Lookup =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// How a client finds a host's addresses: the system's resolver unless told otherwise
/// (federation may use nameservers of its own).
pub trait NameLookup: Send + Sync + 'static {
    fn addresses(&self, host: String) -> Lookup;
}

/// The system's resolver (`getaddrinfo`: `/etc/hosts`, `nsswitch.conf`).
pub fn system_lookup(host: String) -> Lookup {
    Box::pin(async move {
        Ok(tokio::net::lookup_host((host.as_str(), 0))
            .await?
            .map(|a| a.ip())
            .collect())
    })
}

struct SystemLookup;

impl NameLookup for SystemLookup {
    fn addresses(&self, host: String) -> Lookup {
        system_lookup(host)
    }
}

/// Resolves host names, refusing any name one of whose addresses is blocked; with
/// `connect_to`, every name resolves as that host does (an SRV record's target, reached under
/// the name the certificate must hold).
struct FilteringResolver {
    filter: Arc<IpFilter>,
    lookup: Arc<dyn NameLookup>,
    connect_to: Option<String>,
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let filter = self.filter.clone();
        let host = self
            .connect_to
            .clone()
            .unwrap_or_else(|| name.as_str().to_owned());
        let lookup = self.lookup.addresses(host.clone());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup
                .await
                .map_err(|_| ResolveRefused(host.clone()))?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if addrs.is_empty() || addrs.iter().any(|a| filter.is_blocked(a.ip())) {
                tracing::info!(%host, "outbound request: host resolves to a blocked address");
                return Err(ResolveRefused(host).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// An HTTP client that only reaches addresses its filter allows.
pub struct GuardedClient {
    http: reqwest::Client,
    filter: Arc<IpFilter>,
}

impl GuardedClient {
    /// `user_agent` says what makes the request; `timeout` bounds a whole request (`None`: the
    /// caller bounds it).
    pub fn new(filter: IpFilter, user_agent: &str, timeout: Option<Duration>) -> Self {
        Self::with_tls(filter, user_agent, timeout, true)
    }

    /// As [`GuardedClient::new`]; `verify_certificates = false` accepts any certificate, for
    /// federation test setups with self-signed ones (`[federation] verify_certificates`).
    pub fn with_tls(
        filter: IpFilter,
        user_agent: &str,
        timeout: Option<Duration>,
        verify_certificates: bool,
    ) -> Self {
        Self::with_lookup(
            Arc::new(filter),
            (Arc::new(SystemLookup), None),
            user_agent,
            timeout,
            verify_certificates,
        )
    }

    /// As [`GuardedClient::with_tls`], looking host names up with `lookup`, and connecting to
    /// `connect_to`'s addresses whatever the URL's host when it is given.
    pub fn with_lookup(
        filter: Arc<IpFilter>,
        (lookup, connect_to): (Arc<dyn NameLookup>, Option<String>),
        user_agent: &str,
        timeout: Option<Duration>,
        verify_certificates: bool,
    ) -> Self {
        let resolver = FilteringResolver {
            filter: filter.clone(),
            lookup,
            connect_to,
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .connect_timeout(Duration::from_secs(15))
            .tls_danger_accept_invalid_certs(!verify_certificates)
            .user_agent(user_agent);
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        // Building fails only for a TLS backend that cannot start, which no request could use.
        let http = builder.build().unwrap_or_else(|_| reqwest::Client::new());
        GuardedClient { http, filter }
    }

    /// Checks `url` (scheme, host, a literal IP against the filter) and starts a request to it.
    /// Send it with [`GuardedClient::send`].
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &Url,
    ) -> Result<reqwest::RequestBuilder, Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme);
        }
        let host = url.host_str().ok_or(Refused::NoHost)?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>()
            && self.filter.is_blocked(ip)
        {
            tracing::info!(%ip, "outbound request: blocked literal address");
            return Err(Refused::BlockedAddress(ip));
        }
        Ok(self.http.request(method, url.clone()))
    }

    /// Whether a failed request failed because the resolver refused its host.
    pub fn refused_by_resolver(error: &reqwest::Error) -> Option<Refused> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(err) = source {
            if let Some(refused) = err.downcast_ref::<ResolveRefused>() {
                return Some(Refused::Resolve(refused.0.clone()));
            }
            source = err.source();
        }
        None
    }
}

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the cap (declared, or read so far).
    TooLarge,
    Failed(reqwest::Error),
}

/// A response's body, refused once it is larger than `limit` bytes: by its declared length
/// before anything is read, else as soon as the chunks read pass it. What a server at a
/// user-chosen (or peer-chosen) address sends is read only this far.
pub async fn read_capped(
    response: &mut reqwest::Response,
    limit: u64,
) -> Result<bytes::Bytes, BodyError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Failed)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
