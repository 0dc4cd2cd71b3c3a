//! The support bot: a server-side stream consumer acting as its own user (`@support:<server>`).
//!
//! It reads the global stream from a durable cursor, like the appservice pushers, so a crash
//! replays events and never skips one. Replays are harmless: every message or state event the
//! bot sends because of an event carries a transaction id derived from that event's position,
//! and the room service answers a repeated transaction with the first event instead of sending
//! again; record updates are applied once per position. So the bot never answers twice.
//!
//! Rooms are handled concurrently, each in stream order (`lanes`); the cursor never passes an
//! event still being handled.
//!
//! Besides the stream it listens to presence (an agent coming online drains the queue) and
//! rechecks the queue every few seconds, which covers agents whose load dropped elsewhere.

mod assign;
mod command;
mod commands;
mod faq;
mod handle;
mod hours;
mod invite;
mod lanes;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use lanes::Lanes;

use crate::{
    error::Result,
    services::Services,
    storage::{Batch, Table, keys},
    support::Desk,
};

const CURSOR_KEY: &[u8] = b"bot_cursor";
/// How often the queue is rechecked without a wake-up.
const QUEUE_RECHECK: Duration = Duration::from_secs(2);
/// How often the cursor is saved while events flow.
const CURSOR_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Events read ahead into the lanes before the stream waits for some to finish.
const MAX_IN_FLIGHT: usize = 4096;

/// Creates the bot's user if needed, loads its cursor and starts it. Returns once the cursor is
/// fixed, so no event committed after the server started can be missed.
pub async fn start(s: &Arc<Services>) -> Result<()> {
    if !s.config.support.enabled {
        return Ok(());
    }
    create_user(&s.desk()).await?;
    let cursor = match s.store.get(Table::SupportState, CURSOR_KEY)? {
        Some(v) => keys::decode_u64(&v),
        // A new desk starts from now, not from the beginning of history.
        None => {
            let head = s.stream.head();
            save_cursor(s, head, true).await?;
            head
        }
    };
    tokio::spawn(run(s.clone(), cursor));
    Ok(())
}

/// Creates the bot's user on first start.
async fn create_user(desk: &Desk<'_>) -> Result<()> {
    let bot = desk.bot();
    if !desk.users.exists(bot)? {
        desk.users
            .create(crate::users::NewAccount {
                localpart: bot.localpart(),
                password: None,
                admin: false,
                displayname: Some(desk.config().bot_displayname.clone()),
            })
            .await?;
    }
    Ok(())
}

async fn save_cursor(s: &Services, cursor: u64, durable: bool) -> Result<()> {
    let mut batch = Batch::new();
    batch.put(
        Table::SupportState,
        CURSOR_KEY.to_vec(),
        cursor.to_be_bytes().to_vec(),
    );
    if durable {
        s.store.write_durable(batch).await?;
    } else {
        // A cursor that falls behind after a crash only replays, which is idempotent.
        let _not_awaited = s.store.write(batch)?;
    }
    Ok(())
}

async fn run(s: Arc<Services>, cursor: u64) {
    let mut head_rx = s.stream.watch();
    let mut edus = s.notifier.subscribe_edus();
    let mut tick = tokio::time::interval(QUEUE_RECHECK);
    let (mut lanes, mut done_rx) = Lanes::new(s.clone());
    let mut drain = true;
    // `read`: the stream is read up to here; `saved`: the cursor on disk.
    let (mut read, mut saved, mut last_save) = (cursor, cursor, Instant::now());
    loop {
        let head = *head_rx.borrow_and_update();
        if let Err(e) = read_stream(&s, &mut lanes, &mut read, head) {
            // The store is failing: read again from `read` a little later.
            tracing::error!(error = %e, "support bot cannot read the stream");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Replays are idempotent, so the cursor is saved at most once per interval (the queue
        // recheck comes back for a late one): a store write per event would slow every sender.
        let cursor = lanes.cursor(read);
        if cursor != saved && last_save.elapsed() >= CURSOR_SAVE_INTERVAL {
            last_save = Instant::now();
            match save_cursor(&s, cursor, false).await {
                Ok(()) => saved = cursor,
                Err(e) => tracing::error!(error = %e, "support bot cannot save its cursor"),
            }
        }
        if std::mem::take(&mut drain)
            && let Err(e) = assign::drain_queue(&s.desk()).await
        {
            tracing::warn!(error = %e, "support bot: queue not drained");
        }
        tokio::select! {
            changed = head_rx.changed() => if changed.is_err() { return },
            Some(done) = done_rx.recv() => {
                lanes.finish(&done);
                drain |= done.wants_drain;
                // Take every other finished event too, then look at the queue once.
                while let Ok(done) = done_rx.try_recv() {
                    lanes.finish(&done);
                    drain |= done.wants_drain;
                }
            }
            edu = edus.recv() => {
                drain |= match edu {
                    Ok(edu) => assign::agent_came_online(&s.desk(), &edu.event),
                    // Missed some: look at the queue anyway.
                    Err(_) => true,
                };
            }
            _ = tick.tick() => drain = true,
            _ = s.notifier.stopped() => return,
        }
    }
}

/// Reads the stream from `read` up to `head`, handing the events the bot cares about to their
/// rooms' lanes, until the lanes hold [`MAX_IN_FLIGHT`] events.
fn read_stream(s: &Services, lanes: &mut Lanes, read: &mut u64, head: u64) -> Result<()> {
    let desk = s.desk();
    while *read < head && lanes.in_flight() < MAX_IN_FLIGHT {
        let events = s.rooms.events_in_range(*read, head, 256)?;
        if events.is_empty() {
            *read = head;
            break;
        }
        for (pos, ev) in events {
            // A message in a room that is not a conversation needs no lane, unless the room
            // has events in flight that may be making it one.
            let relevant = handle::concerns(&desk, &ev.pdu)
                && (ev.pdu.kind != ruma::events::TimelineEventType::RoomMessage
                    || lanes.is_busy(&ev.pdu.room_id)
                    || desk.support.index.contains(&ev.pdu.room_id)?);
            if relevant {
                lanes.dispatch(pos, ev);
            }
            *read = pos;
        }
    }
    Ok(())
}
