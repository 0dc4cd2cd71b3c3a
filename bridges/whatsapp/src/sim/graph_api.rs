//! The simulated Graph API endpoints the business calls.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Fault, SentRecord, Simulator};
use crate::cloud::CloudError;
use crate::cloud::error::ErrorData;

/// The 24-hour customer service window.
const WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

pub fn routes(sim: Simulator) -> Router {
    Router::new()
        .route("/{version}/{phone}/messages", post(messages))
        .route("/{version}/{phone}/media", post(upload))
        .route("/{version}/{media_id}", get(media_info))
        .route("/download/{media_id}", get(download))
        .layer(DefaultBodyLimit::max(100 * 1024 * 1024))
        .with_state(sim)
}

/// A Graph error answer: `{"error":{"message","type","code","error_data","fbtrace_id"}}`.
pub fn graph_error(status: StatusCode, code: i64, message: &str, details: &str) -> Response {
    let fbtrace_id = format!("A{:022X}", rand::random::<u64>());
    let body = json!({
        "error": {
            "message": format!("(#{code}) {message}"),
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": fbtrace_id,
        }
    });
    (status, axum::Json(body)).into_response()
}

/// Meta's title and details of the error codes the simulator produces.
fn describe(code: i64) -> (&'static str, &'static str) {
    match code {
        2 => (
            "Service temporarily unavailable",
            "The service is temporarily unavailable.",
        ),
        100 => (
            "Invalid parameter",
            "A required parameter is missing or invalid.",
        ),
        130429 => (
            "Rate limit hit",
            "Cloud API message throughput has been reached.",
        ),
        80007 => (
            "Rate limit issues",
            "The WhatsApp Business Account has reached its rate limit.",
        ),
        131026 => (
            "Message undeliverable",
            "Unable to deliver message. The recipient may not be a WhatsApp user or has not accepted the latest terms.",
        ),
        131047 => (
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        ),
        131051 => (
            "Unsupported message type",
            "Message type is not currently supported.",
        ),
        131053 => (
            "Media upload error",
            "Unable to upload the media used in the message.",
        ),
        _ => ("Unknown error", "An unknown error occurred."),
    }
}

/// Checks the bearer token (190 when wrong) and applies the injected fault.
async fn gate(sim: &Simulator, headers: &HeaderMap, sending: bool) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token != Some(sim.inner.config.access_token.as_str()) {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token",
            "Invalid OAuth access token",
        ));
    }
    if sending && !sim.inner.take_throughput() {
        let (title, details) = describe(130429);
        return Err(graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            130429,
            title,
            details,
        ));
    }
    let fault = sim.inner.lock().fault.clone();
    match fault {
        Fault::None => Ok(()),
        Fault::Down => {
            let (title, details) = describe(2);
            Err(graph_error(
                StatusCode::SERVICE_UNAVAILABLE,
                2,
                title,
                details,
            ))
        }
        Fault::Slow { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok(())
        }
        Fault::RateLimited if sending => {
            let (title, details) = describe(130429);
            Err(graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                130429,
                title,
                details,
            ))
        }
        Fault::RateLimited => Ok(()),
        Fault::Error { code, count } if sending && count > 0 => {
            let mut state = sim.inner.lock();
            state.fault = if count > 1 {
                Fault::Error {
                    code,
                    count: count - 1,
                }
            } else {
                Fault::None
            };
            let (title, details) = describe(code);
            Err(graph_error(StatusCode::BAD_REQUEST, code, title, details))
        }
        Fault::Error { .. } => Ok(()),
    }
}

async fn messages(
    State(sim): State<Simulator>,
    Path((_version, phone)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = gate(&sim, &headers, true).await {
        return refused;
    }
    let request = match parse_send(&sim, &phone, &body) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let (to, kind, body) = match request {
        SendRequest::MarkRead { wamid } => {
            sim.inner.lock().read_marks.push(wamid);
            return (StatusCode::OK, axum::Json(json!({"success": true}))).into_response();
        }
        SendRequest::Message { to, kind, body } => (to, kind, body),
    };
    let wamid = sim.inner.new_wamid();
    let window_open = record_sent(&sim, &wamid, &to, body);
    // As on the real API, a free-form message outside the window is accepted and then fails.
    let failure = (kind != "template" && kind != "reaction" && !window_open).then_some(131047);
    if failure.is_some() || sim.inner.config.auto_statuses {
        tokio::spawn(play_statuses(
            sim.inner.clone(),
            wamid.clone(),
            to.clone(),
            failure,
        ));
    }
    let answer = json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": wamid}],
    });
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// A `POST /{phone_number_id}/messages` body the Cloud API accepts.
enum SendRequest {
    /// `"status": "read"`: marks a customer's message read.
    MarkRead { wamid: String },
    /// A message of type `kind` to the customer `to`.
    Message {
        to: String,
        kind: String,
        body: Value,
    },
}

