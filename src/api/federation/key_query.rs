//! `POST /_matrix/key/v2/query` and `GET /_matrix/key/v2/query/{serverName}`: this server as a
//! notary of other servers' keys (`federation/notary.rs`). Unauthenticated, as the spec has
//! it: the documents sign themselves. The body is small ([`MAX_BODY`]) and names at most
//! `notary::MAX_SERVERS` servers; fetches are bounded per address by the keyring.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, Path, Query, State},
};
use ruma::OwnedServerName;
use serde::Deserialize;
use serde_json::{Value, json};

use super::federation;
use crate::{error::Error, services::Services};

/// Largest key query body: 50 servers with a few key ids each fit many times over.
pub(super) const MAX_BODY: usize = 64 << 10;

#[derive(Deserialize)]
pub(super) struct Criteria {
    minimum_valid_until_ts: Option<u64>,
}

#[derive(Deserialize)]
struct Body {
    server_keys: BTreeMap<OwnedServerName, BTreeMap<String, Option<Criteria>>>,
}

pub(super) async fn query(
    State(s): State<Arc<Services>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let federation = federation(&s)?;
    let body: Body = serde_json::from_slice(&body)
        .map_err(|e| Error::bad_json(format!("invalid key query: {e}")))?;
    let servers = body
        .server_keys
        .into_iter()
        .map(|(server, keys)| {
            let wanted = keys
                .into_values()
                .flatten()
                .filter_map(|c| c.minimum_valid_until_ts)
                .max()
                .unwrap_or(0);
            (server, wanted)
        })
        .collect();
    let documents = federation.query_keys(servers, from.ip()).await?;
    Ok(Json(json!({ "server_keys": documents })))
}

pub(super) async fn query_one(
    State(s): State<Arc<Services>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(server): Path<String>,
    Query(criteria): Query<Criteria>,
) -> Result<Json<Value>, Error> {
    let federation = federation(&s)?;
    let server = OwnedServerName::try_from(server)
        .map_err(|e| Error::invalid_param(format!("not a server name: {e}")))?;
    let wanted = criteria.minimum_valid_until_ts.unwrap_or(0);
    let documents = federation
        .query_keys(BTreeMap::from([(server, wanted)]), from.ip())
        .await?;
    Ok(Json(json!({ "server_keys": documents })))
}
