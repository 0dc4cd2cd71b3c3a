//! `[federation]`: the Server-Server API's listener, its TLS, and which peers may be reached.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// `[federation]` in `config.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Off by default: a server that federates is reachable by every Matrix server.
    pub enabled: bool,
    /// The TLS listener for the Server-Server API (`/_matrix/federation`, `/_matrix/key`).
    pub listen: SocketAddr,
    /// The certificate chain (PEM) the listener presents: peers check it against the server
    /// name (or the delegated host).
    pub tls_certificate: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_private_key: PathBuf,
    /// Whether peers' certificates are checked; `false` only for test setups.
    pub verify_certificates: bool,
    /// Address ranges (CIDR) no outbound federation request may reach. Synapse's default
    /// private and reserved ranges; `[]` lets a test federate on loopback.
    pub ip_range_blocklist: Vec<String>,
    /// What `/.well-known/matrix/server` delegates to (`matrix.example.com:443`), on the client
    /// listener; empty: no delegation (peers reach `server_name` on port 8448).
    pub well_known_server: String,
    /// Requests one peer server may make per second once authenticated, sustained and in a
    /// burst; more get `429 M_LIMIT_EXCEEDED`.
    pub per_origin_per_second: f64,
    pub per_origin_burst: u32,
    /// Whether other servers may read the public room directory (`/publicRooms`); off by
    /// default, as Synapse's `allow_public_rooms_over_federation`.
    pub public_rooms: bool,
    /// Notaries asked for a server's keys when that server does not answer itself
    /// (`/_matrix/key/v2/query`), as Synapse's `trusted_key_servers`; none by default.
    pub trusted_key_servers: Vec<ruma::OwnedServerName>,
    /// DNS servers (`ip:port`) for federation's lookups, host names and SRV records alike;
    /// empty: the system's (`/etc/resolv.conf`, and its resolver for host names).
    pub nameservers: Vec<SocketAddr>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            enabled: false,
            listen: ([0, 0, 0, 0], 8448).into(),
            tls_certificate: "tls/fullchain.pem".into(),
            tls_private_key: "tls/privkey.pem".into(),
            verify_certificates: true,
            ip_range_blocklist: crate::ssrf::DEFAULT_BLOCKED
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            well_known_server: String::new(),
            per_origin_per_second: 50.0,
            per_origin_burst: 500,
            public_rooms: false,
            trusted_key_servers: Vec::new(),
            nameservers: Vec::new(),
        }
    }
}

impl FederationConfig {
    /// Checks what can be checked without the files: the ranges and the delegation.
    pub(crate) fn validate(&self) -> Result<(), String> {
        crate::ssrf::IpFilter::exactly(&self.ip_range_blocklist)
            .map_err(|e| format!("federation.ip_range_blocklist: {e}"))?;
        if self.per_origin_per_second <= 0.0 || self.per_origin_burst == 0 {
            return Err(
                "federation.per_origin_per_second and per_origin_burst must be positive".into(),
            );
        }
        let delegated = self.well_known_server.trim();
        if !delegated.is_empty() && ruma::ServerName::parse(delegated).is_err() {
            return Err(format!(
                "federation.well_known_server: {delegated:?} is not a host name with an optional port"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_shipped_config_lists_the_default_ranges_and_federation_is_off() {
        let shipped = Config::from_toml(include_str!("../../config.toml")).unwrap();
        let default = FederationConfig::default();
        assert_eq!(
            shipped.federation.ip_range_blocklist,
            default.ip_range_blocklist
        );
        assert!(!shipped.federation.enabled);
        assert_eq!(shipped.federation.listen, default.listen);
    }
}
