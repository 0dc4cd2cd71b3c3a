//! `[bridges.email]`: the bridge's settings. The same table serves the bridge inside
//! `charla serve` and alone (`charla bridge email`); the keys only the standalone mode reads
//! say so.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The environment variable that holds the relay's SMTP password: never in the config file,
/// which is often readable by more people than the password should be.
pub const PASSWORD_ENV: &str = "CHARLA_EMAIL_SMTP_PASSWORD";

/// Localpart prefix of the customers' puppets: `@email_<hash of the address>:server`.
pub const PUPPET_PREFIX: &str = "email_";

/// The bridge's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `charla serve` runs the bridge in process when true.
    pub enabled: bool,
    /// The desk's address: mail to it (or to `local+tag@domain`) opens conversations, and
    /// agents' answers go out from it.
    pub address: String,
    /// Shown after the agent's name in `From`: "Ana (Support)".
    pub display_name: String,
    /// Inbound: the SMTP listener your MTA relays (or MX delivers) to.
    pub smtp_listen: String,
    /// Outbound: `smtp://host:port` (STARTTLS when the relay offers it) or `smtps://host:port`
    /// (implicit TLS). `smtp+plain://host:port` never starts TLS (a relay on loopback).
    pub smtp_relay: String,
    /// The relay's user; the password is in the environment (`CHARLA_EMAIL_SMTP_PASSWORD`).
    pub smtp_username: String,
    /// Optional inbound from a provider's mailbox (`imaps://host:993/INBOX`). Not built yet:
    /// a non-empty value is refused at start rather than ignored.
    pub imap_url: String,
    /// Matrix users invited to every new conversation room.
    pub invite: Vec<String>,
    /// Matrix users whose messages are automatic replies (a support bot's greeting and FAQ
    /// answers): sent with `Auto-Submitted: auto-replied` (RFC 3834), so customers'
    /// auto-responders do not answer them. Inside `charla serve` the support bot is added.
    pub automatic_senders: Vec<String>,
    /// The largest mail taken in (advertised as SIZE) and sent out.
    pub max_message_bytes: usize,
    /// The SMTP listener's name in its greeting and `Received:` lines. Empty: the desk
    /// address's domain.
    pub hostname: String,
    /// STARTTLS certificate chain and key (PEM) of the listener. Empty: the federation's
    /// (`[federation] tls_certificate`) when `charla serve` has one, else no STARTTLS.
    pub tls_certificate: PathBuf,
    pub tls_private_key: PathBuf,
    /// Mails one sender address may send per hour before the listener answers `450` (their
    /// MTA retries later), after a burst of `mails_per_sender_burst`.
    pub mails_per_sender_per_hour: u32,
    pub mails_per_sender_burst: u32,
    /// Concurrent SMTP sessions.
    pub max_connections: usize,
    /// Check SPF, DKIM and DMARC of inbound mail (DNS lookups) and show the results to agents.
    pub authenticate: bool,
    /// DNS servers (`ip:port`) for those checks. Empty: the system's.
    pub nameservers: Vec<String>,
    /// Mails sent to the relay at the same time (to different conversations; one
    /// conversation's mails always go one after the other).
    pub send_concurrency: usize,
    /// Longest wait between two attempts of a mail the relay refused for now or could not
    /// be reached for.
    pub max_retry_secs: u64,
    /// Give up on a mail the relay keeps refusing for now after this long (shown failed).
    pub give_up_after_secs: u64,
    /// Folder of the bridge's own state. Empty: `bridges/email` in charla's data folder.
    pub state_path: PathBuf,
    /// Localpart of the bridge bot (`@emailbot:server`).
    pub bot_localpart: String,
    /// Standalone only: address of the bridge's own HTTP listener (appservice transactions).
    pub listen: String,
    /// Standalone only: the homeserver's URL. Empty: charla's public base URL.
    pub homeserver_url: String,
    /// Standalone only: the registration file to write. Empty: `registration.yaml` in the
    /// state folder.
    pub registration: PathBuf,
    /// The relay password, read from the environment at load; never from the file.
    #[serde(skip)]
    pub smtp_password: Option<String>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            address: "support@example.com".into(),
            display_name: "Support".into(),
            smtp_listen: "127.0.0.1:2525".into(),
            smtp_relay: "smtp://127.0.0.1:25".into(),
            smtp_username: String::new(),
            imap_url: String::new(),
            invite: Vec::new(),
            automatic_senders: Vec::new(),
            max_message_bytes: 26_214_400,
            hostname: String::new(),
            tls_certificate: PathBuf::new(),
            tls_private_key: PathBuf::new(),
            mails_per_sender_per_hour: 60,
            mails_per_sender_burst: 20,
            max_connections: 256,
            authenticate: true,
            nameservers: Vec::new(),
            send_concurrency: 64,
            max_retry_secs: 300,
            give_up_after_secs: 2 * 24 * 3600,
            state_path: PathBuf::new(),
            bot_localpart: "emailbot".into(),
            listen: "127.0.0.1:29319".into(),
            homeserver_url: String::new(),
            registration: PathBuf::new(),
            smtp_password: None,
        }
    }
}

