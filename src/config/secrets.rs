//! Secrets in the config: which values are refused at start.
//!
//! A secret printed in documentation or examples is public; a server must never run with one.

/// A configured secret shorter than this is refused: nonces are free, so a short secret could
/// be guessed online.
pub(crate) const MIN_SECRET_CHARS: usize = 16;
/// Secrets that documentation and examples print. Compared case-insensitively.
const PLACEHOLDERS: &[&str] = &["change-me", "changeme", "change_me", "secret", "s3cret"];

/// Whether `secret` is one that documentation and examples print.
pub(crate) fn is_placeholder(secret: &str) -> bool {
    PLACEHOLDERS.iter().any(|p| p.eq_ignore_ascii_case(secret))
}

/// Why a configured secret is refused, or `None` when it may be used. `""` disables the
/// feature and is fine.
pub(crate) fn shared_secret_refusal(secret: &str) -> Option<String> {
    if secret.is_empty() {
        return None;
    }
    if is_placeholder(secret) {
        return Some(format!(
            "registration.shared_secret is {secret:?}, a placeholder printed in documentation. \
             Remove the line to use a secret the server generates into <storage.path>/registration_shared_secret, \
             set a random secret of your own, or set \"\" to disable shared-secret registration"
        ));
    }
    if secret.chars().count() < MIN_SECRET_CHARS {
        return Some(format!(
            "registration.shared_secret must be at least {MIN_SECRET_CHARS} characters (or \"\" \
             to disable shared-secret registration; remove the line for a generated one)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_short_secrets_are_refused() {
        assert!(shared_secret_refusal("change-me").is_some());
        assert!(shared_secret_refusal("CHANGE-ME").is_some());
        assert!(shared_secret_refusal("short-but-real").is_some());
        assert!(shared_secret_refusal("").is_none());
        assert!(shared_secret_refusal("a-long-and-random-secret-123").is_none());
    }
}
