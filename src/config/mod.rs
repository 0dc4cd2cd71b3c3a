//! `config.toml`: what an operator can set, with the defaults `charla serve` runs on.
//!
//! Every key is documented in the shipped `config.toml`; this module only parses and validates.
//! Relative paths are resolved against the config file's folder so that `charla serve --config
//! /etc/charla/config.toml` works from any working directory. Secrets can come from the
//! environment (`CHARLA_REGISTRATION_SHARED_SECRET`, `CHARLA_REGISTRATION_TOKEN`,
//! `CHARLA_WEBCHAT_JWT_SECRET`) so they never
//! need to sit in a file under version control.

mod federation;
pub(crate) mod media;
mod metrics;
mod parse;
pub(crate) mod search;
pub(crate) mod secrets;
mod support;
pub(crate) mod webchat;
pub use federation::FederationConfig;
pub use media::{MediaConfig, ThumbnailMethod, ThumbnailSize};
pub use metrics::MetricsConfig;
pub use parse::ParseError;
pub use search::SearchConfig;
pub(crate) use support::default_capacity;
pub(crate) use support::parse_hhmm;
pub use support::{AgentConfig, BusinessHours, FaqEntry, SupportConfig};
pub use webchat::WebchatConfig;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ruma::{OwnedServerName, RoomVersionId};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Matrix server name: the part after `:` in user ids. Never change it once users exist.
    pub server_name: OwnedServerName,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub rooms: RoomsConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub presence: PresenceConfig,
    #[serde(default)]
    pub appservice: AppserviceConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub support: SupportConfig,
    #[serde(default)]
    pub bridges: BridgesConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub webchat: WebchatConfig,
    #[serde(default)]
    pub search: SearchConfig,
    #[serde(default)]
    pub federation: FederationConfig,
}

/// Bridges run by `charla serve` (or alone with `charla bridge <name>`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgesConfig {
    /// `[bridges.whatsapp]`: see `bridges/whatsapp` and the shipped config.toml.
    pub whatsapp: whatsapp::BridgeConfig,
    /// `[bridges.email]`: see `bridges/email` and the shipped config.toml.
    pub email: email::EmailConfig,
}

/// Application services (bridges, bots) the server talks to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppserviceConfig {
    /// Registration YAML files; relative to the config file's folder.
    pub registrations: Vec<PathBuf>,
}

/// When a user who stops acting or syncing stops looking available.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// An `online` user with no activity (sending, setting presence) for this long becomes
    /// `unavailable`.
    pub idle_timeout_secs: u64,
    /// A user none of whose clients has synced for this long becomes `offline`.
    pub offline_timeout_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 300,
            offline_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP listener binds to.
    pub listen: SocketAddr,
    /// Base URL clients use, advertised in `/.well-known/matrix/client`. Derived from `listen`
    /// when empty.
    pub public_base_url: String,
    /// Seconds a client has to send a request's headers; also how long an idle keep-alive
    /// connection stays open. Slower connections are closed (slowloris).
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may send nothing, or a response wait for the client to read,
    /// before the connection is closed.
    pub idle_timeout_secs: u64,
    /// Address ranges (CIDR) that requests to user-chosen URLs other than URL previews (push
    /// gateways) may not reach, besides the built-in private and reserved ones.
    pub ip_range_blocklist: Vec<String>,
    /// Exceptions to the blocked ranges (e.g. a push gateway on this network).
    pub ip_range_allowlist: Vec<String>,
    /// Whether a reverse proxy in front sets `X-Forwarded-For` (the client's address for
    /// per-address limits is then its last entry).
    pub x_forwarded: bool,
}

