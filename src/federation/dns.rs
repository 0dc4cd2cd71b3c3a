//! DNS for federation (hickory): the SRV records server discovery reads (`_matrix-fed._tcp`,
//! then the deprecated `_matrix._tcp`), which the system's resolver cannot look up, and, when
//! `[federation] nameservers` names some, every host name federation reaches.
//!
//! Without `nameservers`, host names go through the system's resolver as every other outbound
//! request does (`/etc/hosts`, `nsswitch.conf`), and SRV records through the nameservers of
//! `/etc/resolv.conf`. A server's SRV answer, or its absence, is kept for an hour, so that a
//! request to a server without records (or with a DNS that does not answer) waits for DNS
//! once an hour, not every time; hickory caches the rest for their TTL.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};

use crate::ssrf::NameLookup;

/// How long one DNS question may take, over all attempts.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server's SRV answer (or that it has none) is kept, and for how many servers.
const SRV_LIFETIME: Duration = Duration::from_secs(60 * 60);
const SRV_CAPACITY: usize = 10_000;

/// Where SRV records say a server's federation listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
}

pub(crate) struct Dns {
    /// `None`: the system's configuration could not be read; no SRV records then.
    resolver: Option<TokioResolver>,
    /// Whether host names are looked up here rather than by the system's resolver.
    names_too: bool,
    /// Each server's SRV target, or `None` when it has none.
    targets: parking_lot::Mutex<crate::expiring::ExpiringMap<Option<SrvTarget>>>,
}

impl Dns {
    /// Through `nameservers`, or the system's configuration when there are none.
    pub(crate) fn new(nameservers: &[SocketAddr]) -> Dns {
        let builder = match nameservers {
            [] => TokioResolver::builder_tokio(),
            servers => {
                let servers = servers
                    .iter()
                    .map(|addr| {
                        let on = |protocol| {
                            let mut c = ConnectionConfig::new(protocol);
                            c.port = addr.port();
                            c
                        };
                        NameServerConfig::new(
                            addr.ip(),
                            true,
                            vec![on(ProtocolConfig::Udp), on(ProtocolConfig::Tcp)],
                        )
                    })
                    .collect();
                Ok(TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    TokioRuntimeProvider::default(),
                ))
            }
        };
        let resolver = builder
            .and_then(|mut b| {
                b.options_mut().timeout = TIMEOUT;
                b.options_mut().attempts = 1;
                b.build()
            })
            .inspect_err(|e| {
                tracing::warn!(error = %e, "federation DNS unavailable: no SRV lookups");
            })
            .ok();
        Dns {
            resolver,
            names_too: !nameservers.is_empty(),
            targets: parking_lot::Mutex::new(crate::expiring::ExpiringMap::new(
                SRV_CAPACITY,
                SRV_LIFETIME,
            )),
        }
    }

    /// The target of `host`'s federation SRV records: the lowest priority, and of those the
    /// heaviest weight. `None` without records, or when they say there is no service (`.`).
    pub(crate) async fn srv(&self, host: &str) -> Option<SrvTarget> {
        if let Some(known) = self.targets.lock().get_mut(host) {
            return known.clone();
        }
        let found = self.look_up_srv(host).await;
        self.targets.lock().insert(host.to_owned(), found.clone());
        found
    }

    async fn look_up_srv(&self, host: &str) -> Option<SrvTarget> {
        let resolver = self.resolver.as_ref()?;
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let Ok(answer) = resolver.srv_lookup(format!("{service}.{host}.")).await else {
                continue;
            };
            let best = answer
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some(srv),
                    _ => None,
                })
                .min_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
            if let Some(srv) = best {
                let target = srv.target.to_utf8();
                let target = target.trim_end_matches('.');
                if target.is_empty() {
                    return None;
                }
                return Some(SrvTarget {
                    host: target.to_owned(),
                    port: srv.port,
                });
            }
        }
        None
    }
}

/// Host names through the configured nameservers (`names_too`), or the system's resolver.
pub(crate) struct FederationLookup(pub(crate) Arc<Dns>);

impl NameLookup for FederationLookup {
    fn addresses(&self, host: String) -> crate::ssrf::Lookup {
        let dns = self.0.clone();
        Box::pin(async move {
            match (&dns.resolver, dns.names_too) {
                (Some(resolver), true) => resolver
                    .lookup_ip(format!("{host}."))
                    .await
                    .map(|found| found.iter().collect::<Vec<IpAddr>>())
                    .map_err(std::io::Error::other),
                _ => crate::ssrf::system_lookup(host).await,
            }
        })
    }
}
