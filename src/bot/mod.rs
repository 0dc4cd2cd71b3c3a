//! The support bot: a server-side stream consumer acting as its own user (`@support:<server>`).
//!
//! It reads the global stream from a durable cursor ([`crate::stream::Consumer`]), like the
//! appservice pushers, so a crash replays events and never skips one. Replays are harmless:
//! every message or state event the bot sends because of an event carries a transaction id
//! derived from that event's position, and the room service answers a repeated transaction
//! with the first event instead of sending again; record updates are applied once per
//! position. So the bot never answers twice.
//!
//! Rooms are handled concurrently, each in stream order (`lanes`); the cursor never passes an
//! event still being handled.
//!
//! Besides the stream it listens to presence (an agent coming online drains the queue) and
//! rechecks the queue every few seconds, which covers agents whose load dropped elsewhere.

mod assign;
mod command;
mod commands;
pub mod faq;
mod handle;
pub mod hours;
mod invite;
mod lanes;

use std::{mem, sync::Arc, time::Duration};

use ruma::events::TimelineEventType;
use tokio::{
    sync::{broadcast, mpsc},
    time::Interval,
};

use lanes::{Done, Lanes};

use crate::{
    error::Result,
    rooms::Loaded,
    storage::Table,
    stream::{Commit, Consumer, Handler, NamedCursor, Stream},
    stream::{Edu, Notifier},
    support::Desk,
};

/// What the bot runs on: the desk's services and the stream it reads. The composition root
/// implements it (`Services`); the bot's tasks share it, so the bot never sees the rest.
pub(crate) trait BotServices: Send + Sync + 'static {
    fn desk(&self) -> Desk<'_>;
    fn stream(&self) -> &Stream;
    fn notifier(&self) -> &Notifier;
}

const CURSOR_KEY: &[u8] = b"bot_cursor";
/// How often the queue is rechecked without a wake-up.
const QUEUE_RECHECK: Duration = Duration::from_secs(2);
/// Events read ahead into the lanes before the stream waits for some to finish.
const MAX_IN_FLIGHT: usize = 4096;

/// Creates the bot's user if needed, loads its cursor and starts it. Returns once the cursor is
/// fixed, so no event committed after the server started can be missed.
pub(crate) async fn start(s: Arc<dyn BotServices>) -> Result<()> {
    let desk = s.desk();
    if !desk.config().enabled {
        return Ok(());
    }
    create_user(&desk).await?;
    // A new desk starts from now, not from the beginning of history.
    let from = consumer(&*s, &cursor(&desk)).start().await?;
    tokio::spawn(run(s.clone(), from));
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

fn cursor<'a>(desk: &Desk<'a>) -> NamedCursor<'a> {
    NamedCursor::new(desk.store, Table::SupportState, CURSOR_KEY)
}

fn consumer<'a>(
    s: &'a dyn BotServices,
    cursor: &'a NamedCursor<'a>,
) -> Consumer<'a, &'a NamedCursor<'a>> {
    Consumer::new("support bot", s.stream(), s.notifier(), cursor)
}

async fn run(s: Arc<dyn BotServices>, from: u64) {
    let desk = s.desk();
    let cursor = cursor(&desk);
    let (lanes, done) = Lanes::new(s.clone());
    let bot = Bot {
        desk: s.desk(),
        lanes,
        done,
        edus: s.notifier().subscribe_edus(),
        tick: tokio::time::interval(QUEUE_RECHECK),
        drain: true,
    };
    consumer(&*s, &cursor).run(from, desk.rooms, bot).await;
}

/// The bot as a stream consumer: hands the events it cares about to their rooms' lanes, and
/// looks at the queue when an event, an agent coming online or the recheck timer asks.
struct Bot<'a> {
    desk: Desk<'a>,
    lanes: Lanes,
    done: mpsc::UnboundedReceiver<Done>,
    edus: broadcast::Receiver<Arc<Edu>>,
    tick: Interval,
    /// The queue is to be looked at.
    drain: bool,
}

impl Handler for Bot<'_> {
    type Event = Arc<Loaded>;

    async fn event(&mut self, pos: u64, ev: Arc<Loaded>) -> Result<()> {
        // A message in a room that is not a conversation needs no lane, unless the room has
        // events in flight that may be making it one.
        let relevant = handle::concerns(&self.desk, &ev.pdu)
            && (ev.pdu.kind != TimelineEventType::RoomMessage
                || self.lanes.is_busy(&ev.pdu.room_id)
                || self.desk.support.index.contains(&ev.pdu.room_id)?);
        if relevant {
            self.lanes.dispatch(pos, ev);
        }
        Ok(())
    }

    /// Replays are idempotent, so the cursor is left to the consumer's lazy save: a store
    /// write per event would slow every sender.
    async fn commit(&mut self, _upto: u64) -> Result<Commit> {
        Ok(Commit::Lazy)
    }

    fn room(&self) -> usize {
        MAX_IN_FLIGHT.saturating_sub(self.lanes.in_flight())
    }

    fn settled(&self, committed: u64) -> u64 {
        self.lanes.cursor(committed)
    }

    async fn wait(&mut self) {
        tokio::select! {
            Some(done) = self.done.recv() => {
                self.finished(&done);
                // Take every other finished event too, then look at the queue once.
                while let Ok(done) = self.done.try_recv() {
                    self.finished(&done);
                }
            }
            edu = self.edus.recv() => {
                self.drain |= match edu {
                    Ok(edu) => assign::agent_came_online(&self.desk, &edu.event),
                    // Missed some: look at the queue anyway.
                    Err(_) => true,
                };
            }
            _ = self.tick.tick() => self.drain = true,
        }
    }

    async fn idle(&mut self, _committed: u64) {
        if mem::take(&mut self.drain)
            && let Err(e) = assign::drain_queue(&self.desk).await
        {
            tracing::warn!(error = %e, "support bot: queue not drained");
        }
    }
}

impl Bot<'_> {
    fn finished(&mut self, done: &Done) {
        self.lanes.finish(done);
        self.drain |= done.wants_drain;
    }
}
