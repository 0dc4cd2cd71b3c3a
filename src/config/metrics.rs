//! `[metrics]`: the Prometheus endpoint, on a listener of its own.
//!
//! Its own address because it answers without authentication: an operator binds it to
//! loopback or a monitoring network, never to where the Client-Server API is public.

use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether `charla serve` opens the metrics listener at all.
    pub enabled: bool,
    /// Address of the listener serving `GET /metrics`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: ([127, 0, 0, 1], 9108).into(),
        }
    }
}

impl MetricsConfig {
    /// Refuses a listener on the server's own address: one of the two could not bind, and the
    /// unauthenticated metrics would sit where clients are served.
    pub(crate) fn validate(&self, server_listen: SocketAddr) -> Result<(), String> {
        if self.enabled && self.listen.port() != 0 && self.listen == server_listen {
            return Err(format!(
                "metrics.listen ({}) must differ from server.listen",
                self.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn metrics_are_off_by_default_on_loopback() {
        let config = Config::from_toml(include_str!("../../config.toml")).unwrap();
        assert!(!config.metrics.enabled);
        assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:9108");
    }

    #[test]
    fn unknown_keys_and_the_servers_own_address_are_refused() {
        let err = Config::from_toml("server_name = \"a\"\n[metrics]\nport = 1\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        let err = Config::from_toml(
            "server_name = \"a\"\n[server]\nlisten = \"127.0.0.1:8008\"\n\
             [metrics]\nenabled = true\nlisten = \"127.0.0.1:8008\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("metrics.listen"), "{err}");
    }
}
