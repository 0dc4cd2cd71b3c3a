//! Whose changes to the desk's state count.
//!
//! The desk's state types (`io.charla.*`) live in rooms where others may hold power: a customer
//! who created their room, or who got 100 in a direct chat, may send them as far as the room's
//! auth rules go. Power in a room is no say on the desk, so the desk takes those events only
//! from the support bot, its staff (agents and support admins), the server's admins, and the
//! own user of each appservice `support.desk_appservices` names (a bridge's bot, never its
//! puppets, who are customers). Anyone else's are refused when sent to this server
//! ([`super::policy`]) and ignored wherever they are read: a room's initial state, or an event
//! that came some other way.

use ruma::{RoomId, UserId};

use super::{CONVERSATION_EVENT, Conversation, Desk};
use crate::error::Result;

/// State events by others walked past before the index's record is taken instead. The send
/// path refuses them, so more than one in a row only comes from outside.
const MAX_WALK: usize = 32;

/// Whether `user`'s changes to the desk's state count.
pub(crate) fn is_desk(desk: &Desk<'_>, user: &UserId) -> Result<bool> {
    if user == desk.bot() || desk.support.is_staff(user) {
        return Ok(true);
    }
    let channels = &desk.config().desk_appservices;
    let desk_channel = desk
        .appservices
        .all()
        .iter()
        .any(|a| a.sender == user && channels.iter().any(|id| id == a.id()));
    if desk_channel {
        return Ok(true);
    }
    // The bot is local: its server is this server.
    Ok(user.server_name() == desk.bot().server_name()
        && desk
            .users
            .get(user)?
            .is_some_and(|r| r.admin && !r.deactivated))
}

/// The room's conversation as the desk last set it, with the position of that state event;
/// `None` if the desk never made the room a conversation. The newest `io.charla.conversation`
/// the desk sent: events others sent since are walked past (at most [`MAX_WALK`], then the
/// index's record, which only ever holds the desk's).
pub(crate) fn conversation(
    desk: &Desk<'_>,
    room_id: &RoomId,
) -> Result<Option<(Conversation, u64)>> {
    let room = desk.rooms.room(room_id)?;
    let mut at = desk.rooms.state_pos(room.short, CONVERSATION_EVENT, "")?;
    for _ in 0..MAX_WALK {
        let Some(pos) = at else {
            return Ok(None);
        };
        let ev = desk.rooms.event(pos)?;
        if is_desk(desk, &ev.pdu.sender)? {
            let content = Conversation::from_str_lenient(ev.pdu.content.get()).bounded();
            return Ok(Some((content, pos)));
        }
        at = ev.stored.prev_state;
    }
    Ok(desk
        .support
        .index
        .get(room_id)?
        .map(|r| (r.content, r.state_pos)))
}
