//! A deliberately tiny Matrix Client-Server API client over `reqwest`.
//!
//! The load tool must be able to target any homeserver (Charla, Synapse, ...),
//! so it speaks nothing but the public C-S API (v1.16) over plain HTTP and
//! deserialises only the handful of response fields it needs. Everything else
//! in a response is skipped by serde, which keeps parsing cheap enough that the
//! tool itself is not the bottleneck even with a thousand syncing clients.
//!
//! This file holds the transport ([`Homeserver`], [`ApiError`]); account
//! creation lives in `register.rs` and per-user calls in `session.rs`.

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Error type used throughout the bench module.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Timeout for ordinary (non long-poll) requests. Generous, because a full
/// initial sync of hundreds of rooms can legitimately take tens of seconds on
/// a loaded two-core box; we want a slow answer measured, not a timeout.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed C-S API call: either an HTTP error response or a transport error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status, `None` for connection errors and timeouts.
    pub status: Option<u16>,
    /// The Matrix `errcode`, when the body had one.
    pub errcode: Option<String>,
    /// Human readable detail (the Matrix `error` field or the transport error).
    pub message: String,
    /// `retry_after_ms` from an `M_LIMIT_EXCEEDED` response.
    pub retry_after_ms: Option<u64>,
    /// Whether a transport error was a timeout.
    pub timeout: bool,
}

impl ApiError {
    /// Short key used to bucket errors in reports: the status code, `timeout`
    /// or `transport`.
    pub fn kind(&self) -> String {
        match self.status {
            Some(s) => s.to_string(),
            None if self.timeout => "timeout".to_string(),
            None => "transport".to_string(),
        }
    }

    pub(super) fn transport(e: reqwest::Error) -> ApiError {
        ApiError {
            status: None,
            errcode: None,
            message: e.to_string(),
            retry_after_ms: None,
            timeout: e.is_timeout(),
        }
    }

    pub(super) fn from_body(status: StatusCode, body: &[u8]) -> ApiError {
        #[derive(Deserialize, Default)]
        struct MatrixError {
            errcode: Option<String>,
            error: Option<String>,
            retry_after_ms: Option<u64>,
        }
        let parsed: MatrixError = serde_json::from_slice(body).unwrap_or_default();
        let message = parsed
            .error
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        ApiError {
            status: Some(status.as_u16()),
            errcode: parsed.errcode,
            message,
            retry_after_ms: parsed.retry_after_ms,
            timeout: false,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind())?;
        if let Some(code) = &self.errcode {
            write!(f, " {code}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ApiError {}

/// Builds a `reqwest::Client` suited to a load tool: no proxy lookups, no
/// Nagle delay, and an effectively unbounded idle pool so every concurrent
/// client keeps its own keep-alive connection instead of reconnecting.
pub fn http_client() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .user_agent("charla-bench")
        .build()?)
}

/// A homeserver endpoint bound to one connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Homeserver {
    http: reqwest::Client,
    base: Arc<Url>,
}

impl Homeserver {
    /// `base` is the homeserver's base URL, e.g. `http://127.0.0.1:8008`.
    pub fn new(base: &str, http: reqwest::Client) -> Result<Homeserver, BoxError> {
        let base = Url::parse(base)?;
        if base.cannot_be_a_base() {
            return Err(format!("homeserver URL {base} cannot be a base URL").into());
        }
        Ok(Homeserver {
            http,
            base: Arc::new(base),
        })
    }

    /// The same homeserver over another connection pool.
    pub fn with_http(&self, http: reqwest::Client) -> Homeserver {
        Homeserver {
            http,
            base: self.base.clone(),
        }
    }

    /// `/_matrix/client/v3/<segments...>`, each segment percent-encoded, so
    /// room ids and aliases can be passed verbatim.
    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = (*self.base).clone();
        url.path_segments_mut()
            .expect("checked in Homeserver::new")
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        url
    }

    /// `/_matrix/client/v1/<segments...>` (endpoints added in v1.x, e.g. `/relations`).
    pub(super) fn url_v1(&self, segments: &[&str]) -> Url {
        let mut url = (*self.base).clone();
        url.path_segments_mut()
            .expect("checked in Homeserver::new")
            .pop_if_empty()
            .extend(["_matrix", "client", "v1"])
            .extend(segments);
        url
    }

    /// Sends a request and returns status plus the whole body.
    pub(super) async fn raw(
        &self,
        method: Method,
        url: Url,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let mut req = self.http.request(method, url).timeout(timeout);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(ApiError::transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(ApiError::transport)?;
        Ok((status, bytes.to_vec()))
    }

    /// Sends a request, maps non-2xx to [`ApiError`] and parses the body as
    /// `T`. Also returns the body size in bytes.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(T, usize), ApiError> {
        let (status, bytes) = self.raw(method, url, token, body, timeout).await?;
        if !status.is_success() {
            return Err(ApiError::from_body(status, &bytes));
        }
        let parsed = serde_json::from_slice(&bytes).map_err(|e| ApiError {
            status: Some(status.as_u16()),
            errcode: None,
            message: format!("unparseable response body: {e}"),
            retry_after_ms: None,
            timeout: false,
        })?;
        Ok((parsed, bytes.len()))
    }

    /// `GET /_matrix/client/versions`: a cheap reachability check that also
    /// tells which spec versions the server claims.
    pub async fn versions(&self) -> Result<Vec<String>, ApiError> {
        #[derive(Deserialize)]
        struct Versions {
            versions: Vec<String>,
        }
        let mut url = (*self.base).clone();
        url.path_segments_mut()
            .expect("checked in Homeserver::new")
            .pop_if_empty()
            .extend(["_matrix", "client", "versions"]);
        let timeout = Duration::from_secs(10);
        let (v, _): (Versions, _) = self.call(Method::GET, url, None, None, timeout).await?;
        Ok(v.versions)
    }
}

/// Runs a setup call, retrying while the server rate-limits us (429), honouring
/// `retry_after_ms`. Only used for setup, never for measured requests: there a
/// 429 is a result to report, not something to hide.
pub async fn retry_429<T, F, Fut>(mut f: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Err(e) if e.status == Some(429) && attempt < 30 => {
                attempt += 1;
                let wait = e.retry_after_ms.unwrap_or(500).clamp(50, 10_000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            other => return other,
        }
    }
}
