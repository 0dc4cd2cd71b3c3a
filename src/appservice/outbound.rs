//! Requests from the homeserver to an appservice: queries and ping. Transactions are in
//! `pusher/`.

use std::time::{Duration, Instant};

use serde_json::json;

use super::AppService;

/// How long an appservice may take to answer a query or a ping.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client builds")
}

/// `{url}/_matrix/app/v1/{path}`, or `None` for an appservice without a URL.
pub fn endpoint(asv: &AppService, path: &str) -> Option<String> {
    let url = asv.registration.url.as_deref()?.trim_end_matches('/');
    (!url.is_empty()).then(|| format!("{url}/_matrix/app/v1/{path}"))
}

/// `GET /_matrix/app/v1/{users|rooms}/{id}`: `true` on a 2xx answer.
pub async fn query(http: &reqwest::Client, asv: &AppService, kind: &str, id: &str) -> bool {
    let Some(url) = endpoint(asv, &format!("{kind}/{}", encode(id))) else {
        return false;
    };
    match http
        .get(url)
        .bearer_auth(&asv.registration.hs_token)
        .timeout(QUERY_TIMEOUT)
        .send()
        .await
    {
        Ok(res) => res.status().is_success(),
        Err(e) => {
            tracing::warn!(appservice = asv.id(), error = %e, "appservice query failed");
            false
        }
    }
}

/// Why a ping failed, as the spec's errors.
#[derive(Debug)]
pub enum PingError {
    UrlNotSet,
    Timeout,
    ConnectionFailed(String),
    BadStatus { status: u16, body: String },
}

pub async fn ping(
    http: &reqwest::Client,
    asv: &AppService,
    transaction_id: Option<&str>,
) -> Result<u64, PingError> {
    let url = endpoint(asv, "ping").ok_or(PingError::UrlNotSet)?;
    let body = match transaction_id {
        Some(id) => json!({ "transaction_id": id }),
        None => json!({}),
    };
    let started = Instant::now();
    let res = http
        .post(url)
        .bearer_auth(&asv.registration.hs_token)
        .json(&body)
        .timeout(QUERY_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                PingError::Timeout
            } else {
                PingError::ConnectionFailed(e.to_string())
            }
        })?;
    let elapsed = started.elapsed().as_millis() as u64;
    let status = res.status();
    if !status.is_success() {
        let body = res.text().await.unwrap_or_default();
        return Err(PingError::BadStatus {
            status: status.as_u16(),
            body,
        });
    }
    Ok(elapsed)
}

/// Percent-encodes a path segment (`@`, `:` and `#` stay readable but `#` must not).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
