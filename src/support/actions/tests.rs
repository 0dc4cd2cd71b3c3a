//! The desk's changes against a real server's services (store, rooms, presence) in a
//! temporary folder: what each action sends, indexes and audits, and what it refuses.

use std::sync::Arc;

use ruma::{
    OwnedRoomId, OwnedUserId, UserId, events::room::member::MembershipState, owned_user_id,
    presence::PresenceState,
};
use serde_json::json;

use super::*;
use crate::{
    config::Config,
    services::Services,
    support::{
        actor::Via,
        filter::{Assignee, Filter, Sort},
    },
    users::NewAccount,
};

/// A server with a desk: boss is a support admin, ana (capacity 1) and bob (capacity 5) are
/// agents, nobody online.
struct Fixture {
    services: Arc<Services>,
    customer: OwnedUserId,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        "server_name = \"x\"\n\
         [storage]\npath = {:?}\n\
         [support]\nadmins = [\"@boss:x\"]\n\
         [[support.agents]]\nuser = \"@ana:x\"\ncapacity = 1\n\
         [[support.agents]]\nuser = \"@bob:x\"\ncapacity = 5\n",
        dir.path().join("data")
    ))
    .unwrap();
    let services = Services::open(config).await.unwrap();
    for localpart in ["support", "boss", "ana", "bob", "carla"] {
        let account = NewAccount {
            localpart,
            password: None,
            admin: false,
            displayname: None,
        };
        services.users.create(account).await.unwrap();
    }
    Fixture {
        services,
        customer: owned_user_id!("@carla:x"),
        _dir: dir,
    }
}

impl Fixture {
    fn desk(&self) -> Desk<'_> {
        self.services.desk()
    }

    fn online(&self, user: &UserId) {
        let s = &self.services;
        s.presence
            .set(&s.rooms, user, PresenceState::Online, None)
            .unwrap();
    }

    /// A desk-owned room with the customer in it, not a conversation yet.
    async fn room(&self) -> OwnedRoomId {
        let desk = self.desk();
        let room = OwnedRoom {
            purpose: Purpose::Conversation,
            room_id: desk.rooms.new_room_id().unwrap(),
            name: None,
            topic: None,
            invite: vec![self.customer.clone()],
            is_direct: false,
            initial_state: Vec::new(),
        };
        owned_rooms::create_room(&desk, room).await.unwrap()
    }

    /// A conversation opened by the bot, as an invite would.
    async fn conversation(&self) -> OwnedRoomId {
        let room = self.room().await;
        open(&self.desk(), &room, Conversation::default(), &Actor::bot(1))
            .await
            .unwrap();
        room
    }

    fn state(&self, room: &RoomId) -> (Conversation, u64) {
        current(&self.desk(), room)
            .unwrap()
            .expect("a conversation")
    }

    fn record(&self, room: &RoomId) -> ConversationRecord {
        self.services.support.index.get(room).unwrap().unwrap()
    }

    fn load(&self, agent: &UserId) -> usize {
        self.services.support.index.load(agent).unwrap()
    }

    fn audit_log(&self) -> Vec<crate::support::audit::AuditEntry> {
        self.services.support.audit.list(100, None).unwrap().0
    }
}

fn errcode(e: Error) -> &'static str {
    match e {
        Error::Matrix { errcode, .. } => errcode,
        e => panic!("not a Matrix error: {e}"),
    }
}

#[tokio::test]
async fn open_gives_the_conversation_to_the_online_agent_in_the_same_state_event() {
    let f = fixture().await;
    let (ana, bob) = (owned_user_id!("@ana:x"), owned_user_id!("@bob:x"));
    f.online(&bob);
    let room = f.room().await;
    let desk = f.desk();
    let chosen = open(&desk, &room, Conversation::default(), &Actor::bot(1)).await;
    assert_eq!(chosen.unwrap(), Some(bob.clone()));
    let (content, pos) = f.state(&room);
    assert_eq!(content.assignee, Some(bob.clone()));
    assert_eq!(content.status, Status::Open);
    // Indexed at once, from that very event.
    let record = f.record(&room);
    assert_eq!((record.content, record.state_pos), (content, pos));
    assert_eq!((f.load(&bob), f.load(&ana)), (1, 0));
    // Opening it again sends nothing.
    let again = open(&desk, &room, Conversation::default(), &Actor::bot(2)).await;
    assert_eq!(again.unwrap(), None);
    assert_eq!(f.state(&room).1, pos);
    // With nobody online it waits in the queue.
    f.services
        .presence
        .set(&f.services.rooms, &bob, PresenceState::Offline, None)
        .unwrap();
    let queued = f.conversation().await;
    assert_eq!(f.state(&queued).0.assignee, None);
    let queue = Filter {
        assignee: Assignee::Unassigned,
        ..Default::default()
    };
    let (page, _) = f
        .services
        .support
        .index
        .list(&queue, Sort::Activity, 10, None)
        .unwrap();
    assert_eq!(
        page.into_iter().map(|r| r.room_id).collect::<Vec<_>>(),
        [queued]
    );
    // The bot's own changes are not audited.
    assert!(f.audit_log().is_empty());
}