/// A send the Cloud API refuses: the Graph error's code, title and details.
struct Refusal {
    code: i64,
    title: &'static str,
    details: String,
}

impl Refusal {
    fn invalid(details: impl Into<String>) -> Self {
        Refusal {
            code: 100,
            title: "Invalid parameter",
            details: details.into(),
        }
    }

    fn into_response(self) -> Response {
        graph_error(
            StatusCode::BAD_REQUEST,
            self.code,
            self.title,
            &self.details,
        )
    }
}

/// Checks a send as the Cloud API does: the number, the JSON, the required fields, the media
/// it names.
fn parse_send(sim: &Simulator, phone: &str, body: &[u8]) -> Result<SendRequest, Refusal> {
    if phone != sim.inner.config.phone_number_id {
        return Err(Refusal::invalid("Unknown phone number id"));
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Err(Refusal::invalid("The request body is not JSON"));
    };
    if body["messaging_product"] != "whatsapp" {
        return Err(Refusal::invalid("messaging_product must be \"whatsapp\""));
    }
    if body["status"] == "read" {
        let Some(wamid) = body["message_id"].as_str() else {
            return Err(Refusal::invalid("message_id is required"));
        };
        return Ok(SendRequest::MarkRead {
            wamid: wamid.to_owned(),
        });
    }
    let Some(to) = body["to"]
        .as_str()
        .or(body["recipient"].as_str())
        .map(str::to_owned)
    else {
        return Err(Refusal::invalid("Either to or recipient is required"));
    };
    let Some(kind) = body["type"].as_str().map(str::to_owned) else {
        return Err(Refusal::invalid("type is required"));
    };
    if body.get(&kind).is_none_or(Value::is_null) {
        return Err(Refusal::invalid(format!("The {kind} object is required")));
    }
    if let Some(id) = body[&kind]["id"].as_str()
        && sim.media(id).is_none()
    {
        let (title, details) = describe(131053);
        return Err(Refusal {
            code: 131053,
            title,
            details: details.into(),
        });
    }
    Ok(SendRequest::Message { to, kind, body })
}

/// Records an accepted send as `wamid`; returns whether the customer's 24-hour window is open.
fn record_sent(sim: &Simulator, wamid: &str, to: &str, body: Value) -> bool {
    let mut state = sim.inner.lock();
    let last = state.last_customer_message.get(to).copied();
    let position = state.sent.len();
    state.sent_index.insert(wamid.to_owned(), position);
    state.sent.push(SentRecord {
        wamid: wamid.to_owned(),
        to: to.to_owned(),
        body,
        status: "accepted".into(),
    });
    last.is_some_and(|t| super::now_ms().saturating_sub(t) < WINDOW_MS)
}

/// After the configured delay, the statuses WhatsApp would send for a message: `failed` with
/// `failure`'s error, else `sent` and `delivered`, each as a signed webhook.
async fn play_statuses(inner: Arc<super::Inner>, wamid: String, to: String, failure: Option<i64>) {
    tokio::time::sleep(Duration::from_millis(inner.config.status_delay_ms)).await;
    let steps: Vec<(&str, Vec<CloudError>)> = match failure {
        Some(code) => {
            let (title, details) = describe(code);
            vec![(
                "failed",
                vec![CloudError {
                    code,
                    title: title.into(),
                    message: Some(title.into()),
                    error_data: Some(ErrorData {
                        messaging_product: None,
                        details: details.into(),
                    }),
                    href: None,
                }],
            )]
        }
        None => vec![("sent", vec![]), ("delivered", vec![])],
    };
    for (status, errors) in steps {
        set_status(&inner, &wamid, status);
        let envelope = inner.status_envelope(&wamid, status, &to, errors);
        inner.post_webhook_retrying(&envelope).await;
    }
}

