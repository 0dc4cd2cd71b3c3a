//! The support bot: a server-side stream consumer acting as its own user (`@support:<server>`).
//!
//! It reads the global stream from a durable cursor, like the appservice pushers, so a crash
//! replays events and never skips one. Replays are harmless: every message or state event the
//! bot sends because of an event carries a transaction id derived from that event's position,
//! and the room service answers a repeated transaction with the first event instead of sending
//! again; record updates are applied once per position. So the bot never answers twice.
//!
//! Besides the stream it listens to presence (an agent coming online drains the queue) and
//! rechecks the queue every few seconds, which covers agents whose load dropped elsewhere.

mod assign;
mod commands;
pub mod faq;
mod handle;
pub mod hours;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::{Batch, Table, keys},
};

const CURSOR_KEY: &[u8] = b"bot_cursor";
/// How often the queue is rechecked without a wake-up.
const QUEUE_RECHECK: Duration = Duration::from_secs(2);
/// How often the cursor is saved while events flow.
const CURSOR_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Creates the bot's user if needed, loads its cursor and starts it. Returns once the cursor is
/// fixed, so no event committed after the server started can be missed.
pub async fn start(s: &Arc<Services>) -> Result<()> {
    if !s.config.support.enabled {
        return Ok(());
    }
    let bot = &s.support.bot;
    if !s.users.exists(bot)? {
        s.users
            .create(crate::users::NewAccount {
                localpart: bot.localpart(),
                password: None,
                admin: false,
                displayname: Some(s.config.support.bot_displayname.clone()),
            })
            .await?;
    }
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

async fn run(s: Arc<Services>, mut cursor: u64) {
    let mut head_rx = s.stream.watch();
    let mut edus = s.notifier.subscribe_edus();
    let mut tick = tokio::time::interval(QUEUE_RECHECK);
    let mut drain = true;
    let (mut saved, mut last_save) = (cursor, Instant::now());
    loop {
        let head = *head_rx.borrow_and_update();
        while cursor < head {
            let positions = match s.rooms.event_positions(cursor, head, 256) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "support bot cannot read the stream");
                    break;
                }
            };
            if positions.is_empty() {
                cursor = head;
                break;
            }
            for pos in positions {
                match handle::event(&s, pos).await {
                    Ok(wants_drain) => drain |= wants_drain,
                    Err(Error::Storage(e)) => {
                        // The store is failing: stop here and retry this event later.
                        tracing::error!(pos, error = %e, "support bot: storage error, retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                    Err(e) => tracing::warn!(pos, error = %e, "support bot: event not handled"),
                }
                cursor = pos;
            }
        }
        // Replays are idempotent, so the cursor is saved at most once per interval (the queue
        // recheck comes back for a late one): a store write per event would slow every sender.
        if cursor != saved && last_save.elapsed() >= CURSOR_SAVE_INTERVAL {
            last_save = Instant::now();
            match save_cursor(&s, cursor, false).await {
                Ok(()) => saved = cursor,
                Err(e) => tracing::error!(error = %e, "support bot cannot save its cursor"),
            }
        }
        if std::mem::take(&mut drain)
            && let Err(e) = assign::drain_queue(&s).await
        {
            tracing::warn!(error = %e, "support bot: queue not drained");
        }
        tokio::select! {
            changed = head_rx.changed() => if changed.is_err() { return },
            edu = edus.recv() => {
                drain |= match edu {
                    Ok(edu) => assign::agent_came_online(&s, &edu.event),
                    // Missed some: look at the queue anyway.
                    Err(_) => true,
                };
            }
            _ = tick.tick() => drain = true,
            _ = s.notifier.stopped() => return,
        }
    }
}
