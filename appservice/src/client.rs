//! The HTTP core of the intent client: talks to the homeserver's Client-Server API with the
//! `as_token`, turns error answers into [`Error::Matrix`], and retries what is safe to retry.
//!
//! Retries are bounded ([`RetryPolicy::max_retries`]):
//! - 429 `M_LIMIT_EXCEEDED` always (the request was refused, not processed), after the
//!   `retry_after_ms` the homeserver asked for (or the `Retry-After` header), unless that is
//!   longer than [`RetryPolicy::max_retry_after`];
//! - 500/502/503/504 and dropped connections only for idempotent requests (PUT with a txnId,
//!   GET, join, register…), since a `createRoom` that failed late may have created the room;
//! - a refused connection always (nothing reached the homeserver).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode, Url, header};
use ruma::{OwnedServerName, OwnedUserId, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as JsonValue;

use crate::error::Error;

/// How the client retries. The defaults keep a bridge going through a homeserver restart
/// while bounding how long one call can take.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Cap of the doubling backoff.
    pub max_backoff: Duration,
    /// A 429 asking to wait longer than this is returned to the caller instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.initial_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff)
    }
}

/// A client of the homeserver authenticated as the appservice. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    retry: RetryPolicy,
}

struct Inner {
    http: reqwest::Client,
    homeserver: Url,
    as_token: String,
    server_name: OwnedServerName,
    /// Makes txnIds unique across restarts of the process: the homeserver dedupes sends by
    /// (user, txnId), so a counter restarting at 0 must not reuse an old id.
    txn_prefix: String,
    txn_counter: AtomicU64,
    /// Users known to exist, so `ensure_registered` asks the homeserver once per user.
    registered: Mutex<HashSet<OwnedUserId>>,
}

/// One request to make, before authentication and retries.
pub(crate) struct Request {
    pub method: Method,
    pub path: Vec<String>,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<(Bytes, String)>,
    pub idempotent: bool,
}

impl Request {
    pub fn new(method: Method, path: &[&str]) -> Self {
        let idempotent = matches!(method, Method::GET | Method::PUT);
        Self {
            method,
            path: path.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
            idempotent,
        }
    }

    pub fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    pub fn json(mut self, body: &impl Serialize) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        self.body = Some((bytes.into(), "application/json".into()));
        Ok(self)
    }

    pub fn bytes(mut self, bytes: Bytes, content_type: &str) -> Self {
        self.body = Some((bytes, content_type.into()));
        self
    }

    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

impl Client {
    /// A client for the homeserver at `homeserver` (e.g. `http://127.0.0.1:8008`) whose server
    /// name (the part after `:` in user ids) is `server_name`.
    pub fn new(
        homeserver: &str,
        as_token: impl Into<String>,
        server_name: &ServerName,
    ) -> Result<Self, Error> {
        let homeserver = Url::parse(homeserver)
            .map_err(|e| Error::InvalidRequest(format!("homeserver URL {homeserver:?}: {e}")))?;
        if homeserver.cannot_be_a_base() {
            return Err(Error::InvalidRequest(format!(
                "homeserver URL {homeserver} has no path"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                homeserver,
                as_token: as_token.into(),
                server_name: server_name.to_owned(),
                txn_prefix: format!("as{millis}-{}", &crate::registration::generate_token()[..6]),
                txn_counter: AtomicU64::new(0),
                registered: Mutex::new(HashSet::new()),
            }),
            retry: RetryPolicy::default(),
        })
    }

