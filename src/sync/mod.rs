//! `/sync`: what changed for a user since a token, long-polling when nothing did.
//!
//! Tokens are stream positions (`s<pos>`). An incremental sync visits only rooms whose last
//! position is past the token (an in-memory comparison per room) and reads only what changed
//! in them; an initial sync builds every room from its current state. A sync that finds nothing
//! subscribes to the user's notifier *before* computing, so it cannot miss a commit.

mod ephemeral;
mod filter;
mod room;
mod token;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use ruma::{
    api::client::{filter::FilterDefinition, sync::sync_events::v3},
    serde::Raw,
};
use serde_json::value::RawValue as RawJsonValue;

use crate::stream::Notifier;
pub(crate) use filter::{SyncFilter, types_allowed};
pub use token::SyncToken;
pub(crate) use token::{format_token, parse_token};

use crate::{
    e2ee::E2eeService,
    ephemeral::{PresenceService, ReceiptService, TypingService},
    error::{Error, Result},
    push::{LazyRuleset, PushService},
    rooms::RoomService,
    stream::Stream,
    users::{Identity, PUSH_RULES, PushRulesContent, UserService, default_push_rules},
};

/// The longest a client may make us hold a request.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

pub struct SyncService {
    stream: Arc<Stream>,
    notifier: Arc<Notifier>,
    /// Long polls waiting right now (for `/metrics`).
    waiting: AtomicUsize,
}

/// Counts one waiting long poll for as long as it lives: also when its client goes away and
/// the request's future is dropped mid-wait.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A parsed sync request.
pub(crate) struct SyncRequest {
    pub(crate) since: Option<SyncToken>,
    pub(crate) full_state: bool,
    pub(crate) timeout: Duration,
    pub(crate) filter: SyncFilter,
    pub(crate) use_state_after: bool,
}

impl SyncRequest {
    /// The global position the client is at, if this is an incremental sync.
    pub(crate) fn since_pos(&self) -> Option<u64> {
        self.since.map(|t| t.pos)
    }
}

/// The services a sync reads, and only those (`Services::sync_services` builds it): a sync
/// changes nothing but the to-device inbox it acknowledges.
#[derive(Clone, Copy)]
pub struct SyncServices<'a> {
    pub(crate) users: &'a UserService,
    pub(crate) rooms: &'a RoomService,
    pub(crate) receipts: &'a ReceiptService,
    pub(crate) typing: &'a TypingService,
    pub(crate) presence: &'a PresenceService,
    pub(crate) push: &'a PushService,
    pub(crate) e2ee: &'a E2eeService,
}

/// Who is syncing, and the services a sync reads from.
pub struct SyncContext<'a> {
    pub(crate) s: SyncServices<'a>,
    pub(crate) who: &'a Identity,
    /// The syncer's push rules, read only if some room needs its counts recomputed.
    pub(crate) ruleset: LazyRuleset<'a>,
}

impl<'a> SyncContext<'a> {
    pub(crate) fn new(s: SyncServices<'a>, who: &'a Identity) -> Self {
        SyncContext {
            s,
            who,
            ruleset: LazyRuleset::new(s.users, &who.user_id),
        }
    }
}

impl SyncService {
    pub(crate) fn new(stream: Arc<Stream>, notifier: Arc<Notifier>) -> Self {
        SyncService {
            stream,
            notifier,
            waiting: AtomicUsize::new(0),
        }
    }

    /// How many `/sync` long polls are waiting for something to happen.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Resolves the request's filter: inline JSON or the id of a stored filter.
    pub(crate) fn resolve_filter(
        users: &UserService,
        who: &Identity,
        filter: Option<&v3::Filter>,
    ) -> Result<SyncFilter> {
        let def = match filter {
            None => FilterDefinition::default(),
            Some(v3::Filter::FilterDefinition(def)) => def.clone(),
            Some(v3::Filter::FilterId(id)) => {
                // Some clients inline JSON that ruma could not parse as a definition.
                if id.trim_start().starts_with('{') {
                    serde_json::from_str(id)
                        .map_err(|e| Error::bad_json(format!("Invalid filter: {e}")))?
                } else {
                    users
                        .filter(&who.user_id, id)?
                        .ok_or_else(|| Error::invalid_param(format!("Unknown filter {id}")))?
                }
            }
            Some(_) => FilterDefinition::default(),
        };
        Ok(SyncFilter::new(def))
    }

