//! Typing notifications.

use std::sync::Arc;

use ruma::api::client::typing::create_typing_event::{self, v3::Typing};

use crate::{
    api::ruma::{Ruma, route},
    error::{Error, Result},
    services::Services,
};

pub fn routes(r: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    route(r, typing)
}

async fn typing(
    s: Arc<Services>,
    req: Ruma<create_typing_event::v3::Request>,
) -> Result<create_typing_event::v3::Response> {
    let b = &req.body;
    if b.user_id != *req.user_id() {
        return Err(Error::forbidden("You may only set your own typing state"));
    }
    let room = s.rooms.require_joined(&b.room_id, req.user_id())?;
    let timeout = match &b.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    s.typing.set(room, req.user_id(), timeout);
    Ok(create_typing_event::v3::Response::new())
}
