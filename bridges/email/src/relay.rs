//! The outbound relay: where agents' answers are handed over by SMTP, with lettre.
//!
//! The bridge never delivers to customers' MX hosts itself: a relay (the organisation's MTA, or
//! a provider's submission service) does, with its reputation, DKIM signing and queue. So the
//! bridge's outbox only has to get each mail accepted by one server, and to tell the relay's
//! two kinds of "no" apart: a `4xx` or a dropped connection is tried again later, a `5xx` is
//! the final answer and is shown to the agents with the relay's reason.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::EmailConfig;

/// How the relay is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayUrl {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Security {
    /// `smtps://`: TLS from the first byte (port 465).
    Implicit,
    /// `smtp://`: STARTTLS when the relay offers it.
    Opportunistic,
    /// `smtp+plain://`: never TLS (a relay on loopback or a private network).
    Plain,
}

impl RelayUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (security, rest, default_port) = if let Some(rest) = url.strip_prefix("smtps://") {
            (Security::Implicit, rest, 465)
        } else if let Some(rest) = url.strip_prefix("smtp://") {
            (Security::Opportunistic, rest, 25)
        } else if let Some(rest) = url.strip_prefix("smtp+plain://") {
            (Security::Plain, rest, 25)
        } else {
            return Err(format!(
                "{url:?} must start with smtp://, smtps:// or smtp+plain://"
            ));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
            return Err(format!("{url:?} must be scheme://host[:port]"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                match port.parse::<u16>() {
                    Ok(port) => (host, port),
                    Err(_) => return Err(format!("{url:?}: the port is not a number")),
                }
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            security,
        })
    }
}

/// Why a mail was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    /// Try again later: a `4xx`, or the relay could not be reached or dropped the connection.
    #[error("{0}")]
    Transient(String),
    /// The relay's final refusal (`5xx`), or a mail that cannot be sent as it is.
    #[error("{0}")]
    Permanent(String),
}

/// The SMTP client of the relay; connections are pooled and reused.
pub struct Relay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Relay {
    pub fn new(config: &EmailConfig) -> Result<Self, String> {
        let url = RelayUrl::parse(&config.smtp_relay)?;
        let tls =
            |host: &str| TlsParameters::new(host.to_owned()).map_err(|e| format!("relay TLS: {e}"));
        let security = match url.security {
            Security::Implicit => Tls::Wrapper(tls(&url.host)?),
            Security::Opportunistic => Tls::Opportunistic(tls(&url.host)?),
            Security::Plain => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&url.host)
            .port(url.port)
            .tls(security)
            .timeout(Some(Duration::from_secs(60)))
            .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
                config.smtp_hostname(),
            ))
            .pool_config(
                lettre::transport::smtp::PoolConfig::new()
                    .max_size(config.send_concurrency.min(u32::MAX as usize) as u32),
            );
        if !config.smtp_username.is_empty() {
            let password = config.smtp_password.clone().unwrap_or_default();
            builder = builder.credentials(Credentials::new(config.smtp_username.clone(), password));
        }
        Ok(Self {
            transport: builder.build(),
        })
    }

    /// Hands `message` (a whole RFC 5322 message) to the relay for `to`, from `from` (the
    /// envelope's reverse path, where bounces come back). Returns the relay's answer.
    pub async fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<String, RelayError> {
        let parse = |address: &str| {
            address
                .parse::<lettre::Address>()
                .map_err(|e| RelayError::Permanent(format!("{address}: {e}")))
        };
        let envelope = Envelope::new(Some(parse(from)?), vec![parse(to)?])
            .map_err(|e| RelayError::Permanent(e.to_string()))?;
        match self.transport.send_raw(&envelope, message).await {
            Ok(response) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Err(error) if error.is_permanent() => Err(RelayError::Permanent(error.to_string())),
            Err(error) => Err(RelayError::Transient(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let url = RelayUrl::parse("smtp://127.0.0.1:2526").unwrap();
        assert_eq!(url.host, "127.0.0.1");
        assert_eq!(url.port, 2526);
        assert_eq!(url.security, Security::Opportunistic);
        let url = RelayUrl::parse("smtps://mail.example.com").unwrap();
        assert_eq!((url.port, url.security), (465, Security::Implicit));
        let url = RelayUrl::parse("smtp+plain://[::1]:25").unwrap();
        assert_eq!(url.host, "::1");
        assert!(RelayUrl::parse("http://x").is_err());
        assert!(RelayUrl::parse("smtp://").is_err());
        assert!(RelayUrl::parse("smtp://user@host").is_err());
        assert!(RelayUrl::parse("smtp://host:port").is_err());
    }
}
