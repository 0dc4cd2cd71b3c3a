//! Agent commands in a conversation room (`!assign`, `!close`, `!ticket`, …).
//!
//! Commands start with `!`, so the WhatsApp bridge never forwards them; the bot's answers carry
//! `io.charla.internal` for the same reason. Only agents and admins may use them; anyone else
//! gets a refusal, also internal.

use ruma::{RoomId, UserId};
use serde_json::json;

use ruma::events::TimelineEventType;

use super::faq;
use crate::{
    error::{Error, Result},
    events::{EventTemplate, Pdu},
    rooms::Txn,
    services::Services,
    support::{
        actions::{self, Actor},
        conversation::{Priority, Status, valid_label, valid_language},
        escalation, notes,
    },
};

const COMMANDS: &[&str] = &[
    "assign", "unassign", "status", "close", "reopen", "label", "priority", "language", "ticket",
    "template", "note", "suggest", "help",
];

const HELP: &str = "Commands: !assign @user · !unassign · !status open|pending|closed · !close · \
!reopen · !label add|remove LABEL · !priority low|medium|high|urgent · !language es|en|… · \
!ticket TITLE · !template NAME · !note (the staff-only notes room) · !suggest · !help";

/// Whether a message is one of the bot's commands.
pub fn is_command(body: &str) -> bool {
    parse(body).is_some_and(|(name, _)| COMMANDS.contains(&name))
}

fn parse(body: &str) -> Option<(&str, &str)> {
    let rest = body.strip_prefix('!')?;
    let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    Some((name, args.trim()))
}

fn txn(pos: u64, tag: &str) -> Option<Txn> {
    Some(Txn {
        device: "io.charla.support".into(),
        txn_id: format!("{pos}:{tag}").into(),
    })
}

/// Answers someone who may not use commands.
pub async fn refuse(s: &Services, room_id: &RoomId, pos: u64, sender: &UserId) -> Result<()> {
    actions::say(
        s,
        room_id,
        &format!("Sorry {sender}, only support agents can use commands."),
        true,
        &[],
        txn(pos, "refused"),
    )
    .await
    .map(drop)
}

/// Runs a command from an agent or admin; returns whether the queue should be looked at.
pub async fn run(s: &Services, pdu: &Pdu, pos: u64, body: &str) -> Result<bool> {
    let room_id = &pdu.room_id;
    let Some((name, args)) = parse(body).filter(|(n, _)| COMMANDS.contains(n)) else {
        let reply = format!("Unknown command. {HELP}");
        actions::say(s, room_id, &reply, true, &[], txn(pos, "reply")).await?;
        return Ok(false);
    };
    let actor = Actor {
        user: &pdu.sender,
        via: "command",
        txn: Some(pos.to_string()),
    };
    let outcome = execute(s, pdu, &actor, name, args).await;
    let (reply, drain) = match outcome {
        Ok(Some((reply, drain))) => (reply, drain),
        Ok(None) => return Ok(false),
        Err(Error::Matrix { message, .. }) => (format!("!{name}: {message}"), false),
        Err(e) => return Err(e),
    };
    actions::say(s, room_id, &reply, true, &[], txn(pos, "reply")).await?;
    Ok(drain)
}

