//! The bot invited into a room: the room becomes a conversation, or the bot opens one.
//!
//! Three cases, in order:
//! - The room already is the desk's conversation (a bridge portal, opened by a desk channel):
//!   indexed as it is.
//! - The bot can run a conversation here (someone gave it the power, as a direct chat made with
//!   the `trusted_private_chat` preset does): opened here, assigned, greeted.
//! - Otherwise the room is someone else's (a customer made it and holds 100): the bot never
//!   asks anyone for power. It opens a desk-owned conversation room for the inviter, invites
//!   them to it as a direct chat, says so in the original room and leaves it.
//!
//! Replays: only the newest invite is acted on, while it is pending or led to the bot's current
//! join (a crash between the join and the end leaves exactly that); every send carries a txn id
//! derived from the invite's position; the desk room's id is recorded under the original room
//! before the room is made, so a replay finds it instead of opening a second one.

use ruma::{RoomId, UserId, events::room::member::MembershipState};
use serde_json::json;

use crate::{
    error::Result,
    events::Pdu,
    rooms::{MemberProfile, MembershipChange, membership_of},
    storage::Key,
    support::{
        Conversation, Desk,
        actions::{self, NewConversation},
        actor::Actor,
        owned_rooms,
        say::{self, say},
    },
};

/// Handles the invite at `pos`; returns whether the queue should be looked at.
pub(crate) async fn invited(desk: &Desk<'_>, pdu: &Pdu, pos: u64) -> Result<bool> {
    let bot = desk.bot();
    let room = desk.rooms.room(&pdu.room_id)?;
    let Some(member_pos) = desk
        .rooms
        .state_pos(room.short, "m.room.member", bot.as_str())?
    else {
        return Ok(false);
    };
    let member = desk.rooms.event(member_pos)?;
    let pending = match membership_of(&member.pdu) {
        Some(MembershipState::Invite) if member_pos == pos => {
            let profile = MemberProfile {
                displayname: Some(desk.config().bot_displayname.clone()),
                avatar_url: None,
            };
            // Not waited for on its own: the next write's disk sync covers it too.
            desk.rooms
                .join_unsynced(&pdu.room_id, bot, profile, None, &[])
                .await?
        }
        // A replay of the invite that led to the current join: finish what it started.
        Some(MembershipState::Join) if member.stored.prev_state == Some(pos) => None,
        // Handled, withdrawn, or superseded by a newer invite.
        _ => return Ok(false),
    };
    let handled = handle(desk, pdu, pos).await;
    if let Some((room, pending)) = pending {
        desk.rooms.publish(&room, pending).await?;
    }
    handled
}

async fn handle(desk: &Desk<'_>, pdu: &Pdu, pos: u64) -> Result<bool> {
    let room_id = &pdu.room_id;
    let actor = Actor::bot(pos);
    if let Some((content, state_pos)) = actions::current(desk, room_id)? {
        // The desk's conversation from the start: a bridge portal or a web chat.
        let event_id = desk.rooms.event(state_pos)?.pdu.event_id.clone();
        let held = desk.support.changes.lock().await;
        actions::index_state(desk, &held, room_id, &event_id, &content).await?;
    } else if owned_rooms::can_manage(desk, room_id)? {
        let content = Conversation {
            contact: actions::contact_of(desk, &pdu.sender)?,
            ..Default::default()
        };
        if let Some(agent) = actions::open(desk, room_id, content, &actor).await? {
            actions::bring_in_agent(desk, room_id, &agent, &actor).await?;
        }
    } else {
        return open_desk_room(desk, pdu, &actor).await;
    }
    greet(desk, room_id, &actor).await?;
    Ok(true)
}

async fn greet(desk: &Desk<'_>, room_id: &RoomId, actor: &Actor<'_>) -> Result<()> {
    let greeting = &desk.config().greeting;
    if !greeting.is_empty() {
        say(desk, room_id, greeting, false, &[], actor.txn("greet")).await?;
    }
    Ok(())
}

