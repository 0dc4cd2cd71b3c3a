//! Matrix errors: a status code, an `errcode` and a message, serialized the way the spec says.
//!
//! Services return [`Error`] directly: the spec ties each failure to an errcode, and the service
//! is where the failure's meaning is known. Storage failures become `500 M_UNKNOWN` and are
//! logged here, once, without the request's secrets.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

use crate::storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A standard Matrix error body.
    #[error("{errcode}: {message}")]
    Matrix {
        status: StatusCode,
        errcode: &'static str,
        message: Cow<'static, str>,
        /// Extra fields merged into the body (`retry_after_ms`, `soft_logout`, …).
        extra: Option<Value>,
    },
    /// User-interactive authentication: `401` with the flows, session and progress.
    #[error("user-interactive authentication required")]
    Uiaa(Value),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

macro_rules! constructors {
    ($($name:ident => $status:ident, $code:literal;)*) => {
        $(
            pub fn $name(message: impl Into<Cow<'static, str>>) -> Self {
                Self::matrix(StatusCode::$status, $code, message)
            }
        )*
    };
}

impl Error {
    pub fn matrix(
        status: StatusCode,
        errcode: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Matrix {
            status,
            errcode,
            message: message.into(),
            extra: None,
        }
    }

    constructors! {
        forbidden => FORBIDDEN, "M_FORBIDDEN";
        not_found => NOT_FOUND, "M_NOT_FOUND";
        missing_token => UNAUTHORIZED, "M_MISSING_TOKEN";
        not_json => BAD_REQUEST, "M_NOT_JSON";
        bad_json => BAD_REQUEST, "M_BAD_JSON";
        invalid_param => BAD_REQUEST, "M_INVALID_PARAM";
        missing_param => BAD_REQUEST, "M_MISSING_PARAM";
        too_large => PAYLOAD_TOO_LARGE, "M_TOO_LARGE";
        user_in_use => BAD_REQUEST, "M_USER_IN_USE";
        invalid_username => BAD_REQUEST, "M_INVALID_USERNAME";
        exclusive => BAD_REQUEST, "M_EXCLUSIVE";
        room_in_use => BAD_REQUEST, "M_ROOM_IN_USE";
        unsupported_room_version => BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION";
        user_deactivated => FORBIDDEN, "M_USER_DEACTIVATED";
        guest_access_forbidden => FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN";
        threepid_denied => FORBIDDEN, "M_THREEPID_DENIED";
        unknown => BAD_REQUEST, "M_UNKNOWN";
    }

    /// `400 M_INVALID_PARAM` naming the field at fault (`"field"`), so a client can point at it.
    pub fn invalid_field(field: &str, message: impl Into<Cow<'static, str>>) -> Self {
        Error::Matrix {
            status: StatusCode::BAD_REQUEST,
            errcode: "M_INVALID_PARAM",
            message: message.into(),
            extra: Some(json!({ "field": field })),
        }
    }

    /// `M_UNKNOWN_TOKEN`: the access token is not (or no longer) valid.
    pub fn unknown_token(message: impl Into<Cow<'static, str>>) -> Self {
        Error::Matrix {
            status: StatusCode::UNAUTHORIZED,
            errcode: "M_UNKNOWN_TOKEN",
            message: message.into(),
            extra: Some(json!({ "soft_logout": false })),
        }
    }

    /// `M_LIMIT_EXCEEDED` with the spec's `retry_after_ms` (and the `Retry-After` header).
    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Error::Matrix {
            status: StatusCode::TOO_MANY_REQUESTS,
            errcode: "M_LIMIT_EXCEEDED",
            message: "Too many requests".into(),
            extra: Some(json!({ "retry_after_ms": retry_after_ms })),
        }
    }

    /// When a rate-limited caller may retry (`M_LIMIT_EXCEEDED`'s `retry_after_ms`).
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::Matrix {
                extra: Some(extra), ..
            } => extra.get("retry_after_ms").and_then(Value::as_u64),
            _ => None,
        }
    }

    /// `M_UNRECOGNIZED`: the endpoint does not exist (404) or not with this method (405).
    pub fn unrecognized(status: StatusCode) -> Self {
        Self::matrix(status, "M_UNRECOGNIZED", "Unrecognized request")
    }

    /// An internal failure that is the server's fault, not the client's.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::matrix(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", message)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Matrix { status, .. } => *status,
            Error::Uiaa(_) => StatusCode::UNAUTHORIZED,
            Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn errcode(&self) -> &'static str {
        match self {
            Error::Matrix { errcode, .. } => errcode,
            Error::Uiaa(_) => "M_FORBIDDEN",
            Error::Storage(_) => "M_UNKNOWN",
        }
    }

    /// The JSON body sent to the client.
    pub fn body(&self) -> Value {
        match self {
            Error::Matrix {
                errcode,
                message,
                extra,
                ..
            } => {
                let mut body = json!({ "errcode": errcode, "error": message });
                if let (Some(Value::Object(extra)), Value::Object(map)) = (extra, &mut body) {
                    map.extend(extra.clone());
                }
                body
            }
            Error::Uiaa(body) => body.clone(),
            Error::Storage(_) => {
                json!({ "errcode": "M_UNKNOWN", "error": "Internal storage error" })
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Error::Storage(e) = &self {
            tracing::error!(error = %e, "storage failure");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(ms) = self.retry_after_ms() {
            let secs = ms.div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// The error a request body yields when its client sent nothing for the idle timeout (the
/// listener's idle timer, `server::idle`): classified here so the layers that read bodies need
/// not know the listener.
#[derive(Debug)]
pub struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body sent nothing within the idle timeout")
    }
}

impl std::error::Error for BodyStalled {}

/// Whether `e`, or an error it wraps, is a stalled request body.
pub fn body_stalled(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<BodyStalled>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The answer to a request whose body stalled. The connection closes after it: the body was
/// not read to its end.
pub fn stalled_error() -> Error {
    Error::matrix(
        http::StatusCode::REQUEST_TIMEOUT,
        "M_UNKNOWN",
        "The request body stalled: nothing arrived within the idle timeout",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_exceeded_body_has_retry_after() {
        let body = Error::limit_exceeded(1500).body();
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
        assert_eq!(body["retry_after_ms"], 1500);
    }

    #[test]
    fn unknown_token_is_401() {
        let e = Error::unknown_token("bad");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.body()["soft_logout"], false);
    }
}
