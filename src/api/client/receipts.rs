//! Read receipts and the fully-read marker.

use std::sync::Arc;

use ruma::{
    EventId, RoomId,
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
    },
    events::receipt::ReceiptThread,
};
use serde_json::value::to_raw_value;

use crate::{
    api::ruma::{Ruma, route},
    ephemeral::ReceiptKind,
    error::{Error, Result},
    services::Services,
    users::Identity,
};

pub fn routes(r: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    let r = route(r, receipt);
    route(r, read_markers)
}

async fn receipt(
    s: Arc<Services>,
    req: Ruma<create_receipt::v3::Request>,
) -> Result<create_receipt::v3::Response> {
    let b = &req.body;
    let thread = match &b.thread {
        ReceiptThread::Unthreaded => None,
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(root) => Some(root.to_string()),
        _ => return Err(Error::invalid_param("Unknown thread_id")),
    };
    match &b.receipt_type {
        ReceiptType::Read => {
            set_receipt(
                &s,
                req.identity(),
                &b.room_id,
                ReceiptKind::Read,
                thread,
                &b.event_id,
            )
            .await?
        }
        ReceiptType::ReadPrivate => {
            set_receipt(
                &s,
                req.identity(),
                &b.room_id,
                ReceiptKind::ReadPrivate,
                thread,
                &b.event_id,
            )
            .await?
        }
        ReceiptType::FullyRead if thread.is_some() => {
            return Err(Error::invalid_param(
                "thread_id cannot be used with m.fully_read",
            ));
        }
        ReceiptType::FullyRead => {
            set_fully_read(&s, req.identity(), &b.room_id, &b.event_id).await?
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {other}"
            )));
        }
    }
    Ok(create_receipt::v3::Response::new())
}

async fn read_markers(
    s: Arc<Services>,
    req: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let b = &req.body;
    let who = req.identity();
    if let Some(event_id) = &b.fully_read {
        set_fully_read(&s, who, &b.room_id, event_id).await?;
    }
    if let Some(event_id) = &b.read_receipt {
        set_receipt(&s, who, &b.room_id, ReceiptKind::Read, None, event_id).await?;
    }
    if let Some(event_id) = &b.private_read_receipt {
        set_receipt(
            &s,
            who,
            &b.room_id,
            ReceiptKind::ReadPrivate,
            None,
            event_id,
        )
        .await?;
    }
    Ok(set_read_marker::v3::Response::new())
}

/// The position of an event of the room the user is joined to, or the spec's errors.
fn event_in_joined_room(
    s: &Services,
    who: &Identity,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<(Arc<crate::rooms::RoomMeta>, u64)> {
    let room = s.rooms.require_joined(room_id, &who.user_id)?;
    let pos = s
        .rooms
        .event_pos(event_id)?
        .filter(|pos| {
            s.rooms
                .event(*pos)
                .is_ok_and(|e| e.stored.room == room.short)
        })
        .ok_or_else(|| Error::not_found("Event not found in this room"))?;
    Ok((room, pos))
}

async fn set_receipt(
    s: &Services,
    who: &Identity,
    room_id: &RoomId,
    kind: ReceiptKind,
    thread: Option<String>,
    event_id: &EventId,
) -> Result<()> {
    let (room, pos) = event_in_joined_room(s, who, room_id, event_id)?;
    s.receipts
        .set(&room, &who.user_id, kind, thread.as_deref(), event_id, pos)
        .await
}

/// `m.fully_read` is room account data, as the spec says and clients read it.
async fn set_fully_read(
    s: &Services,
    who: &Identity,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<()> {
    event_in_joined_room(s, who, room_id, event_id)?;
    let content = to_raw_value(&serde_json::json!({ "event_id": event_id })).expect("json");
    s.users
        .set_account_data(&who.user_id, Some(room_id), "m.fully_read", &content)
        .await
}
