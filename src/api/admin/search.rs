//! `/_charla/admin/v1/search`: the index's state, and rebuilding it (`charla admin reindex`).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use http::StatusCode;

use super::{Administrator, PREFIX};
use crate::{error::Result, search::IndexStatus, services::Services};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route(&format!("{PREFIX}/search"), get(status))
        .route(&format!("{PREFIX}/search/reindex"), post(reindex))
}

async fn status(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
) -> Result<Json<IndexStatus>> {
    Ok(Json(s.search.status(s.stream.head())?))
}

/// Starts a rebuild; `202` with where the index stands, `409` while one runs.
async fn reindex(
    State(s): State<Arc<Services>>,
    _admin: Administrator,
) -> Result<(StatusCode, Json<IndexStatus>)> {
    crate::search::reindex::start(s.clone())?;
    Ok((
        StatusCode::ACCEPTED,
        Json(s.search.status(s.stream.head())?),
    ))
}
