//! The Cloud API client: send messages, mark read, upload and download media, always with the
//! bearer token. Failures come back classified ([`SendError::class`]) so the outbox knows
//! whether to retry, wait or report.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cloud::error::{ErrorClass, classify};
use crate::cloud::send::{MarkRead, MediaInfo, OutgoingMessage, SendResponse};
use crate::cloud::{GraphError, GraphErrorBody};

/// A failed Graph call.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer: connection refused, reset or timed out.
    #[error("WhatsApp is unreachable: {0}")]
    Unreachable(String),
    /// An answer with an error status.
    #[error("WhatsApp answered {status}: ({}) {}", .error.code, .error.message)]
    Api { status: u16, error: GraphError },
}

impl SendError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unreachable(_) => ErrorClass::Transient,
            Self::Api { status, error } => match classify(error.code) {
                ErrorClass::Permanent if *status >= 500 || *status == 429 => {
                    if *status == 429 {
                        ErrorClass::RateLimited
                    } else {
                        ErrorClass::Transient
                    }
                }
                class => class,
            },
        }
    }

    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Api { error, .. } => Some(error.code),
            Self::Unreachable(_) => None,
        }
    }

    /// WhatsApp's explanation, for the agent.
    pub fn reason(&self) -> String {
        match self {
            Self::Unreachable(e) => e.clone(),
            Self::Api { error, .. } => error.reason(),
        }
    }
}

/// A Graph API client for one business phone number.
#[derive(Clone)]
pub struct Graph {
    http: reqwest::Client,
    base: String,
    phone_number_id: String,
    token: String,
}

impl Graph {
    pub fn new(base: &str, phone_number_id: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .expect("reqwest client");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            phone_number_id: phone_number_id.to_owned(),
            token: token.to_owned(),
        }
    }

    /// `POST /{phone_number_id}/messages` with a message.
    pub async fn send(&self, message: &OutgoingMessage) -> Result<SendResponse, SendError> {
        self.post_json(message).await
    }

    /// `POST /{phone_number_id}/messages` marking a customer's message read.
    pub async fn mark_read(&self, wamid: &str) -> Result<(), SendError> {
        self.post_json::<serde_json::Value>(&MarkRead::new(wamid))
            .await
            .map(drop)
    }

    async fn post_json<T: DeserializeOwned>(&self, body: &impl Serialize) -> Result<T, SendError> {
        let url = format!("{}/{}/messages", self.base, self.phone_number_id);
        let request = self.http.post(url).bearer_auth(&self.token).json(body);
        parse(request.send().await).await
    }

    /// `POST /{phone_number_id}/media` (multipart: `messaging_product`, `type`, `file`);
    /// returns the media id.
    pub async fn upload(
        &self,
        data: Bytes,
        mime: &str,
        filename: &str,
    ) -> Result<String, SendError> {
        #[derive(serde::Deserialize)]
        struct Uploaded {
            id: String,
        }
        let boundary = format!("charla{:016x}", rand::random::<u64>());
        let body = multipart_body(&boundary, &data, mime, filename);
        let url = format!("{}/{}/media", self.base, self.phone_number_id);
        let request = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        let uploaded: Uploaded = parse(request.send().await).await?;
        Ok(uploaded.id)
    }

    /// `GET /{media-id}`, then the URL it returns: the bytes and what WhatsApp says of them.
    pub async fn download(&self, media_id: &str) -> Result<(MediaInfo, Bytes), SendError> {
        let url = format!("{}/{}", self.base, media_id);
        let info: MediaInfo =
            parse(self.http.get(url).bearer_auth(&self.token).send().await).await?;
        let (_, bytes) = success_body(
            self.http
                .get(&info.url)
                .bearer_auth(&self.token)
                .send()
                .await,
        )
        .await?;
        Ok((info, bytes))
    }
}

/// The body of a 2xx answer; anything else as the Graph error it carries.
async fn success_body(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<(reqwest::StatusCode, Bytes), SendError> {
    let response = response.map_err(|e| SendError::Unreachable(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| SendError::Unreachable(e.to_string()))?;
    if !status.is_success() {
        return Err(api_error(status.as_u16(), &bytes));
    }
    Ok((status, bytes))
}

async fn parse<T: DeserializeOwned>(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, SendError> {
    let (status, bytes) = success_body(response).await?;
    serde_json::from_slice(&bytes).map_err(|e| SendError::Api {
        status: status.as_u16(),
        error: GraphError {
            message: format!("unexpected answer: {e}"),
            kind: "Unexpected".into(),
            code: 0,
            error_data: None,
            error_subcode: None,
            fbtrace_id: String::new(),
        },
    })
}

/// The Graph error of an answer; bodies that are not Graph errors (a proxy's 502 page) become
/// code 0 with the status, so 5xx still classify as transient.
fn api_error(status: u16, body: &[u8]) -> SendError {
    let error = serde_json::from_slice::<GraphErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| GraphError {
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
            kind: "HTTP".into(),
            code: 0,
            error_data: None,
            error_subcode: None,
            fbtrace_id: String::new(),
        });
    SendError::Api { status, error }
}

/// A `multipart/form-data` body with the three fields the media endpoint takes.
pub fn multipart_body(boundary: &str, data: &[u8], mime: &str, filename: &str) -> Vec<u8> {
    let filename = filename.replace(['"', '\r', '\n'], "_");
    let mut body = Vec::with_capacity(data.len() + 512);
    for (name, value) in [("messaging_product", "whatsapp"), ("type", mime)] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {mime}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}
