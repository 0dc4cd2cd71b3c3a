//! The admin API over HTTP, and what a failed command exits with.

use reqwest::{Method, Url};
use serde_json::Value;

use super::target::Target;

/// Why a command failed: one line for stderr, and the process's exit code.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// The exit code says which kind of trouble it was, so scripts can tell "no such user" from
/// "the server is down". (2 is clap's, for a wrong command line.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 1: the server refused the request: no such thing, it already exists, bad input.
    Refused = 1,
    /// 3: no server answered, or it did not take the token.
    Unreachable = 3,
    /// 4: a local file or config: unreadable, invalid, a corrupt archive.
    Local = 4,
    /// 5: the server failed (5xx).
    ServerError = 5,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn local(message: impl Into<String>) -> Self {
        Failure::new(FailureKind::Local, message)
    }

    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Failure::new(FailureKind::Refused, message)
    }

    pub fn exit_code(&self) -> u8 {
        self.kind as u8
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One line, whatever the server said.
        f.write_str(&self.message.replace(['\n', '\r'], " "))
    }
}

/// A client of one server's admin API.
pub(crate) struct AdminClient {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl AdminClient {
    pub(crate) fn new(target: Target) -> Result<Self, Failure> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| Failure::local(format!("cannot build an HTTP client: {e}")))?;
        Ok(AdminClient {
            http,
            base: target.url,
            token: target.token,
        })
    }

    /// `<base>/_charla/admin/v1/<segments…>`, each segment percent-encoded (user ids carry `@`
    /// and `:`, room ids `!`).
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["_charla", "admin", "v1"])
                .extend(segments);
        }
        url
    }

    pub(crate) async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, Failure> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.call(Method::GET, url, None).await
    }

    /// Every page of a listing that answers `{<key>: [...], "next": token|null}` and takes the
    /// token back as `from`, 500 at a time: the items of all pages, in order.
    pub(crate) async fn get_all(
        &self,
        segments: &[&str],
        filters: &[(&str, String)],
        key: &str,
    ) -> Result<Vec<Value>, Failure> {
        let mut items = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut query = filters.to_vec();
            query.push(("limit", "500".to_owned()));
            if let Some(from) = &from {
                query.push(("from", from.clone()));
            }
            let mut page = self.get(segments, &query).await?;
            if let Some(list) = page[key].as_array_mut() {
                items.append(list);
            }
            match page["next"].as_str() {
                Some(next) if from.as_deref() != Some(next) => from = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
    }

    pub(crate) async fn post(&self, segments: &[&str], body: Value) -> Result<Value, Failure> {
        self.call(Method::POST, self.url(segments), Some(body))
            .await
    }

    /// A POST whose body is text of its own type, not JSON (a registration's YAML).
    pub(crate) async fn post_text(
        &self,
        segments: &[&str],
        content_type: &str,
        body: String,
    ) -> Result<Value, Failure> {
        let request = self
            .http
            .post(self.url(segments))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(request).await
    }

    pub(crate) async fn put(&self, segments: &[&str], body: Value) -> Result<Value, Failure> {
        self.call(Method::PUT, self.url(segments), Some(body)).await
    }

    pub(crate) async fn patch(&self, segments: &[&str], body: Value) -> Result<Value, Failure> {
        self.call(Method::PATCH, self.url(segments), Some(body))
            .await
    }

    pub(crate) async fn delete(&self, segments: &[&str]) -> Result<Value, Failure> {
        self.call(Method::DELETE, self.url(segments), None).await
    }

    /// A request whose answer is read as a stream (the backup archive); errors as [`call`].
    pub(crate) async fn stream(&self, segments: &[&str]) -> Result<reqwest::Response, Failure> {
        let response = self
            .http
            .get(self.url(segments))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Err(failure_of(status, &body))
    }

    async fn call(&self, method: Method, url: Url, body: Option<Value>) -> Result<Value, Failure> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// Sends with the token; the answer's JSON, or the failure it says.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let request = request.bearer_auth(&self.token);
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            Ok(body)
        } else {
            Err(failure_of(status, &body))
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> Failure {
        Failure::new(
            FailureKind::Unreachable,
            format!("cannot reach the server at {}: {e}", self.base),
        )
    }
}

/// The failure for an error answer: its Matrix error text and code.
fn failure_of(status: reqwest::StatusCode, body: &Value) -> Failure {
    let error = body["error"].as_str().unwrap_or("");
    let errcode = body["errcode"].as_str().unwrap_or("");
    let message = match (error.is_empty(), errcode.is_empty()) {
        (false, false) => format!("{error} ({errcode})"),
        (false, true) => error.to_owned(),
        _ => format!("the server answered {status}"),
    };
    let kind = match status.as_u16() {
        401 => FailureKind::Unreachable,
        500.. => FailureKind::ServerError,
        _ => FailureKind::Refused,
    };
    Failure::new(kind, message)
}
