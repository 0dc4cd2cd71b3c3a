//! Agent commands in a conversation room (`!assign`, `!close`, `!ticket`, …): running them.
//! What they are and how they parse: [`super::command`].
//!
//! Commands start with `!`, so the WhatsApp bridge never forwards them; the bot's answers carry
//! `io.charla.internal` for the same reason. Only agents and admins may use them; anyone else
//! gets a refusal, also internal.

use ruma::{RoomId, UserId, events::TimelineEventType};
use serde_json::json;

use super::{
    command::{Call, Command, help},
    faq,
};
use crate::{
    error::{Error, Result},
    events::{EventTemplate, Pdu},
    support::{
        Conversation, Desk, actions,
        actor::Actor,
        escalation, notes,
        say::{self, say},
        tickets::TicketFilter,
    },
};

/// Whether a message is one of the bot's commands.
pub(crate) fn is_command(body: &str) -> bool {
    Call::parse(body).is_some()
}

/// Answers someone who may not use commands.
pub(crate) async fn refuse(
    desk: &Desk<'_>,
    room_id: &RoomId,
    pos: u64,
    sender: &UserId,
) -> Result<()> {
    let text = format!("Sorry {sender}, only support agents can use commands.");
    let txn = Actor::bot(pos).txn("refused");
    say(desk, room_id, &text, true, &[], txn).await.map(drop)
}

/// What a command answers, and whether the queue should be looked at after it.
type Reply = (String, bool);

/// Runs a command from an agent or admin; returns whether the queue should be looked at.
pub(crate) async fn run(desk: &Desk<'_>, pdu: &Pdu, pos: u64, body: &str) -> Result<bool> {
    let actor = Actor::Command {
        user: &pdu.sender,
        pos,
    };
    let Some(call) = Call::parse(body) else {
        let text = format!("Unknown command. {}", help());
        reply(desk, &pdu.room_id, &actor, &text).await?;
        return Ok(false);
    };
    let outcome = match call.command {
        Ok(command) => execute(desk, pdu, &actor, command, call.args).await,
        Err(usage) => Err(Error::invalid_param(usage.to_string())),
    };
    let (text, drain) = match outcome {
        Ok(Some(answer)) => answer,
        Ok(None) => return Ok(false),
        Err(Error::Matrix { message, .. }) => {
            (format!("!{}: {message}", call.name.as_str()), false)
        }
        Err(e) => return Err(e),
    };
    reply(desk, &pdu.room_id, &actor, &text).await?;
    Ok(drain)
}

/// The bot's answer to a command, for agents only.
async fn reply(desk: &Desk<'_>, room_id: &RoomId, actor: &Actor<'_>, text: &str) -> Result<()> {
    say(desk, room_id, text, true, &[], actor.txn("reply"))
        .await
        .map(drop)
}

/// Does what the command asks. Returns the answer, or `None` when the command answered
/// itself (a ticket announced, a template or a notes link sent).
async fn execute(
    desk: &Desk<'_>,
    pdu: &Pdu,
    actor: &Actor<'_>,
    command: Command,
    args: &str,
) -> Result<Option<Reply>> {
    let room_id = &pdu.room_id;
    Ok(Some(match command {
        Command::Help => (help(), false),
        Command::Assign(user) => {
            actions::assign(desk, room_id, Some(&user), actor).await?;
            (format!("Assigned to {user}."), false)
        }
        Command::Unassign => {
            actions::assign(desk, room_id, None, actor).await?;
            ("Unassigned: back in the queue.".to_owned(), true)
        }
        Command::Status(status) => {
            let edit = |c: &mut Conversation| actions::set_status(c, status);
            change(desk, room_id, actor, args, "conversation.status", edit).await?;
            (format!("Status: {}.", status.as_str()), true)
        }
        Command::Label { add, label } => {
            let edit = |c: &mut Conversation| edit_labels(c, add, label);
            let new = change(desk, room_id, actor, args, "conversation.labels", edit).await?;
            (format!("Labels: {}.", new.labels.join(", ")), false)
        }
        Command::Priority(priority) => {
            let edit = |c: &mut Conversation| c.priority = priority;
            change(desk, room_id, actor, args, "conversation.priority", edit).await?;
            (format!("Priority: {}.", priority.as_str()), false)
        }
        Command::Language(tag) => {
            let answer = format!("Language: {tag}.");
            let edit = |c: &mut Conversation| c.language = Some(tag);
            change(desk, room_id, actor, args, "conversation.language", edit).await?;
            (answer, false)
        }
        Command::Ticket(title) => {
            let source = Some(&*pdu.event_id);
            // create_ticket announces the ticket itself.
            escalation::create_ticket(desk, room_id, &title, actor, source).await?;
            return Ok(None);
        }
        Command::Template(name) => {
            let text = render_template(desk, room_id, &pdu.sender, &name)?;
            say(desk, room_id, &text, false, &[], actor.txn("template")).await?;
            return Ok(None);
        }
        Command::Note(text) => {
            note(desk, pdu, actor, &text).await?;
            return Ok(None);
        }
        Command::Suggest => (suggestions(desk, room_id)?, false),
    }))
}

