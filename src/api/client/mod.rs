//! The Client-Server API, one file per area of the spec.

mod account;
pub(in crate::api) mod appservice;
mod backup;
mod devices;
pub(crate) mod directory;
mod discovery;
mod keys;
pub(crate) mod media;
mod membership;
mod message;
mod presence;
mod preview;
mod profile;
mod push;
mod pushers;
mod receipts;
mod relations;
mod room;
mod search;
mod sync;
mod thirdparty;
mod to_device;
mod typing;

use std::sync::Arc;

use axum::Router;

use crate::{events::ClientFormat, rooms::EventView, services::Services, users::Identity};

/// How events look to the requesting device on the room endpoints (with `room_id`).
fn view(who: &Identity) -> EventView<'_> {
    EventView::of(&who.user_id, &who.device_id, ClientFormat::WithRoomId)
}

pub fn routes(r: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let r = discovery::routes(r);
    let r = account::routes(r);
    let r = appservice::routes(r);
    let r = devices::routes(r);
    let r = profile::routes(r);
    let r = room::routes(r);
    let r = membership::routes(r);
    let r = message::routes(r);
    let r = directory::routes(r);
    let r = sync::routes(r);
    let r = receipts::routes(r);
    let r = typing::routes(r);
    let r = presence::routes(r);
    let r = pushers::routes(r);
    let r = relations::routes(r);
    let r = keys::routes(r);
    let r = to_device::routes(r);
    let r = backup::routes(r);
    let r = media::routes(r);
    let r = preview::routes(r);
    let r = thirdparty::routes(r);
    let r = search::routes(r);
    push::routes(r)
}
