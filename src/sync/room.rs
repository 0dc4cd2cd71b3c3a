//! The per-room sections of a sync response: joined, invited and left rooms.

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UInt,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v3::{self, InvitedRoom, JoinedRoom, LeftRoom, RoomSummary, State, StateEvents, Timeline},
    },
    events::room::member::MembershipState,
    serde::Raw,
};
use serde_json::value::RawValue as RawJsonValue;

use super::{SyncContext, SyncRequest, account_data_event, ephemeral, format_token};
use crate::{
    error::Result,
    events::ClientFormat,
    push::RoomRules,
    rooms::{Direction, EventView, Loaded, RoomMeta, UserRoom, Visibility},
};

/// Timeline events, oldest first, with whether older ones were left out.
struct TimelineSlice {
    events: Vec<(u64, std::sync::Arc<Loaded>)>,
    limited: bool,
    /// Where a client paginates back from: before the oldest event, or where the scan stopped.
    prev_batch: u64,
}

/// Events one room's timeline scan looks at (a filter that matches nothing, or history the user
/// may not see, must not make a sync read a whole room); past it the timeline is `limited`.
const MAX_TIMELINE_SCAN: usize = 5_000;
/// Events a state delta reads; past it the full state is sent instead, which is what a client
/// with a token that old needs anyway.
const MAX_DELTA_SCAN: usize = 10_000;

