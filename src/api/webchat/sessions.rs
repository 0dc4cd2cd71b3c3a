//! The seed's six endpoints, and the customer's history.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, State},
    response::Response,
};
use http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use super::{CustomerCall, MAX_BODY_BYTES, chat, ok};
use crate::{
    services::Services,
    webchat::{ChatError, messages::ChatMessage, service},
};

/// `GET /api/chat/session/active`.
pub(super) async fn active(
    State(s): State<Arc<Services>>,
    call: CustomerCall,
) -> Result<Response, ChatError> {
    let view = service::active(&chat(&s)?, &call.customer).await?;
    let data = view.map_or(Value::Null, |v| v.to_json());
    Ok(ok(
        StatusCode::OK,
        Some(data),
        "Sesión obtenida exitosamente",
    ))
}

/// `POST /api/chat/session`. A body, if any, is not read: the session has no fields to set.
pub(super) async fn create(
    State(s): State<Arc<Services>>,
    call: CustomerCall,
) -> Result<Response, ChatError> {
    let view = service::create(&chat(&s)?, &call.customer).await?;
    Ok(ok(
        StatusCode::CREATED,
        Some(view.to_json()),
        "Sesión creada exitosamente",
    ))
}

/// `GET /api/chat/sessions`: the customer's sessions, newest first, without messages.
pub(super) async fn history(
    State(s): State<Arc<Services>>,
    call: CustomerCall,
) -> Result<Response, ChatError> {
    let sessions = service::history(&chat(&s)?, &call.customer)?;
    let data = sessions.iter().map(|v| v.to_json()).collect();
    Ok(ok(
        StatusCode::OK,
        Some(data),
        "Sesiones obtenidas exitosamente",
    ))
}

/// `GET /api/chat/session/:id/messages`.
pub(super) async fn messages(
    State(s): State<Arc<Services>>,
    call: CustomerCall,
    Path(id): Path<String>,
) -> Result<Response, ChatError> {
    let id = session_id(&id)?;
    let messages = service::messages(&chat(&s)?, &call.customer, &id)?;
    let data = messages.iter().map(ChatMessage::to_json).collect();
    Ok(ok(
        StatusCode::OK,
        Some(data),
        "Mensajes obtenidos exitosamente",
    ))
}

/// `POST /api/chat/message` with `{"message": "…"}`.
pub(super) async fn send(
    State(s): State<Arc<Services>>,
    call: CustomerCall,
    body: Body,
) -> Result<Response, ChatError> {
    let text = message_field(&read_body(body).await?)?;
    let message = service::send(&chat(&s)?, &call.customer, &text).await?;
    Ok(ok(
        StatusCode::CREATED,
        Some(message.to_json()),
        "Mensaje enviado exitosamente",
    ))
}

/// `PATCH /api/chat/session/:id/close`.
pub(super) async fn close(
    State(s): State<Arc<Services>>,
    call: CustomerCall,
    Path(id): Path<String>,
) -> Result<Response, ChatError> {
    let id = session_id(&id)?;
    service::close(&chat(&s)?, &call.customer, &id).await?;
    Ok(ok(StatusCode::OK, None, "Sesión cerrada exitosamente"))
}

/// `PATCH /api/chat/session/:id/mark-read`.
pub(super) async fn mark_read(
    State(s): State<Arc<Services>>,
    call: CustomerCall,
    Path(id): Path<String>,
) -> Result<Response, ChatError> {
    let id = session_id(&id)?;
    service::mark_read(&chat(&s)?, &call.customer, &id).await?;
    Ok(ok(StatusCode::OK, None, "Mensajes marcados como leídos"))
}

/// A session id from the path: what is not a UUID names no session.
fn session_id(text: &str) -> Result<Uuid, ChatError> {
    Uuid::parse_str(text).map_err(|_| ChatError::NotFound)
}

/// The body, read after the caller was authenticated, refused past [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<bytes::Bytes, ChatError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ChatError::TooLarge)
}

/// The `message` of a `{"message": "…"}` body.
fn message_field(body: &[u8]) -> Result<String, ChatError> {
    let invalid = |message: &str| ChatError::Invalid {
        field: "message",
        message: message.into(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("El mensaje no puede estar vacío"));
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| ChatError::Invalid {
        field: "body",
        message: "El cuerpo de la petición debe ser JSON".into(),
    })?;
    match value.get("message") {
        None | Some(Value::Null) => Err(invalid("El mensaje no puede estar vacío")),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(invalid("El mensaje debe ser texto")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_error(body: &str) -> String {
        match message_field(body.as_bytes()) {
            Err(ChatError::Invalid { message, .. }) => message,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn the_message_field_is_required_and_textual() {
        assert_eq!(message_field(br#"{"message":"hola"}"#).unwrap(), "hola");
        assert_eq!(field_error(""), "El mensaje no puede estar vacío");
        assert_eq!(field_error("{}"), "El mensaje no puede estar vacío");
        assert_eq!(
            field_error(r#"{"message":null}"#),
            "El mensaje no puede estar vacío"
        );
        assert_eq!(field_error(r#"{"message":5}"#), "El mensaje debe ser texto");
        assert_eq!(field_error("{"), "El cuerpo de la petición debe ser JSON");
    }
}
