//! Appservice endpoints of the Client-Server API: ping.

use std::sync::Arc;

use http::StatusCode;
use ruma::api::client::appservice::request_ping;
use serde_json::json;

use crate::{
    api::ruma::{Ruma, route},
    appservice::PingError,
    error::{Error, Result},
    services::Services,
};

pub fn routes(r: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    route(r, ping)
}

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: the homeserver pings the
/// appservice and reports the round trip, so an appservice can check both directions work.
async fn ping(
    s: Arc<Services>,
    req: Ruma<request_ping::v1::Request>,
) -> Result<request_ping::v1::Response> {
    let asv = req
        .maybe_identity()
        .and_then(|who| who.appservice.clone())
        .filter(|asv| asv.id() == req.body.appservice_id)
        .ok_or_else(|| {
            Error::forbidden("Only the appservice itself may ping it, with its as_token")
        })?;
    let txn = req.body.transaction_id.as_ref().map(|t| t.as_str());
    let ms = s.appservices.ping(&asv, txn).await.map_err(ping_error)?;
    Ok(request_ping::v1::Response::new(
        std::time::Duration::from_millis(ms),
    ))
}

/// A failed ping as the spec's error (the admin API's ping answers the same).
pub(crate) fn ping_error(e: PingError) -> Error {
    match e {
        PingError::UrlNotSet => Error::matrix(
            StatusCode::BAD_REQUEST,
            "M_URL_NOT_SET",
            "The appservice has no URL",
        ),
        PingError::Timeout => Error::matrix(
            StatusCode::GATEWAY_TIMEOUT,
            "M_CONNECTION_TIMEOUT",
            "The appservice did not answer in time",
        ),
        PingError::ConnectionFailed(e) => Error::matrix(
            StatusCode::BAD_GATEWAY,
            "M_CONNECTION_FAILED",
            format!("Cannot reach the appservice: {e}"),
        ),
        PingError::BadStatus { status, body } => Error::Matrix {
            status: StatusCode::BAD_GATEWAY,
            errcode: "M_BAD_STATUS",
            message: format!("The appservice answered {status}").into(),
            extra: Some(json!({ "status": status, "body": body })),
        },
    }
}