/// Where the desk room opened for a room is recorded.
fn intent_key(origin: &RoomId) -> Vec<u8> {
    Key::new().str("desk_room").str(origin.as_str()).into_vec()
}

/// The inviter's room is theirs: open a desk-owned conversation for them, point them to it,
/// and leave.
async fn open_desk_room(desk: &Desk<'_>, pdu: &Pdu, actor: &Actor<'_>) -> Result<bool> {
    let origin = &pdu.room_id;
    let customer = &pdu.sender;
    let key = intent_key(origin);
    let first_time = owned_rooms::recorded_room(desk, &key)?.is_none();
    if first_time
        && !desk.support.is_staff(customer)
        && desk
            .support
            .customer_creations
            .check(customer.as_str())
            .is_err()
    {
        let text = "You opened several conversations with us a moment ago: please go on in \
                    those, or invite me again a little later.";
        say(desk, origin, text, false, &[], actor.txn("too-many")).await?;
        leave(desk, origin).await?;
        return Ok(false);
    }
    let new = NewConversation {
        content: Conversation {
            contact: actions::contact_of(desk, customer)?,
            ..Default::default()
        },
        name: Some(desk.config().bot_displayname.clone()),
        participants: vec![customer.clone()],
        is_direct: true,
        intent: Some(key),
    };
    let (room_id, content) = actions::create_conversation(desk, new, actor).await?;
    bring_in_customer(desk, &room_id, customer).await?;
    if let Some(agent) = &content.assignee {
        actions::bring_in_agent(desk, &room_id, agent, actor).await?;
    }
    greet(desk, &room_id, actor).await?;
    point_to(desk, origin, &room_id, actor).await?;
    leave(desk, origin).await?;
    Ok(content.assignee.is_none())
}

/// The customer is invited to their desk room (again, if they left it).
async fn bring_in_customer(desk: &Desk<'_>, room_id: &RoomId, customer: &UserId) -> Result<()> {
    let room = desk.rooms.room(room_id)?;
    if matches!(
        desk.rooms.membership(&room, customer)?,
        Some(MembershipState::Join | MembershipState::Invite | MembershipState::Ban)
    ) {
        return Ok(());
    }
    let change = MembershipChange {
        sender: desk.bot(),
        target: customer,
        membership: MembershipState::Invite,
        profile: MemberProfile::default(),
        reason: None,
        is_direct: Some(true),
    };
    desk.rooms.change_membership(room_id, change).await?;
    Ok(())
}

/// Tells the inviter where their conversation is.
async fn point_to(
    desk: &Desk<'_>,
    origin: &RoomId,
    room_id: &RoomId,
    actor: &Actor<'_>,
) -> Result<()> {
    let link = format!("https://matrix.to/#/{room_id}");
    let why = "I cannot run a support conversation in this room: the desk keeps its \
               conversations in rooms of its own (here you hold the power, or the room is \
               encrypted, which I cannot read).";
    let text = format!(
        "{why} I opened one with you: {link} (accept my invitation there). I am leaving this \
         room."
    );
    let mut content = say::message(&text, false);
    content["format"] = json!("org.matrix.custom.html");
    content["formatted_body"] = json!(format!(
        "{why} I opened <a href=\"{link}\">one with you</a> (accept my invitation there). I am \
         leaving this room."
    ));
    content["io.charla.conversation_room"] = json!(room_id);
    say::say_content(desk, origin, &content, actor.txn("moved")).await?;
    Ok(())
}

async fn leave(desk: &Desk<'_>, room_id: &RoomId) -> Result<()> {
    let bot = desk.bot();
    let change = MembershipChange {
        sender: bot,
        target: bot,
        membership: MembershipState::Leave,
        profile: MemberProfile::default(),
        reason: None,
        is_direct: None,
    };
    desk.rooms.change_membership(room_id, change).await?;
    Ok(())
}