    /// The same client with another retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn server_name(&self) -> &ServerName {
        &self.inner.server_name
    }

    /// `@localpart:server_name`.
    pub fn user_id(&self, localpart: &str) -> Result<OwnedUserId, Error> {
        OwnedUserId::try_from(format!("@{localpart}:{}", self.inner.server_name))
            .map_err(|e| Error::InvalidRequest(format!("user localpart {localpart:?}: {e}")))
    }

    /// A fresh transaction id for a send, unique across restarts.
    pub fn new_txn_id(&self) -> String {
        let n = self.inner.txn_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.inner.txn_prefix)
    }

    pub(crate) fn is_known_registered(&self, user_id: &OwnedUserId) -> bool {
        self.inner
            .registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(user_id)
    }

    pub(crate) fn remember_registered(&self, user_id: OwnedUserId) {
        self.inner
            .registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user_id);
    }

    /// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: asks the homeserver to call our
    /// `/_matrix/app/v1/ping`; returns the round trip it measured in milliseconds.
    pub async fn ping(
        &self,
        appservice_id: &str,
        transaction_id: Option<&str>,
    ) -> Result<u64, Error> {
        let mut body = serde_json::Map::new();
        if let Some(txn) = transaction_id {
            body.insert("transaction_id".into(), txn.into());
        }
        let request = Request::new(
            Method::POST,
            &[
                "_matrix",
                "client",
                "v1",
                "appservice",
                appservice_id,
                "ping",
            ],
        )
        .json(&body)?;
        let answer: JsonValue = self.send(request).await?;
        answer
            .get("duration_ms")
            .and_then(JsonValue::as_u64)
            .ok_or_else(|| {
                Error::InvalidResponse(format!("ping answer without duration_ms: {answer}"))
            })
    }

    /// Sends `request` with retries and parses the 2xx answer as `T`.
    pub(crate) async fn send<T: DeserializeOwned>(&self, request: Request) -> Result<T, Error> {
        let (body, _) = self.send_bytes(request).await?;
        serde_json::from_slice(if body.is_empty() { b"{}" } else { &body })
            .map_err(|e| Error::InvalidResponse(e.to_string()))
    }

    /// Sends `request` with retries; the raw 2xx body and its `Content-Type` (media downloads).
    pub(crate) async fn send_bytes(
        &self,
        request: Request,
    ) -> Result<(Bytes, Option<String>), Error> {
        let mut attempt = 0;
        loop {
            let result = self.send_once(&request).await;
            let wait = match &result {
                Ok(_) => None,
                Err(error) => self.retry_delay(&request, error, attempt),
            };
            match wait {
                Some(delay) if attempt < self.retry.max_retries => {
                    tracing::debug!(path = %request.path.join("/"), attempt, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                _ => return result,
            }
        }
    }

    fn retry_delay(&self, request: &Request, error: &Error, attempt: u32) -> Option<Duration> {
        match error {
            Error::Matrix {
                status: 429,
                retry_after_ms,
                ..
            } => {
                let delay = retry_after_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.retry.backoff(attempt));
                (delay <= self.retry.max_retry_after).then_some(delay)
            }
            Error::Matrix {
                status: 500 | 502 | 503 | 504,
                ..
            } if request.idempotent => Some(self.retry.backoff(attempt)),
            Error::Transport(e) if e.is_connect() || request.idempotent => {
                Some(self.retry.backoff(attempt))
            }
            _ => None,
        }
    }

    fn url(&self, request: &Request) -> Url {
        let mut url = self.inner.homeserver.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(&request.path);
        }
        if !request.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(request.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// One attempt: the 2xx body and its content type, or the error.
    async fn send_once(&self, request: &Request) -> Result<(Bytes, Option<String>), Error> {
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), self.url(request))
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.inner.as_token),
            );
        if let Some((bytes, content_type)) = &request.body {
            builder = builder
                .header(header::CONTENT_TYPE, content_type)
                .body(bytes.clone());
        }
        let response = builder.send().await?;
        let status = response.status();
        let retry_after_header = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| secs.saturating_mul(1000));
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await?;
        if status.is_success() {
            return Ok((body, content_type));
        }
        Err(matrix_error(status, &body, retry_after_header))
    }
}

/// The typed error of a non-2xx answer. Bodies that are not Matrix errors keep their status and
/// get `M_UNKNOWN` with the body text as message.
fn matrix_error(status: StatusCode, body: &[u8], retry_after_header: Option<u64>) -> Error {
    let json: Option<JsonValue> = serde_json::from_slice(body).ok();
    let field = |name: &str| json.as_ref().and_then(|j| j.get(name));
    Error::Matrix {
        status: status.as_u16(),
        errcode: field("errcode")
            .and_then(JsonValue::as_str)
            .unwrap_or("M_UNKNOWN")
            .to_owned(),
        message: field("error")
            .and_then(JsonValue::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect()),
        retry_after_ms: field("retry_after_ms")
            .and_then(JsonValue::as_u64)
            .or(retry_after_header),
    }
}