/// A change of the conversation, audited with the command's arguments as written.
async fn change(
    desk: &Desk<'_>,
    room_id: &RoomId,
    actor: &Actor<'_>,
    args: &str,
    action: &str,
    edit: impl FnOnce(&mut Conversation),
) -> Result<Conversation> {
    let details = json!({ "args": args });
    actions::update(desk, room_id, actor, action, details, |c| {
        edit(c);
        Ok(())
    })
    .await
}

/// `!label add|remove LABEL`: an added label goes last.
fn edit_labels(c: &mut Conversation, add: bool, label: String) {
    c.labels.retain(|l| *l != label);
    if add {
        c.labels.push(label);
    }
}

/// `!note`: links the conversation's notes room (creating it on first use) and invites the
/// agent to it, where notes are written; the customer is in this room, so no note is kept here.
/// `!note TEXT` is refused before it is sent on this server (`support::policy`); one that came
/// some other way is moved to the notes room and taken out of the conversation.
async fn note(desk: &Desk<'_>, pdu: &Pdu, actor: &Actor<'_>, text: &str) -> Result<()> {
    let room_id = &pdu.room_id;
    if !text.is_empty() {
        notes::write(desk, room_id, actor, text).await?;
        take_out_of_conversation(desk, pdu, actor).await;
    }
    let notes_room = notes::room(desk, room_id).await?;
    notes::invite(desk, &notes_room, &pdu.sender).await?;
    let link = format!("https://matrix.to/#/{notes_room}");
    let mut content = say::message(
        &format!(
            "Private notes on this conversation are kept in a staff-only room, never here (the \
             customer reads this room): {link}. You are invited; write your notes there."
        ),
        true,
    );
    content["io.charla.notes_room"] = json!(notes_room);
    say::say_content(desk, room_id, &content, actor.txn("reply")).await?;
    Ok(())
}

/// Redacts a note written in the conversation, now that it is in the notes room. A failure is
/// logged, not returned: the note is kept either way.
async fn take_out_of_conversation(desk: &Desk<'_>, pdu: &Pdu, actor: &Actor<'_>) {
    let content = json!({
        "redacts": pdu.event_id,
        "reason": "A private note: moved to the notes room",
    });
    let redacted = match serde_json::value::to_raw_value(&content) {
        Ok(raw) => {
            let redaction = EventTemplate::message(TimelineEventType::RoomRedaction, raw);
            let txn = actor.txn("note-redact");
            desk.rooms
                .send(&pdu.room_id, desk.bot(), redaction, txn)
                .await
                .map(drop)
        }
        Err(e) => Err(Error::internal(e.to_string())),
    };
    if let Err(e) = redacted {
        tracing::warn!(room = %pdu.room_id, error = %e, "support bot: a note left in a conversation");
    }
}

/// `!suggest`: the best FAQ answers for the customer's last message, for agents only.
fn suggestions(desk: &Desk<'_>, room_id: &RoomId) -> Result<String> {
    let last = desk
        .support
        .index
        .get(room_id)?
        .and_then(|r| r.last_customer_text);
    let Some(last) = last else {
        return Ok("No customer message to suggest answers for.".into());
    };
    let ranked = faq::ranked(&desk.config().faq, &last, 0.2);
    if ranked.is_empty() {
        return Ok("No suggestion for the customer's last message.".into());
    }
    let lines: Vec<String> = ranked
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, (e, score))| format!("{}. ({:.0}%) {}", i + 1, score * 100.0, e.answer))
        .collect();
    Ok(format!("Suggestions:\n{}", lines.join("\n")))
}

/// A canned response with `{contact.name}`, `{agent.name}` and `{ticket}` filled in.
fn render_template(
    desk: &Desk<'_>,
    room_id: &RoomId,
    agent: &UserId,
    name: &str,
) -> Result<String> {
    let template = desk
        .config()
        .templates
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::not_found(format!("no template named {name:?}")))?;
    let contact = actions::current(desk, room_id)?
        .and_then(|(c, _)| c.contact.name)
        .unwrap_or_default();
    let agent_name = desk
        .users
        .get(agent)?
        .and_then(|r| r.displayname)
        .unwrap_or_else(|| agent.localpart().to_owned());
    let filter = TicketFilter {
        room_id: Some(room_id.to_owned()),
        ..Default::default()
    };
    let ticket = desk
        .support
        .tickets
        .list(&filter, 1, None, |_| Ok(true))?
        .0
        .first()
        .map(|t| format!("#{}", t.number))
        .unwrap_or_default();
    Ok(template
        .text
        .replace("{contact.name}", &contact)
        .replace("{agent.name}", &agent_name)
        .replace("{ticket}", &ticket))
}
