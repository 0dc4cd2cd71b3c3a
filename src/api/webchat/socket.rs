//! `GET /api/chat/ws`: the widget's live channel (`docs/webchat.md`, "WebSocket").
//!
//! The token comes in the first frame (a browser cannot set a header on a WebSocket, and a
//! token in the URL ends up in logs). Then the socket registers with the hub *before* it reads
//! the store: frames the feed hands over from then on queue up, the store is read up to the
//! feed's position `h` (the `ready` frame, and with `since` every frame after it), and the
//! queued frames are sent except those at or below `h`, which the store already gave. So a
//! reconnecting widget misses nothing and gets nothing twice.
//!
//! Bounded: frames of at most 4 KiB from the client, a queue of `hub::SOCKET_QUEUE` frames
//! (a client that falls behind is closed with `4008` and resumes), `sockets_per_customer` and
//! `max_sockets`, connections counted as the customer's requests, 10 s to authenticate, 60 s of
//! silence, typing notices at most one a second.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    response::{IntoResponse, Response},
};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::check_origin;
use crate::{
    rooms::Direction,
    services::Services,
    webchat::{
        Chat, ChatError, Customer,
        feed::{message_frame, read_frame, session_frame},
        hub::{Frame, Refused},
        messages::{ChatMessage, visible},
        service::{self, customer_user, edited_message, newest_customer_message, read_marks},
    },
};

/// Largest frame a client may send.
const MAX_CLIENT_FRAME: usize = 4 * 1024;
/// Bytes read from a socket at once.
const READ_BUFFER: usize = 1024;
/// The most a socket buffers for writing: every frame must fit in it (the largest is `ready`,
/// with [`READY_MESSAGES`] messages of at most 500 characters).
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// Time to send the `auth` frame.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which a client is gone (the widget pings every 25 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a customer's typing notice lasts without a new one.
const TYPING_TIMEOUT: Duration = Duration::from_secs(5);
/// Typing notices taken per second.
const TYPING_INTERVAL: Duration = Duration::from_secs(1);
/// Sessions whose missed frames a resuming socket is sent.
const RESUMED_SESSIONS: usize = 5;
/// Events of a session read for a resume: a client further behind gets the newest state in
/// `ready` and the rest from `GET /session/:id/messages`.
const MAX_RESUMED_EVENTS: usize = 10_000;
/// Messages the `ready` frame carries (the newest): a frame must fit the socket's write bound.
const READY_MESSAGES: usize = 50;

/// Close codes (`docs/webchat.md`).
const CLOSE_UNAUTHORIZED: u16 = 4001;
const CLOSE_TOO_SLOW: u16 = 4008;
const CLOSE_TOO_MANY: u16 = 4029;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;

pub(super) async fn upgrade(
    State(s): State<Arc<Services>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(web) = s.webchat.as_ref() else {
        return ChatError::NotFound.into_response();
    };
    if let Err(refused) = check_origin(web, &headers) {
        return refused.into_response();
    }
    // Small buffers: tungstenite's defaults (128 KiB each way, allocated per socket) would make
    // ten thousand idle widgets cost over a gigabyte. Frames are small and written at once.
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            if let Some(chat) = s.chat() {
                serve(chat, socket).await;
            }
        })
}

/// What a client sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFrame {
    Auth {
        token: String,
        #[serde(default)]
        since: Option<String>,
    },
    Typing {
        typing: bool,
    },
    Ping,
}

