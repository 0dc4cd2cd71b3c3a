//! The admin API's rooms.

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub(super) fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    r
}