pub(super) fn rooms(
    ctx: &SyncContext<'_>,
    req: &SyncRequest,
    head: u64,
    response: &mut v3::Response,
) -> Result<()> {
    let since = req.since_pos().unwrap_or(0);
    let mut room_account_data: HashMap<OwnedRoomId, Vec<Box<RawJsonValue>>> = HashMap::new();
    for change in ctx.s.users.account_data_since(&ctx.who.user_id, since)? {
        if let Some(room) = change.room_id
            && change.pos <= head
            && req.filter.room_account_data_allows(&change.kind)
        {
            room_account_data
                .entry(room)
                .or_default()
                .push(account_data_event(&change.kind, &change.content));
        }
    }

    for (room_id, membership) in ctx.s.rooms.user_rooms(&ctx.who.user_id)? {
        if !req.filter.room_allowed(&room_id) || membership.pos > head {
            continue;
        }
        let account_data = room_account_data.remove(&room_id);
        match membership.membership {
            MembershipState::Join => {
                if let Some(joined) =
                    joined_room(ctx, req, head, &room_id, &membership, account_data)?
                {
                    response.rooms.join.insert(room_id, joined);
                }
            }
            MembershipState::Invite if req.since_pos().is_none_or(|s| membership.pos > s) => {
                response
                    .rooms
                    .invite
                    .insert(room_id.clone(), invited_room(ctx, &room_id)?);
            }
            MembershipState::Knock if req.since_pos().is_none_or(|s| membership.pos > s) => {
                response
                    .rooms
                    .knock
                    .insert(room_id.clone(), knocked_room(ctx, &room_id)?);
            }
            MembershipState::Leave | MembershipState::Ban => {
                let wanted = match req.since_pos() {
                    Some(s) => membership.pos > s,
                    None => req.filter.include_leave,
                };
                if wanted {
                    response
                        .rooms
                        .leave
                        .insert(room_id.clone(), left_room(ctx, req, &room_id, &membership)?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn view<'a>(ctx: &'a SyncContext<'_>) -> EventView<'a> {
    EventView::of(&ctx.who.user_id, &ctx.who.device_id, ClientFormat::Sync)
}

fn joined_room(
    ctx: &SyncContext<'_>,
    req: &SyncRequest,
    head: u64,
    room_id: &RoomId,
    membership: &UserRoom,
    account_data: Option<Vec<Box<RawJsonValue>>>,
) -> Result<Option<JoinedRoom>> {
    let room = ctx.s.rooms.room(room_id)?;
    // A room joined after the token is new to the client: send it whole.
    let since = req.since_pos().filter(|s| membership.pos <= *s);
    let ephemeral = ephemeral::room_events(ctx, req, &room, since, head)?;
    if let Some(s) = since
        && room.last_pos() <= s
        && !req.full_state
        && account_data.is_none()
        && ephemeral.is_empty()
    {
        return Ok(None);
    }
    let visibility = match since {
        None => Some(Visibility::load(ctx.s.rooms, &room, &ctx.who.user_id)?),
        Some(_) => None,
    };
    let slice = timeline(
        ctx,
        req,
        &room,
        since.unwrap_or(0),
        head,
        visibility.as_ref(),
    )?;
    let boundary = slice.events.first().map(|(p, _)| p - 1).unwrap_or(head);
    let delta = match since {
        Some(since) if !req.full_state => state_delta(ctx, &room, since, boundary)?,
        _ => None,
    };
    let state = match delta {
        Some(delta) => delta,
        None => full_state_at(ctx, req, &room, boundary, &slice)?,
    };

    let mut joined = JoinedRoom::new();
    joined.timeline = to_timeline(ctx, &slice)?;
    joined.state = state_section(req, state, &slice, ctx)?;
    joined.summary = summary(&room, &ctx.who.user_id);
    if req.filter.def.room.timeline.unread_thread_notifications {
        (
            joined.unread_notifications,
            joined.unread_thread_notifications,
        ) = ctx.s.push.unread_by_thread(
            ctx.s.rooms,
            ctx.s.receipts,
            &ctx.ruleset,
            &room,
            &ctx.who.user_id,
            head,
        )?;
    } else {
        joined.unread_notifications = unread(ctx, &room, head)?;
    }
    joined.ephemeral.events = ephemeral;
    if let Some(events) = account_data {
        joined.account_data.events = events.into_iter().map(Raw::from_json).collect();
    }
    Ok(Some(joined))
}

/// The newest visible events in `(lower, upper]` that pass the filter, oldest first.
fn timeline(
    ctx: &SyncContext<'_>,
    req: &SyncRequest,
    room: &RoomMeta,
    lower: u64,
    upper: u64,
    visibility: Option<&Visibility>,
) -> Result<TimelineSlice> {
    let limit = req.filter.timeline_limit;
    let mut events = Vec::new();
    let mut cursor = upper;
    let mut limited = false;
    let mut scanned = 0;
    'scan: loop {
        if scanned >= MAX_TIMELINE_SCAN {
            limited = true;
            break;
        }
        let batch = ctx.s.rooms.timeline_positions(
            room.short,
            cursor,
            Direction::Backward,
            limit.max(1) + 1,
        )?;
        if batch.is_empty() {
            break;
        }
        for pos in batch {
            if pos <= lower {
                break 'scan;
            }
            cursor = pos - 1;
            scanned += 1;
            if visibility.is_some_and(|v| !v.can_see(pos)) {
                continue;
            }
            let event = ctx.s.rooms.event(pos)?;
            if !req
                .filter
                .timeline_allows(event.pdu.kind.to_string().as_str(), &event.pdu.sender)
            {
                continue;
            }
            if events.len() == limit {
                limited = true;
                break 'scan;
            }
            events.push((pos, event));
        }
        if cursor <= lower || cursor == 0 {
            break;
        }
    }
    events.reverse();
    let prev_batch = match events.first() {
        Some((first, _)) => first - 1,
        None if limited => cursor,
        None => lower,
    };
    Ok(TimelineSlice {
        events,
        limited,
        prev_batch,
    })
}

fn to_timeline(ctx: &SyncContext<'_>, slice: &TimelineSlice) -> Result<Timeline> {
    let mut timeline = Timeline::new();
    timeline.limited = slice.limited;
    timeline.prev_batch = Some(format_token(slice.prev_batch));
    for (_, event) in &slice.events {
        timeline
            .events
            .push(Raw::from_json(ctx.s.rooms.format_event(event, view(ctx))?));
    }
    Ok(timeline)
}

/// The full room state just before the timeline (at `boundary`).
fn full_state_at(
    ctx: &SyncContext<'_>,
    req: &SyncRequest,
    room: &RoomMeta,
    boundary: u64,
    slice: &TimelineSlice,
) -> Result<Vec<u64>> {
    let wanted_members: Option<HashSet<&str>> = req.filter.lazy_load_members.then(|| {
        let mut senders: HashSet<&str> = slice
            .events
            .iter()
            .map(|(_, e)| e.pdu.sender.as_str())
            .collect();
        senders.insert(ctx.who.user_id.as_str());
        senders
    });
    let mut out = Vec::new();
    for (kind, state_key, pos) in ctx.s.rooms.current_state_keys(room.short)? {
        if kind == "m.room.member"
            && let Some(wanted) = &wanted_members
            && !wanted.contains(state_key.as_str())
        {
            continue;
        }
        let at = if pos <= boundary {
            Some(pos)
        } else {
            ctx.s
                .rooms
                .state_pos_at(room.short, &kind, &state_key, boundary)?
        };
        out.extend(at);
    }
    Ok(out)
}

/// State events between the token and the timeline, the latest per key; `None` when more than
/// [`MAX_DELTA_SCAN`] events lie between them.
fn state_delta(
    ctx: &SyncContext<'_>,
    room: &RoomMeta,
    since: u64,
    boundary: u64,
) -> Result<Option<Vec<u64>>> {
    let mut latest: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut cursor = since;
    let mut scanned = 0;
    while cursor < boundary {
        if scanned >= MAX_DELTA_SCAN {
            return Ok(None);
        }
        let batch = ctx
            .s
            .rooms
            .timeline_positions(room.short, cursor, Direction::Forward, 256)?;
        if batch.is_empty() {
            break;
        }
        for pos in batch {
            if pos > boundary {
                return Ok(Some(latest.into_values().collect()));
            }
            cursor = pos;
            scanned += 1;
            let pdu = &ctx.s.rooms.event(pos)?.pdu;
            if let Some(key) = &pdu.state_key {
                latest.insert((pdu.kind.to_string(), key.clone()), pos);
            }
        }
    }
    Ok(Some(latest.into_values().collect()))
}

fn state_section(
    req: &SyncRequest,
    positions: Vec<u64>,
    _slice: &TimelineSlice,
    ctx: &SyncContext<'_>,
) -> Result<State> {
    let mut events = StateEvents::new();
    for pos in positions {
        let event = ctx.s.rooms.event(pos)?;
        if !req
            .filter
            .state_allows(event.pdu.kind.to_string().as_str(), &event.pdu.sender)
        {
            continue;
        }
        events
            .events
            .push(Raw::from_json(ctx.s.rooms.format_event(&event, view(ctx))?));
    }
    Ok(if req.use_state_after {
        State::After(events)
    } else {
        State::Before(events)
    })
}

fn summary(room: &RoomMeta, me: &ruma::UserId) -> RoomSummary {
    let mut summary = RoomSummary::new();
    let mut heroes: Vec<OwnedUserId> = room
        .joined_members()
        .into_iter()
        .filter(|u| u != me)
        .collect();
    heroes.sort();
    heroes.truncate(5);
    summary.heroes = heroes;
    summary.joined_member_count = Some(UInt::try_from(room.joined_count()).unwrap_or_default());
    summary.invited_member_count = Some(UInt::try_from(room.invited_count()).unwrap_or_default());
    summary
}

/// Notifications and highlights, by the user's push rules, since their read receipt.
fn unread(ctx: &SyncContext<'_>, room: &RoomMeta, head: u64) -> Result<UnreadNotificationsCount> {
    let me = &ctx.who.user_id;
    let read_up_to = ctx.s.receipts.read_up_to(room.short, me)?;
    let counts = ctx
        .s
        .push
        .unread_counts(ctx.s.rooms, room, me, read_up_to, head, || {
            RoomRules::new(ctx.s.rooms, ctx.ruleset.get()?, room, me)
        })?;
    let mut out = UnreadNotificationsCount::new();
    out.notification_count = Some(UInt::try_from(counts.notify).unwrap_or(UInt::MAX));
    out.highlight_count = Some(UInt::try_from(counts.highlight).unwrap_or(UInt::MAX));
    Ok(out)
}

fn invited_room(ctx: &SyncContext<'_>, room_id: &RoomId) -> Result<InvitedRoom> {
    let room = ctx.s.rooms.room(room_id)?;
    let mut invited = InvitedRoom::new();
    for pdu in ctx.s.rooms.stripped_state(&room, &ctx.who.user_id)? {
        invited.invite_state.events.push(Raw::from_json(pdu));
    }
    Ok(invited)
}

fn knocked_room(ctx: &SyncContext<'_>, room_id: &RoomId) -> Result<v3::KnockedRoom> {
    let room = ctx.s.rooms.room(room_id)?;
    let mut knocked = v3::KnockedRoom::new();
    for pdu in ctx.s.rooms.stripped_state(&room, &ctx.who.user_id)? {
        knocked.knock_state.events.push(Raw::from_json(pdu));
    }
    Ok(knocked)
}

fn left_room(
    ctx: &SyncContext<'_>,
    req: &SyncRequest,
    room_id: &RoomId,
    membership: &UserRoom,
) -> Result<LeftRoom> {
    let room = ctx.s.rooms.room(room_id)?;
    let visibility = Visibility::load(ctx.s.rooms, &room, &ctx.who.user_id)?;
    let lower = req.since_pos().unwrap_or(0);
    let slice = timeline(ctx, req, &room, lower, membership.pos, Some(&visibility))?;
    let boundary = slice
        .events
        .first()
        .map(|(p, _)| p - 1)
        .unwrap_or(membership.pos);
    let mut left = LeftRoom::new();
    left.timeline = to_timeline(ctx, &slice)?;
    left.state = state_section(
        req,
        full_state_at(ctx, req, &room, boundary, &slice)?,
        &slice,
        ctx,
    )?;
    Ok(left)
}
