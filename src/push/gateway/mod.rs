//! Push gateway delivery (spec v1.16: Client-Server "Push Notifications", Push Gateway API).
//!
//! A stream consumer, like the support bot: it reads events in stream order from a durable
//! cursor, evaluates the push rules of the room's members who have an `http` pusher, and queues
//! a notification for each of their pushers when the actions say `notify` (`outbox.rs`). The
//! rules are evaluated here, not when an event is stored, so sending a message costs the same
//! with or without pushers. Senders (`sender.rs`) POST each pusher's queue to its gateway.
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

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId, api::client::push::PusherKind, events::TimelineEventType};

use crate::{
    error::{Error, Result},
    push::RoomRules,
    rooms::{Loaded, member_target, membership_of},
    services::Services,
    storage::Batch,
    sync::Edu,
};
use outbox::{EntryKind, PusherKey, Queued};
use sender::Senders;

/// Events read from the stream per step.
const STEP: usize = 256;
/// How often the cursor is saved while only events that notify nobody flow.
const CURSOR_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Loads the cursor, starts the senders of what was queued before a restart, and starts the
/// consumer. Returns once the cursor is fixed, so no event committed after the server started
/// can be missed.
pub async fn start(s: &Arc<Services>) -> Result<()> {
    let cursor = match outbox::load_cursor(&s.store)? {
        Some(cursor) => cursor,
        // A new server starts from now, not from the beginning of history.
        None => {
            let head = s.stream.head();
            let mut batch = Batch::new();
            outbox::put_cursor(&mut batch, head);
            s.store.write_durable(batch).await?;
            head
        }
    };
    let filter = s
        .config
        .server
        .outbound_filter()
        .map_err(|e| Error::internal(e.to_string()))?;
    let senders = Arc::new(Senders::new(filter));
    for pusher in outbox::queued_pushers(&s.store)? {
        senders.wake(s, pusher);
    }
    tokio::spawn(consume(s.clone(), senders, cursor));
    Ok(())
}

async fn consume(s: Arc<Services>, senders: Arc<Senders>, mut cursor: u64) {
    let mut head_rx = s.stream.watch();
    let mut edus = s.notifier.subscribe_edus();
    let (mut saved, mut last_save) = (cursor, Instant::now());
    'stream: loop {
        let head = *head_rx.borrow_and_update();
        while cursor < head {
            match step(&s, &senders, cursor, head).await {
                Ok((upto, durable)) => {
                    cursor = upto;
                    if durable {
                        saved = upto;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "push delivery cannot read the stream, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = s.notifier.stopped() => return,
                    }
                    continue 'stream;
                }
            }
        }
        // Moving over events that notify nobody: saved at most once per interval and not
        // waited for, since replaying them after a crash queues nothing.
        if cursor != saved && last_save.elapsed() >= CURSOR_SAVE_INTERVAL {
            let mut batch = Batch::new();
            outbox::put_cursor(&mut batch, cursor);
            match s.store.write(batch) {
                Ok(_not_awaited) => (saved, last_save) = (cursor, Instant::now()),
                Err(e) => tracing::error!(error = %e, "push delivery cannot save its cursor"),
            }
        }
        let save_later = tokio::time::sleep(if cursor != saved {
            CURSOR_SAVE_INTERVAL
        } else {
            Duration::from_secs(24 * 3600)
        });
        tokio::select! {
            changed = head_rx.changed() => if changed.is_err() { return },
            edu = edus.recv() => {
                if let Ok(edu) = edu
                    && let Err(e) = on_receipt(&s, &senders, &edu).await
                {
                    tracing::warn!(error = %e, "push delivery: badge update not queued");
                }
            }
            _ = save_later => {}
            _ = s.notifier.stopped() => return,
        }
    }
}

