//! The Client-Server API, one file per area of the spec.

mod account;
mod devices;
mod directory;
mod discovery;
mod media;
mod membership;
mod message;
mod profile;
mod push;
mod room;
mod sync;

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = discovery::routes(r);
    let r = account::routes(r);
    let r = devices::routes(r);
    let r = profile::routes(r);
    let r = room::routes(r);
    let r = membership::routes(r);
    let r = message::routes(r);
    let r = directory::routes(r);
    let r = sync::routes(r);
    let r = media::routes(r);
    push::routes(r)
}
