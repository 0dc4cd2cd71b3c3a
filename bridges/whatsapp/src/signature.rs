//! `X-Hub-Signature-256`: `sha256=<hex of HMAC-SHA256(app_secret, raw body)>`, checked in
//! constant time so the comparison leaks nothing about the expected value.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The header value Meta sends for `body`.
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(app_secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the right signature of `body`. A missing prefix or bad hex is simply
/// wrong.
pub fn verify(app_secret: &str, body: &[u8], header: &str) -> bool {
    let Some(given) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(app_secret.as_bytes()).expect("any key length");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    given.len() == expected.len() && bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_its_own_signature_and_nothing_else() {
        let sig = sign("secret", b"{\"a\":1}");
        assert!(verify("secret", b"{\"a\":1}", &sig));
        assert!(!verify("secret", b"{\"a\":2}", &sig));
        assert!(!verify("other", b"{\"a\":1}", &sig));
        assert!(!verify(
            "secret",
            b"{\"a\":1}",
            sig.trim_start_matches("sha256=")
        ));
        assert!(!verify("secret", b"{\"a\":1}", "sha256=zz"));
        assert!(!verify("secret", b"{\"a\":1}", ""));
    }
}
