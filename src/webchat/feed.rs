//! The web chat's stream consumer: what happens in session rooms, for the sessions' records
//! and the customers' sockets.
//!
//! For each event of a session's room it
//! - moves the session's status: `pending` → `active` at an agent's first answer (the bot's
//!   greeting and FAQ answers do not count), → `closed` when the desk closes the conversation
//!   (an agent's `!close`, the support API, the admin CLI, or the customer through the API);
//! - turns what the customer sees (`messages::visible`) into `message` frames, and status
//!   changes into `session` frames, for the customer's open sockets.
//!
//! The record changes are idempotent (a replay after a crash sets the same status again), so
//! the cursor is saved lazily. Frames are handed to the hub only after the batch's record
//! changes are written, and then [`WebChat::feed_pos`](super::WebChat) moves: a socket that
//! reads the store up to `feed_pos` and takes the frames after it misses nothing and gets
//! nothing twice (`api/webchat/socket.rs`).
//!
//! Agents' read receipts and typing are not events: they come from the notifier's ephemeral
//! events, as `read` and `typing` frames (a socket that missed some gets the read mark again
//! when it resumes).

use std::sync::{Arc, atomic::Ordering};

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{
    Chat, ChatServices,
    hub::Frame,
    messages::{ChatMessage, Sender, visible},
    service::{close_record, customer_user, edited_message, newest_customer_message},
    sessions::{SessionRecord, SessionStatus},
};
use crate::{
    error::Result,
    events::Pdu,
    rooms::Loaded,
    storage::Table,
    stream::{Commit, Consumer, Edu, Handler, NamedCursor},
    support::{CONVERSATION_EVENT, Conversation, conversation::Status, trust},
};

const NAME: &str = "web chat feed";
const CURSOR_KEY: &[u8] = b"feed_cursor";

/// Loads the feed's cursor and starts it; returns once the cursor is fixed, so that no event
/// committed after the server started is missed. Nothing when the web chat is off.
pub(crate) async fn start(s: Arc<dyn ChatServices>) -> Result<()> {
    let Some(chat) = s.chat() else {
        return Ok(());
    };
    let cursor = cursor(&chat);
    let from = consumer(&chat, &cursor).start().await?;
    chat.web.feed_pos.store(from, Ordering::Release);
    tokio::spawn(run(s.clone(), from));
    Ok(())
}

fn cursor<'a>(chat: &Chat<'a>) -> NamedCursor<'a> {
    NamedCursor::new(chat.desk.store, Table::WebchatState, CURSOR_KEY)
}

fn consumer<'a>(chat: &Chat<'a>, cursor: &'a NamedCursor<'a>) -> Consumer<'a, &'a NamedCursor<'a>> {
    Consumer::new(NAME, chat.stream, chat.notifier, cursor)
}

async fn run(s: Arc<dyn ChatServices>, from: u64) {
    let Some(chat) = s.chat() else { return };
    let cursor = cursor(&chat);
    let feed = Feed {
        chat,
        changes: Vec::new(),
        frames: Vec::new(),
        edus: chat.notifier.subscribe_edus(),
    };
    consumer(&chat, &cursor)
        .run(from, chat.desk.rooms, feed)
        .await;
}

/// A change of a session's record that a batch makes.
enum Change {
    /// Support wrote at `ts`; an agent's answer (`activates`) makes a pending session active.
    Support {
        id: Uuid,
        pos: u64,
        ts: u64,
        activates: bool,
    },
    /// The desk closed the conversation.
    Close { id: Uuid, pos: u64 },
}

struct Feed<'a> {
    chat: Chat<'a>,
    changes: Vec<Change>,
    /// Frames of the batch, by customer, handed over once its changes are written.
    frames: Vec<(String, Arc<Frame>)>,
    edus: broadcast::Receiver<Arc<Edu>>,
}