fn parse(message: &Message) -> Option<ClientFrame> {
    match message {
        Message::Text(text) => serde_json::from_str(text.as_str()).ok(),
        _ => None,
    }
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn serve(chat: Chat<'_>, mut socket: WebSocket) {
    let Some((customer, since)) = authenticate(&chat, &mut socket).await else {
        return close(socket, CLOSE_UNAUTHORIZED, "invalid or expired token").await;
    };
    // A connection reads the session from the store: reconnecting in a loop is bounded like
    // any other request of the customer's.
    if chat.web.requests.check(&customer.id).is_err() {
        return close(socket, CLOSE_TOO_MANY, "too many requests").await;
    }
    let hub = &chat.web.hub;
    let mut registration = match hub.register(&customer.id) {
        Ok(registration) => registration,
        Err(Refused::TooManyForCustomer | Refused::Full) => {
            return close(socket, CLOSE_TOO_MANY, "too many open chats").await;
        }
    };
    let id = registration.id;
    let served = live(&chat, &mut socket, &customer, since, &mut registration).await;
    hub.unregister(&customer.id, id);
    let (code, reason) = match served {
        Ended::ClientLeft => return,
        Ended::TooSlow => (CLOSE_TOO_SLOW, "too slow: reconnect with since"),
        Ended::Idle => (CLOSE_POLICY, "idle"),
        Ended::Stopping => (CLOSE_GOING_AWAY, "server stopping"),
        Ended::Failed => (1011, "internal error"),
    };
    close(socket, code, reason).await;
}

/// The `auth` frame's customer and `since`, within [`AUTH_TIMEOUT`].
async fn authenticate(chat: &Chat<'_>, socket: &mut WebSocket) -> Option<(Customer, Option<u64>)> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, socket.recv())
        .await
        .ok()??
        .ok()?;
    let ClientFrame::Auth { token, since } = parse(&first)? else {
        return None;
    };
    let customer = chat.web.verifier.verify(&token)?;
    // A cursor that does not parse is a client without one.
    Some((customer, since.and_then(|s| s.parse().ok())))
}

enum Ended {
    ClientLeft,
    TooSlow,
    Idle,
    Stopping,
    Failed,
}

async fn live(
    chat: &Chat<'_>,
    socket: &mut WebSocket,
    customer: &Customer,
    since: Option<u64>,
    registration: &mut crate::webchat::hub::Registration,
) -> Ended {
    // Frames at or below `upto` come from the store; the hub's queue has those after it.
    let upto = chat.web.feed_pos.load(Ordering::Acquire);
    // Boxed: the opening may finish a session's room (the desk's whole creation path), and a
    // future that big would stay the size of every idle socket's task for its lifetime.
    let opening = match Box::pin(opening_frames(chat, customer, since, upto)).await {
        Ok(frames) => frames,
        Err(e) => {
            tracing::warn!(error = ?e, "web chat: a socket's opening failed");
            return Ended::Failed;
        }
    };
    for frame in opening {
        if socket.send(Message::Text(frame.into())).await.is_err() {
            return Ended::ClientLeft;
        }
    }
    let mut last_heard = Instant::now();
    let mut last_typing: Option<Instant> = None;
    let stopping = chat.notifier.stopped();
    tokio::pin!(stopping);
    loop {
        let idle_left = IDLE_TIMEOUT.saturating_sub(last_heard.elapsed());
        let next = tokio::select! {
            frame = registration.frames.recv() => Next::Frame(frame),
            message = socket.recv() => Next::Client(message),
            () = registration.slow.wait() => return Ended::TooSlow,
            () = &mut stopping => return Ended::Stopping,
            () = tokio::time::sleep(idle_left) => return Ended::Idle,
        };
        match next {
            Next::Frame(None) => return Ended::Failed,
            Next::Frame(Some(frame)) => {
                if frame.cursor != 0 && frame.cursor <= upto {
                    continue;
                }
                if socket
                    .send(Message::Text(frame.json.clone().into()))
                    .await
                    .is_err()
                {
                    return Ended::ClientLeft;
                }
            }
            Next::Client(None | Some(Err(_))) => return Ended::ClientLeft,
            Next::Client(Some(Ok(message))) => {
                last_heard = Instant::now();
                match message {
                    Message::Close(_) => return Ended::ClientLeft,
                    Message::Text(_) => match parse(&message) {
                        Some(ClientFrame::Ping) => {
                            let pong = json!({ "type": "pong" }).to_string();
                            if socket.send(Message::Text(pong.into())).await.is_err() {
                                return Ended::ClientLeft;
                            }
                        }
                        Some(ClientFrame::Typing { typing }) => {
                            let due = last_typing.is_none_or(|t| t.elapsed() >= TYPING_INTERVAL);
                            if due || !typing {
                                last_typing = Some(Instant::now());
                                customer_typing(chat, customer, typing);
                            }
                        }
                        // A second `auth`, or anything else: ignored.
                        _ => {}
                    },
                    // Pings are answered by the library; binary frames mean nothing here.
                    _ => {}
                }
            }
        }
    }
}

enum Next {
    Frame(Option<Arc<Frame>>),
    Client(Option<Result<Message, axum::Error>>),
}

/// `ready`, then (with `since`) what happened after `since` up to `upto`, then the read mark.
async fn opening_frames(
    chat: &Chat<'_>,
    customer: &Customer,
    since: Option<u64>,
    upto: u64,
) -> Result<Vec<String>, ChatError> {
    let mut active = service::active(chat, customer).await?;
    if let Some(messages) = active.as_mut().and_then(|v| v.messages.as_mut()) {
        let older = messages.len().saturating_sub(READY_MESSAGES);
        messages.drain(..older);
    }
    let ready = json!({
        "type": "ready",
        "cursor": upto.to_string(),
        "session": active.as_ref().map(|v| v.to_json()),
    });
    let mut frames = vec![ready.to_string()];
    let Some(since) = since else {
        return Ok(frames);
    };
    let user = customer_user(chat, &customer.id)?;
    let mut missed: Vec<Arc<Frame>> = Vec::new();
    // Read marks are not stream events: they go after what was missed.
    let mut reads = Vec::new();
    for record in chat.web.sessions.list(&customer.id, RESUMED_SESSIONS)? {
        if record.status_pos > since && record.status_pos <= upto {
            missed.push(session_frame(record.id, record.status_pos, record.status));
        }
        let Some(room_id) = &record.room_id else {
            continue;
        };
        let rooms = chat.desk.rooms;
        let room = rooms.room(room_id)?;
        let marks = read_marks(chat, &room, &user)?;
        // A page at a time, up to `upto`: the work follows what the client missed, at most
        // MAX_RESUMED_EVENTS of it.
        let mut after = since;
        let mut read = 0;
        while after < upto && read < MAX_RESUMED_EVENTS {
            let page = rooms.timeline_positions(room.short, after, Direction::Forward, 500)?;
            let Some(&last) = page.last() else { break };
            for pos in page.into_iter().take_while(|p| *p <= upto) {
                let event = rooms.event(pos)?;
                if let Some(seen) = visible(&event.pdu, &user) {
                    let is_read = marks.is_read(seen.0, pos);
                    let message = ChatMessage::of(&event.pdu, pos, record.id, seen, is_read);
                    missed.push(message_frame(&message));
                } else if let Some(edited) =
                    edited_message(chat, &event.pdu, pos, record.id, &user)?
                {
                    missed.push(message_frame(&edited));
                }
                read += 1;
            }
            after = last;
        }
        if record.status.is_open()
            && let Some(last) = newest_customer_message(chat, &room, &user, marks.support)?
        {
            reads.push(read_frame(record.id, last));
        }
    }
    missed.sort_by_key(|f| f.cursor);
    frames.extend(missed.iter().chain(&reads).map(|f| f.json.clone()));
    Ok(frames)
}

/// The customer is typing (or stopped) in their open session's room.
fn customer_typing(chat: &Chat<'_>, customer: &Customer, typing: bool) {
    let set = || -> Result<(), ChatError> {
        let Some(record) = chat.web.sessions.newest(&customer.id)? else {
            return Ok(());
        };
        let (true, Some(room_id)) = (record.status.is_open(), &record.room_id) else {
            return Ok(());
        };
        let user = customer_user(chat, &customer.id)?;
        let room = chat.desk.rooms.room(room_id)?;
        if room.is_joined(&user) {
            chat.typing
                .set(room, &user, typing.then_some(TYPING_TIMEOUT));
        }
        Ok(())
    };
    if let Err(e) = set() {
        tracing::debug!(error = ?e, "web chat: typing not set");
    }
}
