//! `GET /_charla/admin/v1/backup`: the running server's archive, streamed (`charla admin
//! backup`). The format and what it holds are in `crate::backup`.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use super::{Administrator, PREFIX};
use crate::{error::Result, services::Services};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route(&format!("{PREFIX}/backup"), get(backup))
}

async fn backup(admin: Administrator, State(s): State<Arc<Services>>) -> Result<Response> {
    let backup = s.backup.start()?;
    // Before the snapshot: the archive holds the record of its own making.
    s.support
        .audit
        .write(&admin.actor(&s.support.bot), "server.backup", "", json!({}))
        .await?;
    let headers = [
        (http::header::CONTENT_TYPE, "application/x-tar"),
        (http::header::CACHE_CONTROL, "no-store"),
    ];
    Ok((headers, Body::from_stream(backup.stream())).into_response())
}