#[tokio::test]
async fn assignment_never_pushes_an_agent_past_capacity() {
    let f = fixture().await;
    let ana = owned_user_id!("@ana:x");
    f.online(&ana);
    let desk = f.desk();
    let (first, second) = (f.conversation().await, f.conversation().await);
    // Ana (capacity 1) took the first on opening; the second waits.
    assert_eq!(f.state(&first).0.assignee, Some(ana.clone()));
    assert_eq!(f.state(&second).0.assignee, None);
    let next = assign_next(&desk, &second, &Actor::Bot { cause: None }).await;
    assert_eq!(next.unwrap(), None);
    assert_eq!(f.state(&second).0.assignee, None);
    // One that has its agent is left as it is.
    let (_, pos) = f.state(&first);
    let next = assign_next(&desk, &first, &Actor::Bot { cause: None }).await;
    assert_eq!(next.unwrap(), None);
    assert_eq!(f.state(&first).1, pos);
    // Closing the first frees her.
    let close = |c: &mut Conversation| {
        set_status(c, Status::Closed);
        Ok(())
    };
    let actor = Actor::bot(10);
    update(&desk, &first, &actor, "close", json!({}), close)
        .await
        .unwrap();
    assert_eq!(f.load(&ana), 0);
    let next = assign_next(&desk, &second, &Actor::Bot { cause: None }).await;
    assert_eq!(next.unwrap(), Some(ana.clone()));
    assert_eq!(f.state(&second).0.assignee, Some(ana.clone()));
    assert_eq!(f.load(&ana), 1);
}

#[tokio::test]
async fn assign_takes_only_staff_invites_them_and_audits_who_asked() {
    let f = fixture().await;
    let desk = f.desk();
    let room = f.conversation().await;
    let boss = owned_user_id!("@boss:x");
    let api = Actor::Api { user: &boss };
    let (_, before) = f.state(&room);
    let refused = assign(&desk, &room, Some(&f.customer), &api)
        .await
        .unwrap_err();
    assert_eq!(errcode(refused), "M_INVALID_PARAM");
    assert_eq!(
        f.state(&room).1,
        before,
        "a refused assignment sends nothing"
    );
    assert!(f.audit_log().is_empty());

    let ana = owned_user_id!("@ana:x");
    let new = assign(&desk, &room, Some(&ana), &api).await.unwrap();
    assert_eq!(new.assignee, Some(ana.clone()));
    assert_eq!(f.record(&room).content.assignee, Some(ana.clone()));
    let meta = desk.rooms.room(&room).unwrap();
    assert_eq!(
        desk.rooms.membership(&meta, &ana).unwrap(),
        Some(MembershipState::Invite)
    );
    // A support admin may be assigned too.
    assign(&desk, &room, Some(&boss), &api).await.unwrap();
    let log = f.audit_log();
    assert_eq!(log.len(), 2);
    let first = &log[1];
    assert_eq!(
        (first.actor.as_str(), first.action.as_str(), first.via),
        ("@boss:x", "conversation.assign", Via::Api)
    );
    assert_eq!(first.target, room.as_str());
    assert_eq!(first.details, json!({ "assignee": "@ana:x" }));

    // Unassigning as the bot: the queue again, and no audit entry.
    let new = assign(&desk, &room, None, &Actor::bot(20)).await.unwrap();
    assert_eq!(new.assignee, None);
    assert_eq!(f.record(&room).content.assignee, None);
    assert_eq!(f.audit_log().len(), 2);
}

/// `!status` from `user`, the command at stream position `pos`.
async fn set_status_as(
    desk: &Desk<'_>,
    room: &RoomId,
    user: &UserId,
    pos: u64,
    status: Status,
) -> Conversation {
    let command = Actor::Command { user, pos };
    let edit = |c: &mut Conversation| {
        set_status(c, status);
        Ok(())
    };
    update(desk, room, &command, "conversation.status", json!({}), edit)
        .await
        .unwrap()
}

#[tokio::test]
async fn closing_sets_the_resolution_time_and_reopening_clears_it() {
    let f = fixture().await;
    let desk = f.desk();
    let room = f.conversation().await;
    let boss = owned_user_id!("@boss:x");
    let closed = set_status_as(&desk, &room, &boss, 30, Status::Closed).await;
    assert_eq!(closed.status, Status::Closed);
    let resolved = closed.resolved_ts.expect("resolved");
    // Closing again changes nothing: the resolution time stays.
    let again = set_status_as(&desk, &room, &boss, 31, Status::Closed).await;
    assert_eq!(again.resolved_ts, Some(resolved));
    let reopened = set_status_as(&desk, &room, &boss, 32, Status::Open).await;
    assert_eq!(
        (reopened.status, reopened.resolved_ts),
        (Status::Open, None)
    );
    assert_eq!(f.state(&room).0, reopened);
    // Two changes audited, as commands; the one that changed nothing is not.
    let log = f.audit_log();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|e| e.via == Via::Command && e.actor == boss));
}