/// Handles the events in `(cursor, head]`, at most [`STEP`]: returns how far it got and
/// whether that position is on disk with the notifications it queued.
async fn step(
    s: &Arc<Services>,
    senders: &Arc<Senders>,
    cursor: u64,
    head: u64,
) -> Result<(u64, bool)> {
    if s.push.pushers.http_users()?.is_empty() {
        // Nobody to push to: the events need not even be read.
        return Ok((head, false));
    }
    let events = s.rooms.events_in_range(cursor, head, STEP)?;
    let Some(upto) = events.last().map(|(pos, _)| *pos) else {
        return Ok((head, false));
    };
    let mut batch = Batch::new();
    let mut touched: Vec<PusherKey> = Vec::new();
    let mut rulesets = HashMap::new();
    for (pos, event) in &events {
        // Evaluation is CPU work on the shared runtime: let request handlers in between events.
        tokio::task::yield_now().await;
        // One event never stops delivery for everyone: a failure other than the store's (which
        // is retried) and even a panic skip that event, loudly.
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for_event(s, *pos, event, &mut rulesets)
        }));
        let queued = match handled {
            Ok(Ok(queued)) => queued,
            Ok(Err(e @ Error::Storage(_))) => return Err(e),
            Ok(Err(e)) => {
                tracing::warn!(pos, error = %e, "push delivery: event skipped");
                continue;
            }
            Err(_) => {
                tracing::error!(pos, "push delivery: handling the event panicked; skipped");
                continue;
            }
        };
        for (pusher, q) in queued {
            outbox::put_entry(&mut batch, &pusher, *pos, EntryKind::Event, &q);
            if !touched.contains(&pusher) {
                touched.push(pusher);
            }
        }
    }
    if touched.is_empty() {
        return Ok((upto, false));
    }
    outbox::put_cursor(&mut batch, upto);
    s.store.write_durable(batch).await?;
    for pusher in touched {
        senders.wake(s, pusher);
    }
    Ok((upto, true))
}

/// The notifications `event` queues: one per `http` pusher of each local member it notifies.
fn for_event(
    s: &Services,
    pos: u64,
    event: &Loaded,
    rulesets: &mut HashMap<OwnedUserId, Arc<ruma::push::Ruleset>>,
) -> Result<Vec<(PusherKey, Queued)>> {
    let http_users = s.push.pushers.http_users()?;
    if http_users.is_empty() {
        return Ok(Vec::new());
    }
    let pdu = &event.pdu;
    let room = s.rooms.room(&pdu.room_id)?;
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
        if invitee.as_ref() != Some(&user) && !joined_at(s, room.short, &user, pos)? {
            continue;
        }
        let ruleset = match rulesets.get(&user) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(s.users.push_rules(&user)?);
                rulesets.insert(user.clone(), r.clone());
                r
            }
        };
        let outcome =
            RoomRules::new(&s.rooms, ruleset, &room, &user)?.evaluate(pdu, &event.stored.pdu);
        if !outcome.notify {
            continue;
        }
        let pushers: Vec<_> = s
            .push
            .pushers
            .list_stored(&user)?
            .into_iter()
            .filter(|p| matches!(p.pusher.kind, PusherKind::Http(_)) && p.since_pos < pos)
            .collect();
        if pushers.is_empty() {
            continue;
        }
        let badge = notification::badge(s, &user)?;
        let tweaks = notification::tweaks(&outcome.actions);
        let queued = notification::for_event(s, &room, event, &user, tweaks, badge)?;
        for p in pushers {
            out.push((PusherKey::new(&user, &p.pusher.ids), queued.clone()));
        }
    }
    Ok(out)
}

/// Whether the user was joined when the event at `pos` was sent (a consumer that is behind
/// must not push events from before someone joined).
fn joined_at(s: &Services, room: u64, user: &UserId, pos: u64) -> Result<bool> {
    let Some(at) = s
        .rooms
        .state_pos_at(room, "m.room.member", user.as_str(), pos)?
    else {
        return Ok(false);
    };
    Ok(membership_of(&s.rooms.event(at)?.pdu)
        == Some(ruma::events::room::member::MembershipState::Join))
}

/// A user's own `m.read` receipt: queues a badge update for each of their `http` pushers.
async fn on_receipt(s: &Arc<Services>, senders: &Arc<Senders>, edu: &Edu) -> Result<()> {
    if edu.event["type"] != "m.receipt" {
        return Ok(());
    }
    let http_users = s.push.pushers.http_users()?;
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
        let pushers = s.push.pushers.list_stored(&user)?;
        let queued = notification::badge_only(notification::badge(s, &user)?);
        let pos = s.stream.head();
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
        s.store.write_durable(batch).await?;
        for key in keys {
            senders.wake(s, key);
        }
    }
    Ok(())
}
