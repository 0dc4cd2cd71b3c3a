//! Who asks the desk for a change: the bot on its own, staff through a chat command, or a
//! caller of the support API. It decides whether the change is audited and how the bot's sends
//! for it are made idempotent.
//!
//! Every send the bot makes because of an event of the stream carries a transaction id derived
//! from that event's position (and a tag telling the sends of one event apart), recorded under
//! one device name: a replay of the event after a crash repeats the transaction, and the room
//! service answers it with the first event instead of sending again.

use ruma::UserId;
use serde::{Deserialize, Serialize};

use crate::rooms::Txn;

/// The device name the bot's idempotent sends are recorded under.
const BOT_DEVICE: &str = "io.charla.support";

/// The transaction of the bot's send tagged `tag` for the event at stream position `cause`.
pub(crate) fn bot_txn(cause: u64, tag: &str) -> Txn {
    Txn::new(BOT_DEVICE, format!("{cause}:{tag}"))
}

/// Who asks for a change and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Actor<'a> {
    /// The bot on its own: because of the event at stream position `cause`, or of none (the
    /// queue being drained). Not audited: the room's history shows it.
    Bot { cause: Option<u64> },
    /// Staff through a chat command, the event at stream position `pos`.
    Command { user: &'a UserId, pos: u64 },
    /// A caller of the support API.
    Api { user: &'a UserId },
    /// A server administrator through the admin API: an admin's account, or (`token`) the
    /// holder of `admin.token`, who has none and is recorded as the bot it acts through.
    Admin { user: &'a UserId, token: bool },
    /// A web chat customer through `/api/chat` (their session, their messages).
    Customer { user: &'a UserId },
}

/// How an audited change was asked for: recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Via {
    Api,
    Command,
    /// The admin API, by an administrator's account.
    Admin,
    /// The admin API, by the holder of `admin.token` (the operator at the server's machine).
    AdminToken,
    /// The web chat API, by the customer.
    Webchat,
}

impl<'a> Actor<'a> {
    /// The bot, acting on the event at `pos`.
    pub(crate) fn bot(pos: u64) -> Self {
        Actor::Bot { cause: Some(pos) }
    }

    /// The txn id of one of the sends this actor's request makes, `tag` telling them apart;
    /// `None` when nothing can repeat the request (the API, a drain of the queue).
    pub(crate) fn txn(&self, tag: &str) -> Option<Txn> {
        match *self {
            Actor::Bot { cause: Some(pos) } | Actor::Command { pos, .. } => Some(bot_txn(pos, tag)),
            Actor::Bot { cause: None }
            | Actor::Api { .. }
            | Actor::Admin { .. }
            | Actor::Customer { .. } => None,
        }
    }

    /// Who asked and how, for the audit log; `None` for the bot, which is not audited.
    pub(crate) fn audited(&self) -> Option<(&'a UserId, Via)> {
        match *self {
            Actor::Bot { .. } => None,
            Actor::Command { user, .. } => Some((user, Via::Command)),
            Actor::Api { user } => Some((user, Via::Api)),
            Actor::Customer { user } => Some((user, Via::Webchat)),
            Actor::Admin { user, token } => {
                Some((user, if token { Via::AdminToken } else { Via::Admin }))
            }
        }
    }

    /// On whose behalf: the asking user, or `bot` for the bot's own changes.
    pub(crate) fn user(&self, bot: &'a UserId) -> &'a UserId {
        self.audited().map_or(bot, |(user, _)| user)
    }
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;

    #[test]
    fn sends_for_an_event_are_keyed_by_its_position_and_only_people_are_audited() {
        let ana = user_id!("@ana:x");
        let bot = user_id!("@support:x");
        let txn = Actor::bot(7).txn("greet").unwrap();
        assert_eq!(
            (txn.device.as_str(), txn.txn_id.as_str()),
            (BOT_DEVICE, "7:greet")
        );
        let command = Actor::Command { user: ana, pos: 9 };
        assert_eq!(command.txn("reply").unwrap().txn_id, "9:reply");
        assert_eq!(command.audited(), Some((ana, Via::Command)));
        assert!(Actor::Api { user: ana }.txn("x").is_none());
        assert!(Actor::Bot { cause: None }.txn("x").is_none());
        assert_eq!(Actor::Api { user: ana }.audited(), Some((ana, Via::Api)));
        assert_eq!(Actor::bot(1).audited(), None);
        let operator = Actor::Admin {
            user: bot,
            token: true,
        };
        assert_eq!(operator.audited(), Some((bot, Via::AdminToken)));
        assert!(operator.txn("x").is_none());
        assert_eq!(
            serde_json::to_value(Via::AdminToken).unwrap(),
            "admin_token"
        );
        assert_eq!(Actor::bot(1).user(bot), bot);
        assert_eq!(Actor::Api { user: ana }.user(bot), ana);
        assert_eq!(serde_json::to_value(Via::Command).unwrap(), "command");
        assert_eq!(
            serde_json::from_value::<Via>("api".into()).unwrap(),
            Via::Api
        );
    }
}
