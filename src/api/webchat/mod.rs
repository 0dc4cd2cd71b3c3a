//! `/api/chat`: the web chat's REST API (the seed "Backend Requirements: ChatSupport", to the
//! letter; `docs/webchat.md`), its WebSocket and the widget's files.
//!
//! Every answer is the seed's envelope (`success`, `data`, `message`), errors included. A
//! request is authenticated ([`CustomerCall`]: the website's JWT, and the page's origin) before
//! its body is read; a body is at most [`MAX_BODY_BYTES`]. Handlers only parse and answer: the
//! operations are `webchat::service`'s.

mod sessions;
mod socket;

use std::sync::Arc;

use axum::{
    Router,
    extract::FromRequestParts,
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use http::{HeaderMap, StatusCode, header, request::Parts};
use serde_json::{Value, json};

use crate::{
    services::Services,
    webchat::{Chat, ChatError, Customer, WebChat, jwt::MAX_TOKEN_BYTES, widget},
};

/// Largest request body: `{"message": …}` with 500 characters of up to 4 bytes is ~2 KiB.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

/// The web chat's routes, when `[webchat]` is enabled.
pub(crate) fn routes(r: Router<Arc<Services>>, enabled: bool) -> Router<Arc<Services>> {
    if !enabled {
        return r;
    }
    r.route("/api/chat/session/active", get(sessions::active))
        .route("/api/chat/session", post(sessions::create))
        .route("/api/chat/sessions", get(sessions::history))
        .route("/api/chat/session/{id}/messages", get(sessions::messages))
        .route("/api/chat/message", post(sessions::send))
        .route("/api/chat/session/{id}/close", patch(sessions::close))
        .route(
            "/api/chat/session/{id}/mark-read",
            patch(sessions::mark_read),
        )
        .route("/api/chat/ws", get(socket::upgrade))
        .route("/widget", get(widget_root))
        .route("/widget/", get(demo))
        .route("/widget/index.html", get(demo))
        .route("/widget/charla.js", get(script))
        .route("/widget/charla.css", get(style))
}

/// Whether a request to `path` is the web chat's: its CORS answers follow `allowed_origins`.
pub(crate) fn is_webchat_path(path: &str) -> bool {
    path.starts_with("/api/chat/") || path == "/api/chat"
}

/// A verified customer: the request's bearer token verified, and its page's origin allowed.
pub(crate) struct CustomerCall {
    pub(crate) customer: Customer,
}

impl FromRequestParts<Arc<Services>> for CustomerCall {
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Services>) -> Result<Self, ChatError> {
        let web = s.webchat.as_ref().ok_or(ChatError::NotFound)?;
        check_origin(web, &parts.headers)?;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or(ChatError::Unauthorized)?;
        let customer = web.verifier.verify(token).ok_or(ChatError::Unauthorized)?;
        web.requests
            .check(&customer.id)
            .map_err(|e| ChatError::limited(&e))?;
        Ok(CustomerCall { customer })
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_BYTES)
        .then_some(token)
}

/// Refuses a browser page from an origin that is neither allowed nor the server's own. CORS
/// keeps other pages from reading the answers; this keeps them from acting at all.
pub(crate) fn check_origin(web: &WebChat, headers: &HeaderMap) -> Result<(), ChatError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let own_host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let own = own_host.map(|host| {
        let scheme = origin.split_once("://").map_or("http", |(s, _)| s);
        format!("{scheme}://{host}")
    });
    if web.origin_allowed(origin, own.as_deref()) {
        Ok(())
    } else {
        Err(ChatError::OriginRefused)
    }
}

/// The web chat's view of the server.
pub(crate) fn chat(s: &Services) -> Result<Chat<'_>, ChatError> {
    s.chat().ok_or(ChatError::NotFound)
}

/// `200` (or `status`) with the seed's success envelope.
fn ok(status: StatusCode, data: Option<Value>, message: &str) -> Response {
    let mut body = json!({ "success": true, "message": message });
    if let Some(data) = data {
        body["data"] = data;
    }
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ChatError {
    fn into_response(self) -> Response {
        let failure = |status: StatusCode, message: &str| {
            (
                status,
                axum::Json(json!({ "success": false, "message": message })),
            )
                .into_response()
        };
        match self {
            ChatError::Invalid { field, message } => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "success": false,
                    "message": [message],
                    "errors": { field: [message] },
                })),
            )
                .into_response(),
            ChatError::Unauthorized => {
                failure(StatusCode::UNAUTHORIZED, "Token inválido o expirado")
            }
            ChatError::Forbidden => failure(
                StatusCode::FORBIDDEN,
                "No tienes permisos para acceder a esta sesión de chat",
            ),
            ChatError::OriginRefused => failure(
                StatusCode::FORBIDDEN,
                "Este sitio no puede usar el chat de soporte",
            ),
            ChatError::NotFound => failure(StatusCode::NOT_FOUND, "Sesión de chat no encontrada"),
            ChatError::Conflict => {
                failure(StatusCode::CONFLICT, "Ya tienes una sesión de chat activa")
            }
            ChatError::TooLarge => failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "La petición es demasiado grande",
            ),
            ChatError::RateLimited { retry_after_secs } => {
                let message = format!(
                    "Demasiadas solicitudes: vuelve a intentarlo en {retry_after_secs} segundos"
                );
                let mut response = failure(StatusCode::TOO_MANY_REQUESTS, &message);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after_secs.into());
                response
            }
            ChatError::Internal(e) => {
                tracing::error!(error = %e, "web chat request failed");
                failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Error interno del servidor",
                )
            }
        }
    }
}

async fn widget_root() -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, "/widget/")],
    )
        .into_response()
}

/// A widget file, cacheable for a while (a new server version may change it).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn demo() -> Response {
    asset("text/html; charset=utf-8", widget::DEMO)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", widget::SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", widget::STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_token_is_taken() {
        assert_eq!(bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
