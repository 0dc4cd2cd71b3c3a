//! The authenticated peer of a federation request: its `X-Matrix` signature checked against
//! the origin's key before the handler runs.
//!
//! A request without the header is refused before its body is read. With one, the body is read
//! (at most the router's limit) because the signature covers it, parsed as JSON when present,
//! and the signature over method, URI, origin, this server and body verified.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::header::AUTHORIZATION,
};
use ruma::{CanonicalJsonValue, OwnedServerName};

use crate::{
    error::Error,
    federation::{Federation, Inbound},
    services::Services,
};

/// A request from another server, its signature checked.
pub(crate) struct Peer {
    pub(crate) origin: OwnedServerName,
    /// The address the request came from.
    pub(crate) from: std::net::IpAddr,
    /// The request's place among the origin's in flight, held until it ends.
    pub(crate) in_flight: crate::federation::InFlight,
    /// The JSON body, when there is one.
    body: Option<CanonicalJsonValue>,
}

impl Peer {
    /// The JSON body; `400 M_NOT_JSON` without one.
    pub(crate) fn json(&self) -> Result<serde_json::Value, Error> {
        let body = self
            .body
            .as_ref()
            .ok_or_else(|| Error::not_json("A JSON body is required"))?;
        serde_json::to_value(body).map_err(|_| Error::not_json("The body is not JSON"))
    }

    /// The JSON body as it came (canonical); `400 M_NOT_JSON` without one.
    pub(crate) fn raw(&self) -> Result<Box<serde_json::value::RawValue>, Error> {
        let body = self
            .body
            .as_ref()
            .ok_or_else(|| Error::not_json("A JSON body is required"))?;
        serde_json::value::to_raw_value(body).map_err(|_| Error::not_json("The body is not JSON"))
    }
}

impl FromRequest<Arc<Services>> for Peer {
    type Rejection = Error;

    async fn from_request(req: Request, s: &Arc<Services>) -> Result<Peer, Error> {
        let federation: &Federation = s
            .federation
            .as_deref()
            .ok_or_else(|| Error::forbidden("Federation is disabled on this server"))?;
        let unauthorized = |why: &str| {
            Error::matrix(
                axum::http::StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                why.to_owned(),
            )
        };
        let authorization = req
            .headers()
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthorized("Missing Authorization headers"))?
            .to_str()
            .map_err(|_| unauthorized("The Authorization header is not text"))?
            .to_owned();
        let from = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
        let method = req.method().to_string();
        let uri = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
        let bytes = Bytes::from_request(req, s)
            .await
            .map_err(|e| Error::too_large(e.body_text()))?;
        let body: Option<CanonicalJsonValue> = match bytes.is_empty() {
            true => None,
            false => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|_| Error::not_json("The body is not canonical JSON"))?,
            ),
        };
        let (origin, in_flight) = federation
            .authenticate(&Inbound {
                from,
                authorization: Some(&authorization),
                method: &method,
                uri: &uri,
                content: body.as_ref(),
            })
            .await?;
        Ok(Peer {
            origin,
            from,
            in_flight,
            body,
        })
    }
}