impl ServerConfig {
    /// The filter of requests to user-chosen URLs other than previews (push gateways).
    pub(crate) fn outbound_filter(&self) -> Result<crate::ssrf::IpFilter, ConfigError> {
        crate::ssrf::IpFilter::new(&self.ip_range_blocklist, &self.ip_range_allowlist)
            .map_err(|e| ConfigError::Invalid(format!("server.ip_range_*: {e}")))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8008).into(),
            public_base_url: String::new(),
            header_read_timeout_secs: 30,
            idle_timeout_secs: 60,
            ip_range_blocklist: Vec::new(),
            ip_range_allowlist: Vec::new(),
            x_forwarded: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Data folder; relative to the config file's folder.
    pub path: PathBuf,
    /// Upper bound of sled's page cache, in MiB. sled grows its cache up to this bound, so it is
    /// what keeps memory flat as the store grows.
    pub cache_capacity_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data"),
            cache_capacity_mb: 32,
        }
    }
}

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone, with the `m.login.dummy` stage.
    #[default]
    Open,
    /// Only with a registration token (`m.login.registration_token`).
    Token,
    /// Nobody through `/register`; admins still can through shared-secret registration.
    Closed,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub mode: RegistrationMode,
    /// Tokens accepted when `mode = "token"`.
    pub tokens: Vec<String>,
    /// The secret of `/_synapse/admin/v1/register`. Absent: generated into the data folder on
    /// first start (`users::shared_secret`); empty: the endpoint is disabled.
    pub shared_secret: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body, in bytes.
    pub max_request_bytes: usize,
    /// Sustained message sends per second allowed to one user.
    pub send_per_second: f64,
    /// Burst of sends allowed above the sustained rate.
    pub send_burst: u32,
    /// Sustained login attempts per second from one user or address.
    pub login_per_second: f64,
    pub login_burst: u32,
    /// Sustained full-text searches per second allowed to one user (`/search`, the support
    /// API's `q` and `/search`): each reads the index and formats events.
    pub search_per_second: f64,
    pub search_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1024 * 1024,
            send_per_second: 20.0,
            send_burst: 100,
            login_per_second: 0.5,
            login_burst: 10,
            search_per_second: 5.0,
            search_burst: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Version of rooms created without an explicit `room_version`.
    pub default_version: RoomVersionId,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_version: RoomVersionId::V11,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `charla=debug,info`. `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads, parses and validates a config file, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = parse::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.storage.path = base.join(&config.storage.path);
        for file in &mut config.appservice.registrations {
            *file = base.join(&*file);
        }
        if !config.media.path.as_os_str().is_empty() {
            config.media.path = base.join(&config.media.path);
        }
        if !config.search.path.as_os_str().is_empty() {
            config.search.path = base.join(&config.search.path);
        }
        if !config.webchat.jwt_public_key_file.as_os_str().is_empty() {
            config.webchat.jwt_public_key_file = base.join(&config.webchat.jwt_public_key_file);
        }
        for path in [
            &mut config.federation.tls_certificate,
            &mut config.federation.tls_private_key,
        ] {
            *path = base.join(&*path);
        }
        let whatsapp = &mut config.bridges.whatsapp;
        let email = &mut config.bridges.email;
        for path in [
            &mut whatsapp.state_path,
            &mut whatsapp.registration,
            &mut email.state_path,
            &mut email.registration,
            &mut email.tls_certificate,
            &mut email.tls_private_key,
        ] {
            if !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        }
        config.apply_env();
        config.validate()?;
        Ok(config)
    }

    /// Parses a config from text; relative paths stay relative to the working directory.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = parse::parse(text).map_err(|source| ConfigError::Parse {
            path: "<inline>".into(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self) {
        if let Ok(secret) = std::env::var("CHARLA_REGISTRATION_SHARED_SECRET") {
            self.registration.shared_secret = Some(secret);
        }
        if let Ok(secret) = std::env::var("CHARLA_WEBCHAT_JWT_SECRET") {
            self.webchat.jwt_secret = secret;
        }
        if let Ok(token) = std::env::var("CHARLA_REGISTRATION_TOKEN") {
            self.registration.tokens.push(token);
        }
        self.bridges.email.apply_env();
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(why) = self
            .registration
            .shared_secret
            .as_deref()
            .and_then(secrets::shared_secret_refusal)
        {
            return Err(ConfigError::Invalid(why));
        }
        if self.registration.mode == RegistrationMode::Token && self.registration.tokens.is_empty()
        {
            return Err(ConfigError::Invalid(
                "registration.mode = \"token\" needs at least one entry in registration.tokens"
                    .into(),
            ));
        }
        if self.limits.send_per_second <= 0.0
            || self.limits.login_per_second <= 0.0
            || self.limits.search_per_second <= 0.0
            || self.media.url_preview_per_second <= 0.0
            || self.media.max_concurrent_previews_per_user == 0
        {
            return Err(ConfigError::Invalid("rate limits must be positive".into()));
        }
        if !matches!(
            self.rooms.default_version,
            RoomVersionId::V10 | RoomVersionId::V11
        ) {
            return Err(ConfigError::Invalid(
                "rooms.default_version must be \"10\" or \"11\"".into(),
            ));
        }
        self.support.validate().map_err(ConfigError::Invalid)?;
        self.webchat.validate().map_err(ConfigError::Invalid)?;
        self.search.validate().map_err(ConfigError::Invalid)?;
        self.federation.validate().map_err(ConfigError::Invalid)?;
        if self.webchat.enabled && !self.support.enabled {
            return Err(ConfigError::Invalid(
                "webchat.enabled needs the support desk (support.enabled): each web chat is a \
                 conversation the desk opens"
                    .into(),
            ));
        }
        if self.bridges.email.enabled {
            self.bridges
                .email
                .validate()
                .map_err(ConfigError::Invalid)?;
        }
        if self.bridges.whatsapp.enabled {
            self.bridges
                .whatsapp
                .validate()
                .map_err(ConfigError::Invalid)?;
        }
        if self.media.max_thumbnail_dimension == 0 {
            return Err(ConfigError::Invalid(
                "media.max_thumbnail_dimension must be positive".into(),
            ));
        }
        self.validate_limits()?;
        crate::ssrf::IpFilter::new(
            &self.media.url_preview_ip_range_blocklist,
            &self.media.url_preview_ip_range_allowlist,
        )
        .map_err(|e| ConfigError::Invalid(format!("media.url_preview_ip_range_*: {e}")))?;
        self.server.outbound_filter()?;
        self.metrics
            .validate(self.server.listen)
            .map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The connection timeouts and media bounds: none may be zero, which would refuse every
    /// request, and no thumbnail size may exceed `media.max_thumbnail_dimension`.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(format!("{what} must be positive")));
        if self.server.header_read_timeout_secs == 0 {
            return invalid("server.header_read_timeout_secs");
        }
        if self.server.idle_timeout_secs == 0 {
            return invalid("server.idle_timeout_secs");
        }
        if self.media.max_concurrent_uploads_per_user == 0 {
            return invalid("media.max_concurrent_uploads_per_user");
        }
        if self.media.max_concurrent_thumbnails == 0 {
            return invalid("media.max_concurrent_thumbnails");
        }
        if self.media.thumbnail_sizes.is_empty() {
            return Err(ConfigError::Invalid(
                "media.thumbnail_sizes needs at least one size".into(),
            ));
        }
        let max = self.media.max_thumbnail_dimension;
        for size in &self.media.thumbnail_sizes {
            if size.width == 0 || size.height == 0 || size.width > max || size.height > max {
                return Err(ConfigError::Invalid(format!(
                    "media.thumbnail_sizes: {}x{} {}: width and height must be 1 to \
                     media.max_thumbnail_dimension ({max})",
                    size.width,
                    size.height,
                    size.method.as_str()
                )));
            }
        }
        Ok(())
    }

    /// The folder of the media repository's files.
    pub(crate) fn media_path(&self) -> PathBuf {
        if self.media.path.as_os_str().is_empty() {
            self.storage.path.join("media")
        } else {
            self.media.path.clone()
        }
    }

    /// The search index's folder.
    pub(crate) fn search_path(&self) -> PathBuf {
        if self.search.path.as_os_str().is_empty() {
            self.storage.path.join("search")
        } else {
            self.search.path.clone()
        }
    }

    /// The base URL advertised to clients.
    pub fn public_base_url(&self) -> String {
        if self.server.public_base_url.is_empty() {
            format!("http://{}", self.server.listen)
        } else {
            self.server.public_base_url.trim_end_matches('/').to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../../config.toml");
        let config = Config::from_toml(text).expect("shipped config.toml must parse");
        assert_eq!(config.server_name.as_str(), "localhost");
        assert_eq!(config.registration.mode, RegistrationMode::Open);
        assert_eq!(config.storage.path, PathBuf::from("data"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml("server_name = \"a\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn bad_preview_ranges_are_refused() {
        let err = Config::from_toml(
            "server_name = \"a\"\n[media]\nurl_preview_ip_range_allowlist = [\"10.0.0.0/99\"]\n",
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
    }

    #[test]
    fn connection_and_media_limits_are_checked() {
        let config = Config::from_toml(include_str!("../../config.toml")).unwrap();
        assert_eq!(
            config.media.thumbnail_sizes,
            media::default_thumbnail_sizes()
        );
        for bad in [
            "[server]\nidle_timeout_secs = 0\n",
            "[server]\nheader_read_timeout_secs = 0\n",
            "[media]\nmax_concurrent_uploads_per_user = 0\n",
            "[media]\nmax_concurrent_thumbnails = 0\n",
            "[media]\nthumbnail_sizes = []\n",
            "[media]\nthumbnail_sizes = [{ width = 2000, height = 20, method = \"crop\" }]\n",
            "[media]\nthumbnail_sizes = [{ width = 20, height = 20, method = \"zoom\" }]\n",
        ] {
            let err = Config::from_toml(&format!("server_name = \"a\"\n{bad}")).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
    }

    #[test]
    fn token_mode_needs_tokens() {
        let err = Config::from_toml("server_name = \"a\"\n[registration]\nmode = \"token\"\n")
            .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)));
    }

    #[test]
    fn business_hours_take_an_iana_time_zone() {
        let hours =
            "server_name = \"a\"\n[support.business_hours]\nopen = \"09:00\"\nclose = \"18:00\"\n";
        let config = Config::from_toml(&format!("{hours}time_zone = \"Europe/Madrid\"\n")).unwrap();
        let tz = &config.support.business_hours.unwrap().time_zone;
        assert_eq!(tz.iana_name(), Some("Europe/Madrid"));
        let err =
            Config::from_toml(&format!("{hours}time_zone = \"Europe/Atlantis\"\n")).unwrap_err();
        assert!(err.to_string().contains("Europe/Atlantis"), "{err}");
        let utc = Config::from_toml(hours)
            .unwrap()
            .support
            .business_hours
            .unwrap();
        assert_eq!(utc.time_zone.iana_name(), Some("UTC"));
    }
}