    pub(crate) async fn sync(
        &self,
        ctx: SyncContext<'_>,
        req: SyncRequest,
    ) -> Result<v3::Response> {
        let deadline = tokio::time::Instant::now() + req.timeout.min(MAX_TIMEOUT);
        loop {
            let mut wake = self.notifier.subscribe(&ctx.who.user_id);
            let head = self.stream.head();
            if let Some(since) = req.since
                && (since.pos > head || since.ephemeral > self.stream.ephemeral_head())
            {
                // A token from the future (another server's, or a wiped database): start over.
                return Err(Error::invalid_param("since token is ahead of the server"));
            }
            let response = self.compute(&ctx, &req, head)?;
            let waiting = req.since.is_some() && !req.full_state && is_empty(&response);
            if !waiting {
                return Ok(response);
            }
            let _waiting = Waiting::new(&self.waiting);
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        return Ok(response);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(response),
                _ = self.notifier.stopped() => return Ok(response),
            }
        }
    }

    fn compute(&self, ctx: &SyncContext<'_>, req: &SyncRequest, head: u64) -> Result<v3::Response> {
        // Read the ephemeral head first: a change numbered after it is sent next time.
        let mut next = SyncToken {
            pos: head,
            ephemeral: self.stream.ephemeral_head(),
            to_device: req.since.map_or(0, |t| t.to_device),
        };
        let mut response = v3::Response::new(String::new());
        let since = req.since_pos().unwrap_or(0);

        for change in ctx.s.users.account_data_since(&ctx.who.user_id, since)? {
            if change.pos > head {
                continue;
            }
            match &change.room_id {
                None if req.filter.account_data_allows(&change.kind) => {
                    response
                        .account_data
                        .events
                        .push(Raw::from_json(account_data_event(
                            &change.kind,
                            &change.content,
                        )));
                }
                _ => {}
            }
        }

        // Clients need push rules from their first sync; users who never changed theirs have
        // none stored, so send the defaults.
        if req.since.is_none()
            && req.filter.account_data_allows(PUSH_RULES)
            && ctx
                .s
                .users
                .account_data(&ctx.who.user_id, None, PUSH_RULES)?
                .is_none()
        {
            let content = PushRulesContent {
                global: default_push_rules(&ctx.who.user_id),
            };
            let content = serde_json::value::to_raw_value(&content).expect("rules serialize");
            response
                .account_data
                .events
                .push(Raw::from_json(account_data_event(PUSH_RULES, &content)));
        }

        room::rooms(ctx, req, head, &mut response)?;
        ephemeral::presence(ctx, req, &mut response)?;
        let since = req.since.map(|t| crate::e2ee::sync::Since {
            pos: t.pos,
            to_device: t.to_device,
        });
        next.to_device =
            crate::e2ee::sync::fill(ctx.s.e2ee, ctx.s.rooms, ctx.who, since, head, &mut response)?;
        response.next_batch = next.to_string();
        Ok(response)
    }
}

/// `{"type": ..., "content": ...}`, the shape of account data events.
pub(crate) fn account_data_event(kind: &str, content: &RawJsonValue) -> Box<RawJsonValue> {
    #[derive(serde::Serialize)]
    struct E<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        content: &'a RawJsonValue,
    }
    serde_json::value::to_raw_value(&E { kind, content }).expect("serializes")
}

fn is_empty(r: &v3::Response) -> bool {
    r.rooms.join.is_empty()
        && r.rooms.invite.is_empty()
        && r.rooms.leave.is_empty()
        && r.rooms.knock.is_empty()
        && r.account_data.events.is_empty()
        && r.presence.events.is_empty()
        && r.to_device.events.is_empty()
        && r.device_lists.changed.is_empty()
        && r.device_lists.left.is_empty()
}
