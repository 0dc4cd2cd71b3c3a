//! Push gateway delivery (spec v1.16: Client-Server "Push Notifications", Push Gateway API).
//!
//! A stream consumer ([`crate::stream::Consumer`]), like the support bot: it reads events in
//! stream order from a durable cursor, evaluates the push rules of the room's members who have
//! an `http` pusher, and queues a notification for each of their pushers when the actions say
//! `notify` (`outbox.rs`). The rules are evaluated here, not when an event is stored, so sending
//! a message costs the same with or without pushers. Senders (`sender.rs`) POST each pusher's
//! queue to its gateway.
//!
//! Guarantee: at least once, in order per pusher. Notifications are queued in the batch that
//! moves the cursor past their event and that batch is waited for, so a restart neither loses
//! one nor queues one twice; the only repeat is a notification whose 2xx answer arrived just
//! before a crash and whose removal from the queue did not reach the disk.
//!
//! Besides events, a user's own `m.read` receipt queues a badge update (only `counts` and
//! `devices`, as Synapse sends) so the app's badge drops when they read elsewhere. Receipts come
//! from the in-memory broadcast: a badge update lost to a restart or a lagging receiver is
//! corrected by the next notification.

mod notification;
mod outbox;
mod sender;

use std::{collections::HashMap, mem, sync::Arc};

use ruma::{
    OwnedUserId, UserId, api::client::push::PusherKind, events::TimelineEventType, push::Ruleset,
};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{
    config::ServerConfig,
    ephemeral::ReceiptService,
    error::{Error, Result},
    push::{PushService, RoomRules},
    rooms::{Loaded, RoomService, member_target, membership_of},
    ssrf::IpFilter,
    storage::{Batch, Store},
    stream::{Commit, Consumer, Handler, NamedCursor, Stream},
    stream::{Edu, Notifier},
    users::UserService,
};
use outbox::{EntryKind, PusherKey, Queued};
use sender::Senders;

/// Events per batch: the notifications of a batch are written in one batch with the cursor.
const STEP: usize = 256;

/// What push delivery uses of the server (`Services::push_delivery`).
pub struct Delivery<'a> {
    pub store: &'a Store,
    pub stream: &'a Stream,
    pub notifier: &'a Notifier,
    pub rooms: &'a RoomService,
    pub users: &'a UserService,
    pub receipts: &'a ReceiptService,
    pub push: &'a PushService,
    pub server: &'a ServerConfig,
}

/// Where [`run`] starts: made by [`open`] before the server serves.
pub struct Start {
    from: u64,
    filter: IpFilter,
    queued: Vec<PusherKey>,
}

/// Loads the cursor (a new server starts at the stream's head) and finds the pushers with
/// notifications queued before a restart. Call before the server serves, so that no event
/// committed after it started can be missed.
pub async fn open(d: &Delivery<'_>) -> Result<Start> {
    let filter = d
        .server
        .outbound_filter()
        .map_err(|e| Error::internal(e.to_string()))?;
    let cursor = outbox::cursor(d.store);
    let from = consumer(d, &cursor).start().await?;
    let queued = outbox::queued_pushers(d.store)?;
    Ok(Start {
        from,
        filter,
        queued,
    })
}

/// Delivers until the server stops: the stream consumer and the pushers' senders, side by side
/// in the caller's task.
pub async fn run(d: &Delivery<'_>, start: Start) {
    let (senders, woken) = Senders::new(start.filter);
    for pusher in start.queued {
        senders.wake(pusher);
    }
    let cursor = outbox::cursor(d.store);
    let evaluator = Evaluator {
        d,
        cursor: &cursor,
        senders: &senders,
        batch: Batch::new(),
        touched: Vec::new(),
        rulesets: HashMap::new(),
        edus: d.notifier.subscribe_edus(),
        receipts: Vec::new(),
    };
    tokio::join!(
        consumer(d, &cursor).run(start.from, d.rooms, evaluator),
        senders.run(d, woken),
    );
}

fn consumer<'a>(
    d: &'a Delivery<'_>,
    cursor: &'a NamedCursor<'a>,
) -> Consumer<'a, &'a NamedCursor<'a>> {
    Consumer::new("push delivery", d.stream, d.notifier, cursor).batch_size(STEP)
}

/// The consumer's handler: evaluates each event's push rules for the members with `http`
/// pushers and queues what notifies, in the batch that moves the cursor past the events.
struct Evaluator<'a> {
    d: &'a Delivery<'a>,
    cursor: &'a NamedCursor<'a>,
    senders: &'a Senders,
    /// The notifications the batch's events queue, and whose queues they are in.
    batch: Batch,
    touched: Vec<PusherKey>,
    /// The batch's users' push rules, read once per batch.
    rulesets: HashMap<OwnedUserId, Arc<Ruleset>>,
    edus: broadcast::Receiver<Arc<Edu>>,
    /// Ephemeral events received while waiting, looked at when idle.
    receipts: Vec<Arc<Edu>>,
}