#[tokio::test]
async fn a_conversation_keeps_at_most_twenty_labels() {
    let f = fixture().await;
    let desk = f.desk();
    let room = f.conversation().await;
    let boss = owned_user_id!("@boss:x");
    let api = Actor::Api { user: &boss };
    let label = |range: std::ops::Range<usize>| {
        move |c: &mut Conversation| {
            c.labels.extend(range.map(|i| format!("l{i}")));
            Ok(())
        }
    };
    let twenty = update(
        &desk,
        &room,
        &api,
        "conversation.labels",
        json!({}),
        label(0..20),
    )
    .await
    .unwrap();
    assert_eq!(twenty.labels.len(), MAX_LABELS);
    let (_, pos) = f.state(&room);
    let refused = update(
        &desk,
        &room,
        &api,
        "conversation.labels",
        json!({}),
        label(20..21),
    )
    .await
    .unwrap_err();
    assert_eq!(errcode(refused), "M_INVALID_PARAM");
    // Nothing sent, indexed or audited.
    let (content, now) = f.state(&room);
    assert_eq!((content.labels, now), (twenty.labels.clone(), pos));
    assert_eq!(f.record(&room).content.labels, twenty.labels);
    assert_eq!(f.audit_log().len(), 1);
    // Each label is a listing.
    let filter = Filter {
        label: Some("l19".into()),
        ..Default::default()
    };
    let (page, _) = f
        .services
        .support
        .index
        .list(&filter, Sort::Activity, 10, None)
        .unwrap();
    assert_eq!(page.len(), 1);
}

#[tokio::test]
async fn changing_a_room_that_is_no_conversation_is_not_found() {
    let f = fixture().await;
    let desk = f.desk();
    let room = f.room().await;
    let result = update(&desk, &room, &Actor::bot(1), "x", json!({}), |_| Ok(())).await;
    assert_eq!(errcode(result.unwrap_err()), "M_NOT_FOUND");
    assert!(f.services.support.index.get(&room).unwrap().is_none());
}

/// A listing's text filter that matches a fixed set of rooms and records what it was asked.
#[derive(Debug)]
struct FixedText {
    matching: Vec<OwnedRoomId>,
    /// Rooms that surely do not match (`may_match` false).
    excluded: Vec<OwnedRoomId>,
    asked: parking_lot::Mutex<Vec<Vec<OwnedRoomId>>>,
}

impl crate::support::filter::RoomText for FixedText {
    fn may_match(&self, room: &RoomId) -> bool {
        !self.excluded.iter().any(|r| r == room)
    }

    fn matching(&self, rooms: &[&RoomId]) -> crate::error::Result<Vec<bool>> {
        self.asked
            .lock()
            .push(rooms.iter().map(|r| (*r).to_owned()).collect());
        Ok(rooms
            .iter()
            .map(|r| self.matching.iter().any(|m| m == r))
            .collect())
    }
}

#[tokio::test]
async fn a_listing_by_text_asks_in_batches_and_pages_without_gaps_or_repeats() {
    let f = fixture().await;
    for _ in 0..40 {
        f.conversation().await;
    }
    let index = &f.services.support.index;
    let (all, _) = index
        .list(&Filter::default(), Sort::Activity, 100, None)
        .unwrap();
    let all: Vec<OwnedRoomId> = all.into_iter().map(|r| r.room_id).collect();
    assert_eq!(all.len(), 40);
    // Every fifth room is known not to match before its record is read; of the others, every
    // third matches.
    let excluded: Vec<OwnedRoomId> = all.iter().skip(1).step_by(5).cloned().collect();
    let want: Vec<OwnedRoomId> = all
        .iter()
        .step_by(3)
        .filter(|r| !excluded.contains(r))
        .cloned()
        .collect();
    let text = Arc::new(FixedText {
        matching: want.clone(),
        excluded,
        asked: parking_lot::Mutex::new(Vec::new()),
    });
    let filter = Filter {
        text: Some(text.clone()),
        ..Default::default()
    };
    let (mut got, mut from, mut pages) = (Vec::new(), None, 0);
    loop {
        let (page, next) = index
            .list(&filter, Sort::Activity, 4, from.as_ref())
            .unwrap();
        pages += 1;
        assert!(page.len() <= 4);
        got.extend(page.into_iter().map(|r| r.room_id));
        match next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    assert_eq!(got, want);
    assert_eq!(pages, want.len().div_ceil(4));
    let asked = text.asked.lock();
    // Asked about at least 16 rooms at a time, except at the end of the scan; never about a
    // room excluded up front.
    for batch in asked.iter().rev().skip(1) {
        assert!(batch.len() >= 16 || batch.is_empty(), "{}", batch.len());
    }
    assert!(asked.iter().flatten().all(|r| !text.excluded.contains(r)));
}