impl Handler for Feed<'_> {
    type Event = Arc<Loaded>;

    async fn event(&mut self, pos: u64, ev: Arc<Loaded>) -> Result<()> {
        let pdu = &ev.pdu;
        let Some((record, user)) = self.session_of(&pdu.room_id)? else {
            return Ok(());
        };
        if is_conversation_state(pdu) {
            let closed = Conversation::from_str_lenient(pdu.content.get()).status == Status::Closed;
            if closed && trust::is_desk(&self.chat.desk, &pdu.sender)? {
                self.changes.push(Change::Close { id: record.id, pos });
                self.session_frame(&record, pos, SessionStatus::Closed);
            }
            return Ok(());
        }
        let Some(seen) = visible(pdu, &user) else {
            // An edit of a message the customer sees: the message again, with its new text.
            if self.chat.web.hub.is_connected(&record.customer)
                && let Some(message) = edited_message(&self.chat, pdu, pos, record.id, &user)?
            {
                self.frames.push((record.customer, message_frame(&message)));
            }
            return Ok(());
        };
        if seen.0 == Sender::Support {
            let desk = &self.chat.desk;
            let activates = pdu.sender != desk.bot() && desk.support.is_staff(&pdu.sender);
            self.changes.push(Change::Support {
                id: record.id,
                pos,
                ts: u64::from(pdu.origin_server_ts.get()),
                activates,
            });
            if activates && record.status == SessionStatus::Pending {
                self.session_frame(&record, pos, SessionStatus::Active);
            }
        }
        if self.chat.web.hub.is_connected(&record.customer) {
            // A new message: the other side has not read it yet.
            let message = ChatMessage::of(pdu, pos, record.id, seen, false);
            self.frames.push((record.customer, message_frame(&message)));
        }
        Ok(())
    }

    /// Writes the batch's status changes without waiting for the disk (idempotent and derived
    /// from the events: the lazily saved cursor lands after them, so a crash replays what it
    /// lost), then hands the frames to the sockets and moves `feed_pos`.
    async fn commit(&mut self, upto: u64) -> Result<Commit> {
        let sessions = &self.chat.web.sessions;
        for change in &self.changes {
            match *change {
                Change::Support {
                    id,
                    pos,
                    ts,
                    activates,
                } => {
                    sessions
                        .update_derived(&id, |r| support_wrote(r, pos, ts, activates))
                        .await?;
                }
                Change::Close { id, pos } => {
                    sessions
                        .update_derived(&id, |r| close_record(r, pos))
                        .await?;
                }
            }
        }
        self.changes.clear();
        for (customer, frame) in self.frames.drain(..) {
            self.chat.web.hub.send(&customer, frame);
        }
        self.chat.web.feed_pos.fetch_max(upto, Ordering::AcqRel);
        Ok(Commit::Lazy)
    }

    /// Agents' receipts and typing, as they happen.
    async fn wait(&mut self) {
        let edu = self.edus.recv().await;
        match edu {
            Ok(edu) => {
                if let Err(e) = self.ephemeral(&edu) {
                    tracing::debug!(error = %e, "web chat: an ephemeral event not forwarded");
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "web chat: ephemeral events missed");
            }
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Feed<'_> {
    /// The session whose room this is, with its customer's user.
    fn session_of(&self, room_id: &RoomId) -> Result<Option<(SessionRecord, OwnedUserId)>> {
        let sessions = &self.chat.web.sessions;
        let Some(id) = sessions.by_room(room_id)? else {
            return Ok(None);
        };
        let Some(record) = sessions.get(&id)? else {
            return Ok(None);
        };
        let user = customer_user(&self.chat, &record.customer)?;
        Ok(Some((record, user)))
    }

    fn session_frame(&mut self, record: &SessionRecord, pos: u64, status: SessionStatus) {
        let frame = session_frame(record.id, pos, status);
        self.frames.push((record.customer.clone(), frame));
    }

    /// A receipt or typing notice in a session's room, for its customer's sockets.
    fn ephemeral(&self, edu: &Edu) -> Result<()> {
        let Some(room_id) = &edu.room_id else {
            return Ok(());
        };
        let hub = &self.chat.web.hub;
        let Some((record, user)) = self.session_of(room_id)? else {
            return Ok(());
        };
        if !hub.is_connected(&record.customer) {
            return Ok(());
        }
        match edu.event["type"].as_str() {
            Some("m.typing") => {
                let typing = edu.event["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|u| u.as_str() != Some(user.as_str())));
                hub.send(&record.customer, typing_frame(record.id, typing));
            }
            Some("m.receipt") => {
                let content = &edu.event["content"];
                if let Some(frame) = self.read_frame(content, room_id, &record, &user)? {
                    hub.send(&record.customer, frame);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A `read` frame for an agent's receipt (the customer's own receipts are theirs).
    fn read_frame(
        &self,
        content: &Value,
        room_id: &RoomId,
        record: &SessionRecord,
        user: &UserId,
    ) -> Result<Option<Arc<Frame>>> {
        let Some(receipts) = content.as_object() else {
            return Ok(None);
        };
        let rooms = self.chat.desk.rooms;
        let mut upto = 0;
        for (event_id, kinds) in receipts {
            let by_support = kinds["m.read"]
                .as_object()
                .is_some_and(|readers| readers.keys().any(|r| r != user.as_str()));
            let event_id = ruma::EventId::parse(event_id.as_str());
            if let (true, Ok(event_id)) = (by_support, event_id)
                && let Some(pos) = rooms.event_pos(&event_id)?
            {
                upto = upto.max(pos);
            }
        }
        if upto == 0 {
            return Ok(None);
        }
        let room = rooms.room(room_id)?;
        Ok(newest_customer_message(&self.chat, &room, user, upto)?
            .map(|message| read_frame(record.id, message)))
    }
}

/// Support's message at `pos`: the time of the last message, and an agent's answer activates.
fn support_wrote(r: &mut SessionRecord, pos: u64, ts: u64, activates: bool) -> bool {
    let mut changed = false;
    if ts > r.last_message_ms {
        r.last_message_ms = ts;
        changed = true;
    }
    if activates && r.status == SessionStatus::Pending {
        r.status = SessionStatus::Active;
        r.status_pos = r.status_pos.max(pos);
        changed = true;
    }
    changed
}

fn is_conversation_state(pdu: &Pdu) -> bool {
    pdu.state_key.as_deref() == Some("") && pdu.kind.to_string() == CONVERSATION_EVENT
}

fn frame(cursor: u64, value: Value) -> Arc<Frame> {
    Arc::new(Frame {
        cursor,
        json: value.to_string(),
    })
}

pub(crate) fn message_frame(message: &ChatMessage) -> Arc<Frame> {
    frame(
        message.pos,
        json!({ "type": "message", "cursor": message.pos.to_string(), "data": message.to_json() }),
    )
}

pub(crate) fn session_frame(id: Uuid, pos: u64, status: SessionStatus) -> Arc<Frame> {
    frame(
        pos,
        json!({ "type": "session", "cursor": pos.to_string(),
                "data": { "id": id, "status": status.as_str() } }),
    )
}

pub(crate) fn read_frame(session: Uuid, last_read: Uuid) -> Arc<Frame> {
    frame(
        0,
        json!({ "type": "read", "data": { "sessionId": session, "messageId": last_read } }),
    )
}

fn typing_frame(session: Uuid, typing: bool) -> Arc<Frame> {
    frame(
        0,
        json!({ "type": "typing", "data": { "sessionId": session, "typing": typing } }),
    )
}
