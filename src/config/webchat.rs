//! `[webchat]`: the web chat channel (`/api/chat`, its WebSocket and the widget).
//!
//! The website's own login issues the customers' tokens; Charla only verifies them, with one
//! key and one algorithm: an HS256 secret shared with the website, or the public key of the
//! website's RS256/ES256 signing key (then Charla holds nothing that can mint a token).

use std::path::PathBuf;

use serde::Deserialize;

/// HS256 secrets shorter than this are refused: the secret is all that stands between a
/// stranger and every customer's conversations (RFC 7518 §3.2 asks for the hash's 256 bits).
pub(crate) const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebchatConfig {
    pub enabled: bool,
    /// The HS256 secret the website signs its tokens with (env `CHARLA_WEBCHAT_JWT_SECRET`).
    pub jwt_secret: String,
    /// A PEM public key (RSA for RS256, EC P-256 for ES256) the website's tokens verify with.
    pub jwt_public_key_file: PathBuf,
    /// `iss` every token must carry, when set.
    pub jwt_issuer: String,
    /// An `aud` every token must carry, when set.
    pub jwt_audience: String,
    /// Origins (`https://shop.example.com`) whose pages may call the API and open its
    /// WebSocket. Requests without an `Origin` (not from a browser) are not affected.
    pub allowed_origins: Vec<String>,
    /// Messages one customer may send per minute (the seed's anti-spam rule).
    pub messages_per_minute: u32,
    /// Sessions one customer may open per hour: each is a room and a place in the queue.
    pub sessions_per_hour: u32,
    /// Open WebSockets per customer (tabs, devices): each holds a queue of its own.
    pub sockets_per_customer: usize,
    /// Open WebSockets in all: what bounds the sockets' memory.
    pub max_sockets: usize,
}

/// Without the secret: a config printed for debugging must not hand out every customer's chat.
impl std::fmt::Debug for WebchatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebchatConfig")
            .field("enabled", &self.enabled)
            .field("jwt_secret", &"<redacted>")
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("allowed_origins", &self.allowed_origins)
            .finish_non_exhaustive()
    }
}

impl Default for WebchatConfig {
    fn default() -> Self {
        WebchatConfig {
            enabled: false,
            jwt_secret: String::new(),
            jwt_public_key_file: PathBuf::new(),
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            allowed_origins: Vec::new(),
            messages_per_minute: 10,
            sessions_per_hour: 10,
            sockets_per_customer: 8,
            max_sockets: 20_000,
        }
    }
}

impl WebchatConfig {
    /// The checks that need no file: one key, a strong secret, sane limits and origins.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let secret = !self.jwt_secret.is_empty();
        let key = !self.jwt_public_key_file.as_os_str().is_empty();
        match (secret, key) {
            (false, false) => {
                return Err("webchat.enabled needs webchat.jwt_secret (HS256) or \
                            webchat.jwt_public_key_file (RS256, ES256)"
                    .into());
            }
            (true, true) => {
                return Err(
                    "set one of webchat.jwt_secret and webchat.jwt_public_key_file, \
                            not both: tokens are verified with one algorithm"
                        .into(),
                );
            }
            _ => {}
        }
        if secret && self.jwt_secret.len() < MIN_JWT_SECRET_BYTES {
            return Err(format!(
                "webchat.jwt_secret must be at least {MIN_JWT_SECRET_BYTES} bytes (a random \
                 secret shared with the website's login)"
            ));
        }
        if secret && crate::config::secrets::is_placeholder(&self.jwt_secret) {
            return Err("webchat.jwt_secret is a placeholder printed in documentation".into());
        }
        if self.messages_per_minute == 0 || self.sessions_per_hour == 0 {
            return Err(
                "webchat.messages_per_minute and webchat.sessions_per_hour must be at least 1"
                    .into(),
            );
        }
        if self.sockets_per_customer == 0 || self.max_sockets == 0 {
            return Err(
                "webchat.sockets_per_customer and webchat.max_sockets must be at least 1".into(),
            );
        }
        for origin in &self.allowed_origins {
            if normalized_origin(origin).is_none() {
                return Err(format!(
                    "webchat.allowed_origins: {origin:?} is not an origin such as \
                     \"https://shop.example.com\" (scheme, host and optional port, no path)"
                ));
            }
        }
        Ok(())
    }
}

/// An origin as browsers send it (`scheme://host[:port]`, lower case, no trailing slash), or
/// `None` when `text` is not one.
pub(crate) fn normalized_origin(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = text.split_once("://")?;
    let valid_host = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    (matches!(scheme, "http" | "https") && valid_host).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> WebchatConfig {
        WebchatConfig {
            enabled: true,
            jwt_secret: "a-random-secret-of-thirty-two-bytes!".into(),
            ..Default::default()
        }
    }

    #[test]
    fn one_strong_key_is_required() {
        assert!(enabled().validate().is_ok());
        let none = WebchatConfig {
            jwt_secret: String::new(),
            ..enabled()
        };
        assert!(none.validate().unwrap_err().contains("jwt_secret"));
        let both = WebchatConfig {
            jwt_public_key_file: "key.pem".into(),
            ..enabled()
        };
        assert!(both.validate().unwrap_err().contains("not both"));
        let short = WebchatConfig {
            jwt_secret: "short".into(),
            ..enabled()
        };
        assert!(short.validate().unwrap_err().contains("32 bytes"));
        // Disabled, nothing is required.
        assert!(WebchatConfig::default().validate().is_ok());
    }

    #[test]
    fn origins_are_checked_and_normalized() {
        assert_eq!(
            normalized_origin("https://Shop.Example.com/").as_deref(),
            Some("https://shop.example.com")
        );
        assert_eq!(
            normalized_origin("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(normalized_origin("https://shop.example.com/chat"), None);
        assert_eq!(normalized_origin("shop.example.com"), None);
        assert_eq!(normalized_origin("*"), None);
        let bad = WebchatConfig {
            allowed_origins: vec!["*".into()],
            ..enabled()
        };
        assert!(bad.validate().unwrap_err().contains("allowed_origins"));
    }
}
