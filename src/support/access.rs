//! Who may see which conversation and ticket: one rule for the API's listings and reads, the
//! bot's answers and the notes.
//!
//! Admins see everything; an agent sees the conversations assigned to them and, with
//! `agents_see_queue`, the unassigned ones; anyone else only conversations whose room they are
//! joined to. A ticket is seen by whoever sees its conversation. What a caller may not see
//! answers as if it did not exist.

use ruma::{RoomId, UserId};

use super::{ConversationRecord, Role, Ticket};
use crate::{error::Result, services::Services};

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub user: &'a UserId,
    pub role: Role,
}

impl Viewer<'_> {
    /// Whether the viewer may read the conversation.
    pub fn sees(&self, s: &Services, r: &ConversationRecord) -> Result<bool> {
        Ok(match self.role {
            Role::Admin => true,
            Role::Agent => self.sees_assignee(s, r.content.assignee.as_deref()),
            Role::None => match RoomId::parse(&r.room_id) {
                Ok(room_id) => s.rooms.room(&room_id)?.is_joined(self.user),
                Err(_) => false,
            },
        })
    }

    /// Whether an agent sees conversations with this assignee (`None`: the queue).
    fn sees_assignee(&self, s: &Services, assignee: Option<&str>) -> bool {
        match assignee {
            Some(a) => a == self.user.as_str(),
            None => s.config.support.agents_see_queue,
        }
    }

    /// The assignees whose conversations an agent sees (`""`: the queue); `None` for everyone
    /// else (admins see all, customers are not listed anything).
    pub fn assignees(&self, s: &Services) -> Option<Vec<String>> {
        (self.role == Role::Agent).then(|| {
            let mut allowed = vec![self.user.to_string()];
            if s.config.support.agents_see_queue {
                allowed.push(String::new());
            }
            allowed
        })
    }

    /// Whether the viewer may see the ticket: whether they see its conversation.
    pub fn sees_ticket(&self, s: &Services, t: &Ticket) -> Result<bool> {
        if self.role == Role::Admin {
            return Ok(true);
        }
        match s.support.index.get(&t.room_id)? {
            Some(r) => self.sees(s, &r),
            None => Ok(false),
        }
    }

    /// The conversation, if the viewer may see it.
    pub fn conversation(
        &self,
        s: &Services,
        room_id: &RoomId,
    ) -> Result<Option<ConversationRecord>> {
        Ok(match s.support.index.get(room_id.as_str())? {
            Some(r) if self.sees(s, &r)? => Some(r),
            _ => None,
        })
    }
}
