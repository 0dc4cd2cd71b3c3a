//! Who may see which conversation and ticket: one rule for the API's listings and reads, the
//! bot's answers and the notes.
//!
//! Admins see everything; an agent sees the conversations assigned to them and, with
//! `agents_see_queue`, the unassigned ones; anyone else only conversations whose room they are
//! joined to. A ticket is seen by whoever sees its conversation. What a caller may not see
//! answers as if it did not exist.

use ruma::{RoomId, UserId};

use super::{ConversationRecord, Desk, Role, Ticket, filter::Assignee};
use crate::error::Result;

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Viewer<'a> {
    pub(crate) user: &'a UserId,
    pub(crate) role: Role,
}

impl Viewer<'_> {
    /// Whether the viewer may read the conversation.
    pub(crate) fn sees(&self, desk: &Desk<'_>, r: &ConversationRecord) -> Result<bool> {
        Ok(match self.role {
            Role::Admin => true,
            Role::Agent => match &r.content.assignee {
                Some(a) => a == self.user,
                None => desk.config().agents_see_queue,
            },
            Role::None => desk.rooms.room(&r.room_id)?.is_joined(self.user),
        })
    }

    /// The assignees whose conversations an agent sees; `None` for everyone else (admins see
    /// all, customers are not listed anything).
    pub(crate) fn assignees(&self, desk: &Desk<'_>) -> Option<Vec<Assignee>> {
        (self.role == Role::Agent).then(|| {
            let mut allowed = vec![Assignee::User(self.user.to_owned())];
            if desk.config().agents_see_queue {
                allowed.push(Assignee::Unassigned);
            }
            allowed
        })
    }

    /// Whether the viewer may see the ticket: whether they see its conversation.
    pub(crate) fn sees_ticket(&self, desk: &Desk<'_>, t: &Ticket) -> Result<bool> {
        if self.role == Role::Admin {
            return Ok(true);
        }
        match desk.support.index.get(&t.room_id)? {
            Some(r) => self.sees(desk, &r),
            None => Ok(false),
        }
    }

    /// The conversation, if the viewer may see it.
    pub(crate) fn conversation(
        &self,
        desk: &Desk<'_>,
        room_id: &RoomId,
    ) -> Result<Option<ConversationRecord>> {
        Ok(match desk.support.index.get(room_id)? {
            Some(r) if self.sees(desk, &r)? => Some(r),
            _ => None,
        })
    }
}