/// The reply (and whether to drain the queue), or `None` when the command answered itself.
async fn execute(
    s: &Services,
    pdu: &Pdu,
    actor: &Actor<'_>,
    name: &str,
    args: &str,
) -> Result<Option<(String, bool)>> {
    let room_id = &pdu.room_id;
    let pos = actor.txn.clone().unwrap_or_default();
    let change = |action: &'static str| (action, json!({ "args": args }));
    let reply = match name {
        "help" => (HELP.to_owned(), false),
        "assign" => {
            let user = UserId::parse(args)
                .map_err(|_| Error::invalid_param("usage: !assign @user:server"))?;
            actions::assign(s, room_id, Some(&user), actor).await?;
            (format!("Assigned to {user}."), false)
        }
        "unassign" => {
            actions::assign(s, room_id, None, actor).await?;
            ("Unassigned: back in the queue.".to_owned(), true)
        }
        "status" | "close" | "reopen" => {
            let status = match name {
                "close" => Status::Closed,
                "reopen" => Status::Open,
                _ => Status::parse(args)
                    .ok_or_else(|| Error::invalid_param("usage: !status open|pending|closed"))?,
            };
            let (action, details) = change("conversation.status");
            actions::update(s, room_id, actor, action, details, |c| {
                actions::set_status(c, status);
                Ok(())
            })
            .await?;
            (format!("Status: {}.", status.as_str()), true)
        }
        "label" => {
            let (op, label) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            let label = valid_label(label)
                .ok_or_else(|| Error::invalid_param("usage: !label add|remove LABEL"))?;
            let add = match op {
                "add" => true,
                "remove" => false,
                _ => return Err(Error::invalid_param("usage: !label add|remove LABEL")),
            };
            let (action, details) = change("conversation.labels");
            let new = actions::update(s, room_id, actor, action, details, |c| {
                c.labels.retain(|l| *l != label);
                if add {
                    c.labels.push(label.clone());
                }
                Ok(())
            })
            .await?;
            (format!("Labels: {}.", new.labels.join(", ")), false)
        }
        "priority" => {
            let p = Priority::parse(args)
                .ok_or_else(|| Error::invalid_param("usage: !priority low|medium|high|urgent"))?;
            let (action, details) = change("conversation.priority");
            actions::update(s, room_id, actor, action, details, |c| {
                c.priority = p;
                Ok(())
            })
            .await?;
            (format!("Priority: {}.", p.as_str()), false)
        }
        "language" => {
            let language = valid_language(args)
                .ok_or_else(|| Error::invalid_param("usage: !language TAG (es, en, pt-BR…)"))?;
            let (action, details) = change("conversation.language");
            actions::update(s, room_id, actor, action, details, |c| {
                c.language = Some(language.clone());
                Ok(())
            })
            .await?;
            (format!("Language: {language}."), false)
        }
        "ticket" => {
            if args.is_empty() {
                return Err(Error::invalid_param("usage: !ticket TITLE"));
            }
            let source = pdu.event_id.to_string();
            escalation::create_ticket(s, room_id, args, actor, Some(&source)).await?;
            // create_ticket announces the ticket itself.
            return Ok(None);
        }
        "template" => {
            let text = render_template(s, room_id, &pdu.sender, args)?;
            actions::say(s, room_id, &text, false, &[], txn_of(&pos, "template")).await?;
            return Ok(None);
        }
        "note" => {
            note(s, pdu, actor, args).await?;
            return Ok(None);
        }
        "suggest" => (suggestions(s, room_id)?, false),
        _ => unreachable!("filtered by COMMANDS"),
    };
    Ok(Some(reply))
}

/// `!note`: links the conversation's notes room (creating it on first use) and invites the
/// agent to it, where notes are written; the customer is in this room, so no note is kept here.
/// `!note TEXT` is refused before it is sent on this server (`support::policy`); one that came
/// some other way is moved to the notes room and taken out of the conversation.
async fn note(s: &Services, pdu: &Pdu, actor: &Actor<'_>, text: &str) -> Result<()> {
    let room_id = &pdu.room_id;
    let pos = actor.txn.clone().unwrap_or_default();
    let pos = pos.as_str();
    if !text.is_empty() {
        notes::write(s, room_id, actor, text).await?;
        let redaction = EventTemplate::message(
            TimelineEventType::RoomRedaction,
            serde_json::value::to_raw_value(&json!({
                "redacts": pdu.event_id,
                "reason": "A private note: moved to the notes room",
            }))
            .map_err(|e| Error::internal(e.to_string()))?,
        );
        let redacted = s
            .rooms
            .send(
                room_id,
                &s.support.bot,
                redaction,
                txn_of(pos, "note-redact"),
            )
            .await;
        if let Err(e) = redacted {
            tracing::warn!(room = %room_id, error = %e, "support bot: a note left in a conversation");
        }
    }
    let notes_room = notes::room(s, room_id).await?;
    notes::invite(s, &notes_room, &pdu.sender).await?;
    let link = format!("https://matrix.to/#/{notes_room}");
    let mut content = actions::message(
        &format!(
            "Private notes on this conversation are kept in a staff-only room, never here (the \
             customer reads this room): {link}. You are invited; write your notes there."
        ),
        true,
    );
    content["io.charla.notes_room"] = json!(notes_room);
    actions::say_content(s, room_id, &content, txn_of(pos, "reply")).await?;
    Ok(())
}

fn txn_of(pos: &str, tag: &str) -> Option<Txn> {
    Some(Txn {
        device: "io.charla.support".into(),
        txn_id: format!("{pos}:{tag}").into(),
    })
}

/// `!suggest`: the best FAQ answers for the customer's last message, for agents only.
fn suggestions(s: &Services, room_id: &RoomId) -> Result<String> {
    let last = s
        .support
        .index
        .get(room_id.as_str())?
        .and_then(|r| r.last_customer_text);
    let Some(last) = last else {
        return Ok("No customer message to suggest answers for.".into());
    };
    let ranked = faq::ranked(&s.config.support.faq, &last, 0.2);
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
pub fn render_template(
    s: &Services,
    room_id: &RoomId,
    agent: &UserId,
    name: &str,
) -> Result<String> {
    let template = s
        .config
        .support
        .templates
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::not_found(format!("no template named {name:?}")))?;
    let contact = actions::current(s, room_id)?
        .and_then(|(c, _)| c.contact.name)
        .unwrap_or_default();
    let agent_name = s
        .users
        .get(agent)?
        .and_then(|r| r.displayname)
        .unwrap_or_else(|| agent.localpart().to_owned());
    let filter = crate::support::tickets::TicketFilter {
        room_id: Some(room_id.to_string()),
        ..Default::default()
    };
    let ticket = s
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
