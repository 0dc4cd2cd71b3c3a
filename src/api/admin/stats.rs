//! `GET /_charla/admin/v1/stats`: what `charla admin stats` prints.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};

use super::{Administrator, PREFIX};
use crate::{admin::Stats, error::Result, services::Services};

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r.route(&format!("{PREFIX}/stats"), get(stats))
}

async fn stats(State(s): State<Arc<Services>>, _admin: Administrator) -> Result<Json<Stats>> {
    Ok(Json(s.admin().stats()?))
}