impl Handler for Evaluator<'_> {
    type Event = Arc<Loaded>;

    /// Nobody to push to: the events need not even be read.
    fn wants_events(&mut self) -> Result<bool> {
        Ok(!self.d.push.pushers.http_users()?.is_empty())
    }

    async fn event(&mut self, pos: u64, event: Arc<Loaded>) -> Result<()> {
        // Evaluation is CPU work on the shared runtime: let request handlers in between events.
        tokio::task::yield_now().await;
        for (pusher, queued) in for_event(self.d, pos, &event, &mut self.rulesets)? {
            outbox::put_entry(&mut self.batch, &pusher, pos, EntryKind::Event, &queued);
            if !self.touched.contains(&pusher) {
                self.touched.push(pusher);
            }
        }
        Ok(())
    }

    /// Events that notify nobody leave the cursor to the consumer's lazy save (replaying them
    /// after a crash queues nothing); notifications are written with the cursor and waited
    /// for, then their senders woken. `touched` stays until that write is on disk, so a retry
    /// after a failed wait saves the cursor again (writes reach the disk in order) and wakes them.
    async fn commit(&mut self, upto: u64) -> Result<Commit> {
        self.rulesets.clear();
        if self.touched.is_empty() {
            return Ok(Commit::Lazy);
        }
        let mut batch = mem::take(&mut self.batch);
        self.cursor.put(&mut batch, upto);
        self.d.store.write_durable(batch).await?;
        for pusher in self.touched.drain(..) {
            self.senders.wake(pusher);
        }
        Ok(Commit::Saved)
    }

    async fn wait(&mut self) {
        match self.edus.recv().await {
            Ok(edu) => self.receipts.push(edu),
            // Missed some: the next notification corrects the badge.
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }

    async fn idle(&mut self, _committed: u64) {
        for edu in mem::take(&mut self.receipts) {
            if let Err(e) = on_receipt(self.d, self.senders, &edu).await {
                tracing::warn!(error = %e, "push delivery: badge update not queued");
            }
        }
    }
}

/// The notifications `event` queues: one per `http` pusher of each local member it notifies.
fn for_event(
    d: &Delivery<'_>,
    pos: u64,
    event: &Loaded,
    rulesets: &mut HashMap<OwnedUserId, Arc<Ruleset>>,
) -> Result<Vec<(PusherKey, Queued)>> {
    let http_users = d.push.pushers.http_users()?;
    if http_users.is_empty() {
        return Ok(Vec::new());
    }
    let pdu = &event.pdu;
    let room = d.rooms.room(&pdu.room_id)?;
    let mut users: Vec<OwnedUserId> = room
        .joined_members()
        .into_iter()
        .filter(|u| http_users.contains(u) && *u != pdu.sender)
        .collect();
    // An invite is pushed to the invitee, who is not a member yet (`.m.rule.invite_for_me`).
    let invitee = (pdu.kind == TimelineEventType::RoomMember
        && membership_of(pdu) == Some(ruma::events::room::member::MembershipState::Invite))
    .then(|| member_target(pdu))
    .flatten()
    .filter(|u| http_users.contains(u) && *u != pdu.sender && !users.contains(u));
    users.extend(invitee.clone());
    let mut out = Vec::new();
    for user in users {
        if invitee.as_ref() != Some(&user) && !joined_at(d, room.short, &user, pos)? {
            continue;
        }
        let ruleset = match rulesets.get(&user) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(d.users.push_rules(&user)?);
                rulesets.insert(user.clone(), r.clone());
                r
            }
        };
        let outcome =
            RoomRules::new(d.rooms, ruleset, &room, &user)?.evaluate(pdu, &event.stored.pdu);
        if !outcome.notify {
            continue;
        }
        let pushers: Vec<_> = d
            .push
            .pushers
            .list_stored(&user)?
            .into_iter()
            .filter(|p| matches!(p.pusher.kind, PusherKind::Http(_)) && p.since_pos < pos)
            .collect();
        if pushers.is_empty() {
            continue;
        }
        let badge = notification::badge(d, &user)?;
        let tweaks = notification::tweaks(&outcome.actions);
        let queued = notification::for_event(d, &room, event, &user, tweaks, badge)?;
        for p in pushers {
            out.push((PusherKey::new(&user, &p.pusher.ids), queued.clone()));
        }
    }
    Ok(out)
}

/// Whether the user was joined when the event at `pos` was sent (a consumer that is behind
/// must not push events from before someone joined).
fn joined_at(d: &Delivery<'_>, room: u64, user: &UserId, pos: u64) -> Result<bool> {
    let Some(at) = d
        .rooms
        .state_pos_at(room, "m.room.member", user.as_str(), pos)?
    else {
        return Ok(false);
    };
    Ok(membership_of(&d.rooms.event(at)?.pdu)
        == Some(ruma::events::room::member::MembershipState::Join))
}

/// A user's own `m.read` receipt: queues a badge update for each of their `http` pushers.
async fn on_receipt(d: &Delivery<'_>, senders: &Senders, edu: &Edu) -> Result<()> {
    if edu.event["type"] != "m.receipt" {
        return Ok(());
    }
    let http_users = d.push.pushers.http_users()?;
    let mut readers: Vec<OwnedUserId> = Vec::new();
    for receipts in edu.event["content"]
        .as_object()
        .into_iter()
        .flat_map(|c| c.values())
    {
        for user in receipts["m.read"]
            .as_object()
            .into_iter()
            .flat_map(|r| r.keys())
        {
            if let Ok(user) = UserId::parse(user.as_str())
                && http_users.contains(&user)
                && !readers.contains(&user)
            {
                readers.push(user);
            }
        }
    }
    for user in readers {
        let pushers = d.push.pushers.list_stored(&user)?;
        let queued = notification::badge_only(notification::badge(d, &user)?);
        let pos = d.stream.head();
        let mut batch = Batch::new();
        let mut keys = Vec::new();
        for p in pushers {
            if matches!(p.pusher.kind, PusherKind::Http(_)) {
                let key = PusherKey::new(&user, &p.pusher.ids);
                outbox::put_entry(&mut batch, &key, pos, EntryKind::Badge, &queued);
                keys.push(key);
            }
        }
        if batch.is_empty() {
            continue;
        }
        d.store.write_durable(batch).await?;
        for key in keys {
            senders.wake(key);
        }
    }
    Ok(())
}
