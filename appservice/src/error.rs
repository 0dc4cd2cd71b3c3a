//! Error types: registration files, homeserver answers to the intent client, and the Matrix
//! error bodies the appservice router sends.

use std::path::Path;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A registration file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("cannot read or write registration {0}")]
    Io(String),
    #[error("registration is not valid YAML for an appservice: {0}")]
    Yaml(String),
    #[error("invalid registration: {0}")]
    Invalid(String),
}

impl RegistrationError {
    /// Prefixes the message with the file it came from.
    pub(crate) fn in_file(self, path: &Path) -> Self {
        let file = path.display();
        match self {
            Self::Io(m) => Self::Io(m),
            Self::Yaml(m) => Self::Yaml(format!("{file}: {m}")),
            Self::Invalid(m) => Self::Invalid(format!("{file}: {m}")),
        }
    }
}

/// What went wrong with a request the intent client made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The homeserver answered with a non-2xx status and (usually) a Matrix error body.
    #[error("homeserver answered {status} {errcode}: {message}")]
    Matrix {
        status: u16,
        /// `M_UNKNOWN` when the body carried no errcode.
        errcode: String,
        message: String,
        /// From the body (`retry_after_ms`) or the `Retry-After` header, for 429s.
        retry_after_ms: Option<u64>,
    },
    /// The request never got an HTTP answer (connection refused, reset, timed out).
    #[error("request to the homeserver failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// A 2xx answer whose body is not what the endpoint returns.
    #[error("unexpected response from the homeserver: {0}")]
    InvalidResponse(String),
    /// The caller passed something that cannot become a request (e.g. a bad homeserver URL).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl Error {
    /// The Matrix errcode, if the homeserver sent one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Matrix { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// The HTTP status, if the homeserver answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Matrix { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The error a [`crate::Handler`] returns; any error type converts into it with `?`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A Matrix error body the appservice router answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "errcode": self.errcode, "error": self.message })),
        )
            .into_response()
    }
}
