//! SPF, DKIM and DMARC of inbound mail, with Stalwart's `mail-auth`, shown to agents.
//!
//! A mail's `From` is the sender's claim. Agents answer customers about their orders and
//! accounts, so they must see when a mail's claim is not backed by its domain: the results go
//! with the message into the room (`io.charla.email.auth`, the `Authentication-Results` line)
//! and a failed DMARC check is said in a notice. Nothing is refused for it: a customer whose
//! provider forwards badly still gets an answer; the agent knows to be careful.
//!
//! Each check is DNS lookups of the sender's domains: bounded by a per-lookup timeout and an
//! overall one, so a slow resolver delays a mail's arrival in Matrix by seconds, never more.

use std::net::SocketAddr;
use std::time::Duration;

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult, dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
};
use serde::{Deserialize, Serialize};

use crate::smtp::Envelope;

/// Longest time the three checks of one mail may take together.
const OVERALL: Duration = Duration::from_secs(10);

/// What the checks found, in the words of RFC 8601 (`pass`, `fail`, `softfail`, `none`,
/// `temperror`, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthSummary {
    pub spf: String,
    pub dkim: String,
    pub dmarc: String,
    /// The `Authentication-Results` header value.
    pub header: String,
}

impl AuthSummary {
    /// Whether the domain in `From` says the mail is not its own.
    pub fn dmarc_failed(&self) -> bool {
        self.dmarc == "fail"
    }
}

pub struct Authenticator {
    inner: MessageAuthenticator,
}

impl Authenticator {
    /// A resolver of `nameservers` (`ip:port`), or of the system's when empty.
    pub fn new(nameservers: &[String]) -> Result<Self, String> {
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(3);
        options.attempts = 1;
        let config = if nameservers.is_empty() {
            match mail_auth::hickory_resolver::system_conf::read_system_conf() {
                Ok((config, _)) => config,
                Err(error) => {
                    return Err(format!("cannot read the system's DNS settings: {error}"));
                }
            }
        } else {
            let servers = nameservers
                .iter()
                .filter_map(|s| s.parse::<SocketAddr>().ok())
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
            ResolverConfig::from_parts(None, Vec::new(), servers)
        };
        let inner = MessageAuthenticator::new(config, options)
            .map_err(|e| format!("bridges.email: DNS resolver: {e}"))?;
        Ok(Self { inner })
    }

    /// Checks `raw` as received from `envelope` by `hostname`.
    pub async fn check(&self, raw: &[u8], envelope: &Envelope, hostname: &str) -> AuthSummary {
        match tokio::time::timeout(OVERALL, self.check_all(raw, envelope, hostname)).await {
            Ok(summary) => summary,
            Err(_) => AuthSummary {
                spf: "temperror".into(),
                dkim: "temperror".into(),
                dmarc: "temperror".into(),
                header: format!("{hostname}; auth=temperror (timed out)"),
            },
        }
    }

    async fn check_all(&self, raw: &[u8], envelope: &Envelope, hostname: &str) -> AuthSummary {
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return AuthSummary {
                spf: "permerror".into(),
                dkim: "permerror".into(),
                dmarc: "permerror".into(),
                header: format!("{hostname}; auth=permerror (not a message)"),
            };
        };
        let helo = envelope.helo.as_str();
        // The MAIL FROM identity (RFC 7208 2.4), which DMARC aligns with; the null sender (bounces) is checked as postmaster@helo (RFC 7208 2.4).
        let postmaster = format!("postmaster@{helo}");
        let sender = if envelope.mail_from.is_empty() {
            postmaster.as_str()
        } else {
            envelope.mail_from.as_str()
        };
        let mail_from_domain = sender.rsplit_once('@').map_or(helo, |(_, d)| d);
        let spf = self
            .inner
            .verify_spf(SpfParameters::verify_mail_from(
                envelope.peer,
                helo,
                hostname,
                sender,
            ))
            .await;
        let dkim = self.inner.verify_dkim(&message).await;
        let dmarc = self
            .inner
            .verify_dmarc(DmarcParameters::new(
                &message,
                &dkim,
                mail_from_domain,
                &spf,
            ))
            .await;
        let header_from = message.from.first().map(String::as_str).unwrap_or_default();
        let header = AuthenticationResults::new(hostname)
            .with_dkim_results(&dkim, header_from)
            .with_spf_mailfrom_result(&spf, envelope.peer, sender, helo)
            .with_dmarc_result(&dmarc)
            .to_string();
        let dkim_word = if dkim.iter().any(|d| d.result() == &DkimResult::Pass) {
            "pass"
        } else {
            dkim.first().map_or("none", |d| dkim_word(d.result()))
        };
        // RFC 7489 6.6.2: with a policy record, a mail passes only by an aligned SPF or DKIM
        // pass; neither (both `None` in mail-auth's output) is a failure.
        let dmarc_word = match (dmarc.spf_result(), dmarc.dkim_result()) {
            (DmarcResult::Pass, _) | (_, DmarcResult::Pass) => "pass",
            (DmarcResult::TempError(_), _) | (_, DmarcResult::TempError(_)) => "temperror",
            (DmarcResult::PermError(_), _) | (_, DmarcResult::PermError(_)) => "permerror",
            _ if dmarc.dmarc_record().is_none() => "none",
            _ => "fail",
        };
        AuthSummary {
            spf: spf_word(spf.result()).into(),
            dkim: dkim_word.into(),
            dmarc: dmarc_word.into(),
            header: header.trim().to_owned(),
        }
    }
}

fn spf_word(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_word(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}
