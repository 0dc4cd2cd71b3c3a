//! `[bridges.whatsapp]`: the bridge's settings. The same table serves the bridge inside
//! `charla serve` and alone (`charla bridge whatsapp`); the keys only the standalone mode reads
//! say so.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The bridge's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// `charla serve` runs the bridge in process when true.
    pub enabled: bool,
    /// Graph API base, version included (`https://graph.facebook.com/v21.0`).
    pub api_base: String,
    /// The business phone number's id: where messages are sent from.
    pub phone_number_id: String,
    /// System user access token (bearer of every Graph API call).
    pub access_token: String,
    /// App secret: key of the webhook's `X-Hub-Signature-256` HMAC.
    pub app_secret: String,
    /// Token Meta echoes in the webhook verification handshake.
    pub verify_token: String,
    /// Matrix users invited to every new portal room.
    pub invite: Vec<String>,
    /// Folder of the bridge's own state (its database, registration file). Empty: `bridges/whatsapp`
    /// inside charla's data folder.
    pub state_path: PathBuf,
    /// `!template NAME` for these names is answered by the support bot, not sent to WhatsApp.
    pub bot_templates: Vec<String>,
    /// Language of the bridge's notices to agents (`en` or `es`), unless a room's conversation
    /// names its own.
    pub language: String,
    /// Language code of template messages sent with `!template`.
    pub template_language: String,
    /// Localpart of the bridge bot (`@whatsappbot:server`).
    pub bot_localpart: String,
    /// Longest wait between two attempts: of a queued message while WhatsApp is unreachable,
    /// and of the inbox while the homeserver is unreachable or refuses a customer's messages
    /// (they are kept and retried; see `inbox`).
    pub max_retry_secs: u64,
    /// Messages sent to WhatsApp at the same time (to different customers; one customer's
    /// messages always go one after the other). Throughput is at most this divided by the
    /// Cloud API's answer time (which includes the outbox removal's sync), so the default
    /// keeps the 1,000 a second ceiling with answers of up to 250 ms.
    pub send_concurrency: usize,
    /// The number's throughput ceiling: sends (messages and read marks) per second. Meta's
    /// Cloud API allows up to 1,000 for upgraded numbers; set 80 for a number on the default
    /// tier. Going above it earns `130429` refusals and pauses.
    pub sends_per_second: f64,
    /// How long WhatsApp's `sent` status may take before the bridge shows the Cloud API's
    /// acceptance of an agent's message on its own (`com.beeper.message_send_status`
    /// `SUCCESS`). `sent` (the bridge bot's receipt) says more and normally follows within a
    /// second, so the acceptance costs the homeserver a write only when it does not. 0: show
    /// every acceptance at once.
    pub acceptance_wait_ms: u64,
    /// Standalone only: address of the bridge's own listener.
    pub listen: String,
    /// Standalone only: the homeserver's URL. Empty: charla's public base URL.
    pub homeserver_url: String,
    /// Standalone only: the registration file to write (and give to the homeserver). Empty:
    /// `registration.yaml` in `state_path`.
    pub registration: PathBuf,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            api_base: "https://graph.facebook.com/v21.0".into(),
            phone_number_id: String::new(),
            access_token: String::new(),
            app_secret: String::new(),
            verify_token: String::new(),
            invite: Vec::new(),
            state_path: PathBuf::new(),
            bot_templates: Vec::new(),
            language: "en".into(),
            template_language: "en_US".into(),
            bot_localpart: "whatsappbot".into(),
            max_retry_secs: 30,
            send_concurrency: 256,
            sends_per_second: 1000.0,
            acceptance_wait_ms: 2000,
            listen: "127.0.0.1:29318".into(),
            homeserver_url: String::new(),
            registration: PathBuf::new(),
        }
    }
}

/// Localpart prefix of puppets: `@whatsapp_<wa_id>:server`.
pub const PUPPET_PREFIX: &str = "whatsapp_";

impl BridgeConfig {
    /// Checks what the bridge cannot run without.
    pub fn validate(&self) -> Result<(), String> {
        let missing: Vec<&str> = [
            ("api_base", &self.api_base),
            ("phone_number_id", &self.phone_number_id),
            ("access_token", &self.access_token),
            ("app_secret", &self.app_secret),
            ("verify_token", &self.verify_token),
        ]
        .into_iter()
        .filter(|(_, v)| v.trim().is_empty())
        .map(|(k, _)| k)
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "bridges.whatsapp needs {} when enabled",
                missing.join(", ")
            ));
        }
        if !matches!(self.language.as_str(), "en" | "es") {
            return Err("bridges.whatsapp.language must be \"en\" or \"es\"".into());
        }
        if self.send_concurrency == 0 {
            return Err("bridges.whatsapp.send_concurrency must be positive".into());
        }
        if !(self.sends_per_second.is_finite() && self.sends_per_second > 0.0) {
            return Err("bridges.whatsapp.sends_per_second must be positive".into());
        }
        Ok(())
    }

    pub fn acceptance_wait(&self) -> Duration {
        Duration::from_millis(self.acceptance_wait_ms)
    }

    pub fn max_retry(&self) -> Duration {
        Duration::from_secs(self.max_retry_secs.max(1))
    }
}
