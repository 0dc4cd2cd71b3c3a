//! Which tokens open the web chat: the configured key and algorithm only, within their times,
//! from the configured issuer for the configured audience.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{Customer, SECRET, now, token_with};
use crate::common::TestServer;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/webchat/keys");

async fn status_with(s: &TestServer, token: String) -> u16 {
    Customer::new(s, token)
        .get("/api/chat/session/active")
        .await
        .status
}

fn b64(v: Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn only_valid_tokens_of_the_configured_issuer_and_audience_are_taken() {
    let s = TestServer::start_with(&super::config(
        "jwt_issuer = \"https://shop.example.com\"\njwt_audience = \"charla-chat\"",
    ))
    .await;
    let claims = |extra: Value| {
        let mut c = json!({ "sub": "t-1", "exp": now() + 600,
            "iss": "https://shop.example.com", "aud": "charla-chat" });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    assert_eq!(status_with(&s, token_with(claims(json!({})))).await, 200);
    for (why, bad) in [
        ("expired", claims(json!({ "exp": now() - 600 }))),
        ("not yet valid", claims(json!({ "nbf": now() + 600 }))),
        (
            "wrong issuer",
            claims(json!({ "iss": "https://evil.example.com" })),
        ),
        ("wrong audience", claims(json!({ "aud": "someone-else" }))),
        ("no issuer", {
            let mut c = claims(json!({}));
            c.as_object_mut().unwrap().remove("iss");
            c
        }),
        ("no audience", {
            let mut c = claims(json!({}));
            c.as_object_mut().unwrap().remove("aud");
            c
        }),
    ] {
        assert_eq!(status_with(&s, token_with(bad)).await, 401, "{why}");
    }
    // No signature at all.
    let none = format!(
        "{}.{}.",
        b64(json!({ "alg": "none", "typ": "JWT" })),
        b64(claims(json!({})))
    );
    assert_eq!(status_with(&s, none).await, 401, "alg none");
    // Signed with another secret, or with the right secret under another algorithm.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-it").unwrap(),
    )
    .unwrap();
    assert_eq!(status_with(&s, forged).await, 401, "forged");
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims(json!({})),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(status_with(&s, hs384).await, 401, "another algorithm");
}

/// A server verifying with the public key in `file`, and a token signed by its private key.
async fn public_key_server(public: &str, private: &str, algorithm: Algorithm) {
    let config = format!(
        r#"
[webchat]
enabled = true
jwt_public_key_file = "{KEYS}/{public}"
"#
    );
    let s = TestServer::start_with(&config).await;
    let pem = std::fs::read(format!("{KEYS}/{private}")).unwrap();
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let claims = json!({ "sub": "pk-1", "exp": now() + 600 });
    let good = jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).unwrap();
    assert_eq!(status_with(&s, good).await, 200, "{algorithm:?}");
    // An HS256 token "signed" with the public key as a secret: the confusion attack.
    let public_pem = std::fs::read(format!("{KEYS}/{public}")).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&public_pem).unwrap(),
    )
    .unwrap();
    assert_eq!(
        status_with(&s, confused).await,
        401,
        "{algorithm:?} confusion"
    );
}

#[tokio::test]
async fn rs256_and_es256_public_keys_verify_their_tokens_only() {
    public_key_server("rsa-public.pem", "rsa-private.pem", Algorithm::RS256).await;
    public_key_server("ec-public.pem", "ec-private.pem", Algorithm::ES256).await;
}
