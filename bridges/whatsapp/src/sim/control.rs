//! The simulator's control API, to play the customers and look at what the business did:
//!
//! - `POST /sim/customers/{wa_id}/messages` `{"name": "María", "message": {"type": "text",
//!   "text": {"body": "Hola"}}}` (any Cloud API message object; `id`, `from` and `timestamp`
//!   are filled in, media objects get `mime_type` and `sha256` from storage; `"user_id"` adds a
//!   business-scoped id and `"omit_phone": true` leaves the phone number out) sends it as a
//!   signed webhook; answers `{"wamid", "webhook": {"body", "signature", "status"}}`.
//! - `POST /sim/media?mime_type=…&filename=…` with the raw bytes: a customer's file; `{"id"}`.
//! - `GET /sim/media/{id}`: the bytes of any stored file (e.g. one the business uploaded).
//! - `GET /sim/sent`: what the business sent, in order, with each message's status.
//! - `POST /sim/sent/{wamid}/status` `{"status": "read"}`: sends that status webhook.
//! - `GET /sim/read_marks`: the customer messages the business marked read.
//! - `POST /sim/fault` `{"mode": "down" | "slow" | "rate_limited" | "error" | "none", …}`.
//! - `POST /sim/customers/{wa_id}/window` `{"open": false}`: closes (or opens) the 24-hour
//!   window, as if the customer last wrote 25 hours ago (or just now).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, extract::rejection::JsonRejection};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Fault, Simulator, now_ms};

pub fn routes(sim: Simulator) -> Router {
    Router::new()
        .route("/sim/customers/{wa_id}/messages", post(customer_message))
        .route("/sim/customers/{wa_id}/window", post(window))
        .route("/sim/media", post(upload))
        .route("/sim/media/{id}", get(media))
        .route("/sim/sent", get(sent))
        .route("/sim/sent/{wamid}/status", post(status))
        .route("/sim/read_marks", get(read_marks))
        .route("/sim/fault", post(fault))
        .layer(DefaultBodyLimit::max(100 * 1024 * 1024))
        .with_state(sim)
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.to_string()})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct CustomerMessage {
    #[serde(default)]
    name: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    omit_phone: bool,
    message: Value,
}

impl Simulator {
    /// Sends a customer's message as a signed webhook (see the module docs for the fields).
    pub async fn customer_says(
        &self,
        wa_id: &str,
        name: &str,
        user_id: Option<&str>,
        omit_phone: bool,
        message: Value,
    ) -> Result<(String, super::webhooks::Delivered), String> {
        let Value::Object(mut message) = message else {
            return Err("message must be an object".into());
        };
        let kind = message
            .get("type")
            .and_then(Value::as_str)
            .ok_or("message.type is required")?
            .to_owned();
        if let Some(id) = message
            .get(&kind)
            .and_then(|m| m.get("id"))
            .and_then(Value::as_str)
        {
            let media = self
                .media(id)
                .ok_or_else(|| format!("unknown media id {id}"))?;
            let object = message
                .get_mut(&kind)
                .and_then(Value::as_object_mut)
                .expect("checked");
            object.entry("mime_type").or_insert(json!(media.mime_type));
            object.entry("sha256").or_insert(json!(media.sha256));
        }
        let wamid = self.inner.new_wamid();
        message.insert("id".into(), json!(wamid));
        message.insert("timestamp".into(), json!((now_ms() / 1000).to_string()));
        if !omit_phone {
            message.insert("from".into(), json!(wa_id));
        }
        let mut contact = json!({"profile": {"name": name}});
        if !omit_phone {
            contact["wa_id"] = json!(wa_id);
        }
        if let Some(user_id) = user_id {
            message.insert("from_user_id".into(), json!(user_id));
            contact["user_id"] = json!(user_id);
        }
        self.inner
            .lock()
            .last_customer_message
            .insert(wa_id.to_owned(), now_ms());
        let envelope = self
            .inner
            .envelope(json!({"contacts": [contact], "messages": [Value::Object(message)]}));
        let delivered = self.inner.post_webhook(&envelope).await;
        Ok((wamid, delivered))
    }

    /// Sends a status webhook for a message the business sent.
    pub async fn send_status(&self, wamid: &str, status: &str) -> Result<u16, String> {
        let to = self
            .sent_message(wamid)
            .map(|r| r.to)
            .ok_or_else(|| format!("no sent message {wamid}"))?;
        super::graph_api::set_status(&self.inner, wamid, status);
        let envelope = self.inner.status_envelope(wamid, status, &to, Vec::new());
        Ok(self.inner.post_webhook(&envelope).await.status)
    }
}

async fn customer_message(
    State(sim): State<Simulator>,
    Path(wa_id): Path<String>,
    body: Result<Json<CustomerMessage>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(e) => return bad_request(e.body_text()),
    };
    match sim
        .customer_says(
            &wa_id,
            &body.name,
            body.user_id.as_deref(),
            body.omit_phone,
            body.message,
        )
        .await
    {
        Ok((wamid, webhook)) => Json(json!({"wamid": wamid, "webhook": webhook})).into_response(),
        Err(e) => bad_request(e),
    }
}

#[derive(Deserialize)]
struct WindowBody {
    open: bool,
}

async fn window(
    State(sim): State<Simulator>,
    Path(wa_id): Path<String>,
    Json(body): Json<WindowBody>,
) -> Response {
    let at = if body.open {
        now_ms()
    } else {
        now_ms().saturating_sub(25 * 60 * 60 * 1000)
    };
    sim.inner.lock().last_customer_message.insert(wa_id, at);
    Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct UploadQuery {
    mime_type: Option<String>,
    filename: Option<String>,
}

async fn upload(
    State(sim): State<Simulator>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Response {
    let mime = q
        .mime_type
        .unwrap_or_else(|| "application/octet-stream".into());
    let id = sim.store_media(body, &mime, q.filename);
    Json(json!({"id": id})).into_response()
}

async fn media(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    match sim.media(&id) {
        Some(m) => ([(header::CONTENT_TYPE, m.mime_type)], m.bytes).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown media"})),
        )
            .into_response(),
    }
}

async fn sent(State(sim): State<Simulator>) -> Response {
    Json(json!({"sent": sim.sent()})).into_response()
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

async fn status(
    State(sim): State<Simulator>,
    Path(wamid): Path<String>,
    Json(body): Json<StatusBody>,
) -> Response {
    match sim.send_status(&wamid, &body.status).await {
        Ok(status) => Json(json!({"webhook_status": status})).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, Json(json!({"error": e}))).into_response(),
    }
}

async fn read_marks(State(sim): State<Simulator>) -> Response {
    Json(json!({"read": sim.read_marks()})).into_response()
}

async fn fault(State(sim): State<Simulator>, body: Result<Json<Fault>, JsonRejection>) -> Response {
    match body {
        Ok(Json(fault)) => {
            sim.set_fault(fault.clone());
            Json(json!({"fault": fault})).into_response()
        }
        Err(e) => bad_request(e.body_text()),
    }
}
