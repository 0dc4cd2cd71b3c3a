//! Who a web chat request comes from: the customer named by a JWT the website's login issued.
//!
//! Verified with the `jsonwebtoken` crate, never by hand: one configured key, one algorithm
//! (a token naming any other, `none` included, is refused before its signature is looked at),
//! `exp` required, `nbf` checked when present, `iss` and `aud` when configured.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::WebchatConfig;

/// Longest `sub` accepted: it names the customer in keys and in the Matrix user id.
const MAX_SUBJECT_CHARS: usize = 255;
/// Longest `name` kept as the customer's display name.
const MAX_NAME_CHARS: usize = 100;
/// Longest token looked at: a JWT is a few hundred bytes; this bounds the work of a forged one.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew forgiven on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// A verified customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Customer {
    /// The token's `sub`: the website's id of the customer.
    pub(crate) id: String,
    /// The token's `name`, when it has one.
    pub(crate) name: Option<String>,
}

/// The claims Charla reads; the library checks `exp`, `nbf`, `iss` and `aud` itself.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
}

/// Verifies tokens with the configured key.
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// The verifier of `[webchat]`: its secret, or the public key in its file.
    pub(crate) fn new(config: &WebchatConfig) -> Result<Verifier, String> {
        // Explicit, so that no other crate's choice of backend changes ours.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let (key, algorithm) = if config.jwt_secret.is_empty() {
            public_key(&config.jwt_public_key_file)?
        } else {
            (
                DecodingKey::from_secret(config.jwt_secret.as_bytes())
                    .map_err(|e| format!("webchat.jwt_secret: {e}"))?,
                Algorithm::HS256,
            )
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // The library checks `iss` and `aud` only where a token has them: a configured one
        // must also be present.
        let mut required = vec!["exp", "sub"];
        if config.jwt_issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&config.jwt_issuer]);
            required.push("iss");
        }
        if config.jwt_audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&config.jwt_audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(Verifier { key, validation })
    }

    /// The customer a token names, or `None` for any token that does not verify (the caller
    /// answers all of them alike: which check failed is no business of the bearer's).
    pub(crate) fn verify(&self, token: &str) -> Option<Customer> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let data = match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => data,
            Err(e) => {
                tracing::debug!(error = %e, "web chat token refused");
                return None;
            }
        };
        let Claims { sub, name } = data.claims;
        let sub_ok = !sub.is_empty()
            && sub.chars().count() <= MAX_SUBJECT_CHARS
            && !sub.chars().any(char::is_control);
        if !sub_ok {
            tracing::debug!("web chat token refused: unusable sub");
            return None;
        }
        let name = name
            .map(|n| {
                n.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_NAME_CHARS)
                    .collect()
            })
            .filter(|n: &String| !n.trim().is_empty());
        Some(Customer { id: sub, name })
    }
}

/// The key in a PEM file, and the algorithm it verifies: RS256 for an RSA key, ES256 for an EC
/// P-256 key.
fn public_key(path: &Path) -> Result<(DecodingKey, Algorithm), String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "webchat.jwt_public_key_file {}: cannot read it: {e}",
            path.display()
        )
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(format!(
        "webchat.jwt_public_key_file {}: not a PEM RSA or EC public key",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "a-random-secret-of-thirty-two-bytes!";

    fn verifier(issuer: &str, audience: &str) -> Verifier {
        Verifier::new(&WebchatConfig {
            enabled: true,
            jwt_secret: SECRET.into(),
            jwt_issuer: issuer.into(),
            jwt_audience: audience.into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_valid_token_names_the_customer() {
        let t = token(json!({ "sub": "cust-1", "name": "Ana López", "exp": now() + 60 }));
        assert_eq!(
            verifier("", "").verify(&t),
            Some(Customer {
                id: "cust-1".into(),
                name: Some("Ana López".into())
            })
        );
    }

    #[test]
    fn expired_early_unsigned_and_foreign_tokens_are_refused() {
        let v = verifier("", "");
        let expired = token(json!({ "sub": "a", "exp": now() - 120 }));
        assert_eq!(v.verify(&expired), None);
        let early = token(json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 300 }));
        assert_eq!(v.verify(&early), None);
        let no_exp = token(json!({ "sub": "a" }));
        assert_eq!(v.verify(&no_exp), None);
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": "a", "exp": now() + 60 }),
            &EncodingKey::from_secret(b"another-secret-of-thirty-two-bytes!!").unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&forged), None);
        // `alg: none`, no signature.
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(json!({ "alg": "none", "typ": "JWT" })),
            b64(json!({ "sub": "a", "exp": now() + 60 }))
        );
        assert_eq!(v.verify(&none), None);
        // Another algorithm with the same secret.
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({ "sub": "a", "exp": now() + 60 }),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&hs512), None);
        assert_eq!(v.verify("not a token"), None);
        let empty_sub = token(json!({ "sub": "", "exp": now() + 60 }));
        assert_eq!(v.verify(&empty_sub), None);
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let v = verifier("https://shop.example.com", "charla");
        let good = token(json!({ "sub": "a", "exp": now() + 60,
            "iss": "https://shop.example.com", "aud": "charla" }));
        assert!(v.verify(&good).is_some());
        let wrong_iss = token(json!({ "sub": "a", "exp": now() + 60,
            "iss": "https://evil.example.com", "aud": "charla" }));
        assert_eq!(v.verify(&wrong_iss), None);
        let wrong_aud = token(json!({ "sub": "a", "exp": now() + 60,
            "iss": "https://shop.example.com", "aud": "other" }));
        assert_eq!(v.verify(&wrong_aud), None);
        let neither = token(json!({ "sub": "a", "exp": now() + 60 }));
        assert_eq!(v.verify(&neither), None);
    }
}
