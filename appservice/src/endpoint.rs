//! What every endpoint of the router shares: its state, the homeserver token check, and the
//! answer to an internal failure. Used by the router (`server.rs`) and the third-party routes.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::txn_store::TxnStore;

pub(crate) struct ServerState<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) hs_token: String,
    pub(crate) txns: TxnStore,
    /// Held for the whole processing of a transaction: transactions are handled strictly one
    /// after the other, and a retry that arrives while its first attempt still runs waits and
    /// then finds the txnId done.
    pub(crate) serial: tokio::sync::Mutex<()>,
}

/// Checks the homeserver's token: 401 when none is given, 403 when it is wrong.
pub(crate) fn authorize(
    expected: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), ApiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let from_query = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    });
    let given: Vec<&str> = from_header
        .into_iter()
        .chain(from_query.as_deref())
        .collect();
    if given.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "Missing homeserver token",
        ));
    }
    let matches = |t: &str| bool::from(t.as_bytes().ct_eq(expected.as_bytes()));
    if given.iter().all(|t| matches(t)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Invalid homeserver token",
        ))
    }
}

pub(crate) fn internal(what: &str, error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "{what}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", what)
}