impl super::Inner {
    /// Takes one send from the throughput bucket; false when the ceiling is reached.
    fn take_throughput(&self) -> bool {
        let rate = self.config.throughput_per_second;
        if !(rate.is_finite() && rate > 0.0) {
            return true;
        }
        let now = std::time::Instant::now();
        let mut state = self.lock();
        let (tokens, at) = state.throughput.unwrap_or((rate, now));
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(rate);
        let allowed = tokens >= 1.0;
        state.throughput = Some((if allowed { tokens - 1.0 } else { tokens }, now));
        state.throttled += u64::from(!allowed);
        allowed
    }
}

pub(crate) fn set_status(inner: &super::Inner, wamid: &str, status: &str) {
    let mut state = inner.lock();
    if let Some(&i) = state.sent_index.get(wamid) {
        state.sent[i].status = status.to_owned();
    }
}

/// `POST /{phone}/media`, multipart with `messaging_product`, `type` and `file`.
async fn upload(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = gate(&sim, &headers, false).await {
        return refused;
    }
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("boundary=").nth(1))
        .map(|b| b.trim_matches('"').to_owned());
    let Some(boundary) = boundary else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "multipart/form-data expected",
        );
    };
    let parts = parse_multipart(&body, &boundary);
    let field = |name: &str| parts.iter().find(|p| p.name == name);
    let (Some(file), Some(product)) = (field("file"), field("messaging_product")) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "file and messaging_product are required",
        );
    };
    if product.data.as_ref() != b"whatsapp" {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "messaging_product must be whatsapp",
        );
    }
    let mime = field("type")
        .map(|t| String::from_utf8_lossy(&t.data).into_owned())
        .or(file.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".into());
    let id = sim.store_media(file.data.clone(), &mime, file.filename.clone());
    (StatusCode::OK, axum::Json(json!({"id": id}))).into_response()
}

async fn media_info(
    State(sim): State<Simulator>,
    Path((_version, media_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = gate(&sim, &headers, false).await {
        return refused;
    }
    let Some(media) = sim.media(&media_id) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            100,
            "Invalid parameter",
            "Unknown media id",
        );
    };
    let base = sim
        .inner
        .base_url
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let answer = json!({
        "messaging_product": "whatsapp",
        "url": format!("{base}/download/{media_id}"),
        "mime_type": media.mime_type,
        "sha256": media.sha256,
        "file_size": media.bytes.len().to_string(),
        "id": media_id,
    });
    (StatusCode::OK, axum::Json(answer)).into_response()
}

async fn download(
    State(sim): State<Simulator>,
    Path(media_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = gate(&sim, &headers, false).await {
        return refused;
    }
    match sim.media(&media_id) {
        Some(media) => ([(header::CONTENT_TYPE, media.mime_type)], media.bytes).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// One part of a multipart body.
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// A small `multipart/form-data` parser (enough for the media endpoint).
pub fn parse_multipart(body: &Bytes, boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut parts = Vec::new();
    let mut positions = Vec::new();
    let mut i = 0;
    while i + d.len() <= body.len() {
        if &body[i..i + d.len()] == d {
            positions.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    for pair in positions.windows(2) {
        let start = pair[0] + d.len();
        let end = pair[1].saturating_sub(2); // the CRLF before the delimiter
        if start + 2 > end {
            continue;
        }
        let section = body.slice(start + 2..end); // skip the CRLF after the delimiter
        let Some(split) = section.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&section[..split]).into_owned();
        let data = section.slice(split + 4..);
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data,
        };
        for line in head.lines() {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                for attr in line.split(';').skip(1) {
                    let (k, v) = attr.trim().split_once('=').unwrap_or(("", ""));
                    let v = v.trim_matches('"').to_owned();
                    match k {
                        "name" => part.name = v,
                        "filename" => part.filename = Some(v),
                        _ => {}
                    }
                }
            } else if lower.starts_with("content-type:") {
                part.content_type = Some(line[13..].trim().to_owned());
            }
        }
        parts.push(part);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bridges_multipart_body() {
        let body = crate::graph::multipart_body("XyZ", b"\x89PNG\r\n--data", "image/png", "a.png");
        let parts = parse_multipart(&Bytes::from(body), "XyZ");
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].name, "messaging_product");
        assert_eq!(parts[0].data.as_ref(), b"whatsapp");
        assert_eq!(parts[1].data.as_ref(), b"image/png");
        assert_eq!(parts[2].filename.as_deref(), Some("a.png"));
        assert_eq!(parts[2].content_type.as_deref(), Some("image/png"));
        assert_eq!(parts[2].data.as_ref(), b"\x89PNG\r\n--data");
    }
}