impl EmailConfig {
    /// Reads what the environment holds (the relay password).
    pub fn apply_env(&mut self) {
        self.smtp_password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    }

    /// Checks what the bridge cannot run without, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let Some((local, domain)) = self.address.rsplit_once('@') else {
            return Err("bridges.email.address must be an address (support@example.com)".into());
        };
        if local.is_empty() || local.contains('+') || domain.is_empty() {
            return Err(
                "bridges.email.address must be a plain address without a +tag (support@example.com)"
                    .into(),
            );
        }
        if self.smtp_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err("bridges.email.smtp_listen must be ip:port (127.0.0.1:2525)".into());
        }
        crate::relay::RelayUrl::parse(&self.smtp_relay)
            .map_err(|e| format!("bridges.email.smtp_relay: {e}"))?;
        if !self.imap_url.is_empty() {
            return Err(
                "bridges.email.imap_url: IMAP inbound is not built yet; relay mail to smtp_listen"
                    .into(),
            );
        }
        if self.max_message_bytes < 1024 {
            return Err("bridges.email.max_message_bytes must be at least 1024".into());
        }
        if self.send_concurrency == 0 || self.max_connections == 0 {
            return Err(
                "bridges.email.send_concurrency and max_connections must be positive".into(),
            );
        }
        if self.tls_certificate.as_os_str().is_empty()
            != self.tls_private_key.as_os_str().is_empty()
        {
            return Err("bridges.email.tls_certificate and tls_private_key go together".into());
        }
        for server in &self.nameservers {
            if server.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "bridges.email.nameservers: {server} is not ip:port"
                ));
            }
        }
        Ok(())
    }

    /// The desk address's domain (lowercase): Message-IDs of answers end in it.
    pub fn domain(&self) -> String {
        self.address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// The listener's name.
    pub fn smtp_hostname(&self) -> String {
        if self.hostname.is_empty() {
            self.domain()
        } else {
            self.hostname.clone()
        }
    }

    /// Whether `address` is the desk's: the address itself or `local+tag@domain`, the domain
    /// compared without case (the local part as RFC 5321 says: exactly, but for case, which
    /// every real mailbox ignores).
    pub fn is_desk_address(&self, address: &str) -> bool {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let Some((desk_local, desk_domain)) = self.address.rsplit_once('@') else {
            return false;
        };
        let local = local.split_once('+').map_or(local, |(base, _)| base);
        domain.eq_ignore_ascii_case(desk_domain) && local.eq_ignore_ascii_case(desk_local)
    }

    pub fn max_retry(&self) -> Duration {
        Duration::from_secs(self.max_retry_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_desk_takes_its_address_and_tagged_ones_only() {
        let config = EmailConfig {
            address: "support@example.com".into(),
            ..EmailConfig::default()
        };
        assert!(config.is_desk_address("support@example.com"));
        assert!(config.is_desk_address("Support@EXAMPLE.com"));
        assert!(config.is_desk_address("support+billing@example.com"));
        assert!(!config.is_desk_address("sales@example.com"));
        assert!(!config.is_desk_address("support@example.org"));
        assert!(!config.is_desk_address("support"));
        assert!(!config.is_desk_address("supportx+a@example.com"));
    }

    #[test]
    fn validation_names_the_key_at_fault() {
        let bad = |change: fn(&mut EmailConfig)| {
            let mut config = EmailConfig::default();
            change(&mut config);
            config.validate().unwrap_err()
        };
        assert!(EmailConfig::default().validate().is_ok());
        assert!(bad(|c| c.address = "support".into()).contains("bridges.email.address"));
        assert!(bad(|c| c.smtp_listen = "nowhere".into()).contains("smtp_listen"));
        assert!(bad(|c| c.smtp_relay = "http://x".into()).contains("smtp_relay"));
        assert!(bad(|c| c.imap_url = "imaps://h/INBOX".into()).contains("imap_url"));
    }
}
