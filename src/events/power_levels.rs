//! The parts of `m.room.power_levels` the server consults outside the auth rules: who may
//! redact others' events, who may invite or change state (the public directory, the support
//! desk), and what push rules need to know.

use ruma::{
    Int, OwnedUserId, UserId,
    events::room::power_levels::{
        RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource,
    },
    push::PushConditionPowerLevelsCtx,
    room_version_rules::AuthorizationRules,
};

use super::Pdu;
use crate::error::{Error, Result};

/// A room's power levels, read from its `m.room.power_levels` event (or the spec's defaults
/// when it has none).
#[derive(Debug, Clone)]
pub(crate) struct PowerLevels {
    content: RoomPowerLevelsEventContent,
    creator: Option<OwnedUserId>,
    has_event: bool,
    pub(crate) redact: Int,
}

impl PowerLevels {
    /// The levels a power levels event sets; `creator` is the create event's sender, who has
    /// 100 while the room has no power levels event.
    pub(crate) fn from_event(pdu: Option<&Pdu>, creator: Option<OwnedUserId>) -> Self {
        let content: RoomPowerLevelsEventContent = pdu
            .and_then(|p| serde_json::from_str(p.content.get()).ok())
            .unwrap_or_else(|| RoomPowerLevelsEventContent::new(&AuthorizationRules::V11));
        let redact = content.redact;
        PowerLevels {
            content,
            creator,
            has_event: pdu.is_some(),
            redact,
        }
    }

    pub(crate) fn user_level(&self, user: &UserId) -> Int {
        if !self.has_event {
            // Without a power levels event the creator has 100 and everyone else 0.
            return if self.creator.as_deref() == Some(user) {
                100.into()
            } else {
                0.into()
            };
        }
        self.content
            .users
            .get(user)
            .copied()
            .unwrap_or(self.content.users_default)
    }

    /// The level needed to send a state event of this type.
    pub(crate) fn state_level(&self, kind: &str) -> Int {
        self.content
            .events
            .get(&kind.into())
            .copied()
            .unwrap_or(self.content.state_default)
    }

    /// What push rules need of the power levels (`sender_notification_permission`).
    pub(crate) fn push_context(&self, rules: &AuthorizationRules) -> PushConditionPowerLevelsCtx {
        RoomPowerLevels::new(
            RoomPowerLevelsSource::Original(self.content.clone()),
            rules,
            self.creator.clone(),
        )
        .into()
    }

    pub(crate) fn invite(&self) -> Int {
        self.content.invite
    }

    /// The redaction rule room versions 3+ leave to the server ("Authorization rules": the
    /// check moved out of the auth rules when event ids lost their domain): a sender may redact
    /// their own events, and others' only with the `redact` level.
    pub(crate) fn check_redaction(
        &self,
        redaction_sender: &UserId,
        target_sender: &UserId,
    ) -> Result<()> {
        if target_sender == redaction_sender || self.user_level(redaction_sender) >= self.redact {
            Ok(())
        } else {
            Err(Error::forbidden("You may only redact your own events"))
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_event_id, user_id};

    use super::*;

    fn levels_event(content: serde_json::Value) -> Pdu {
        let json = serde_json::json!({
            "room_id": "!r:domain", "sender": "@creator:domain", "origin_server_ts": 1,
            "type": "m.room.power_levels", "state_key": "", "content": content,
            "prev_events": [], "auth_events": [], "depth": 3,
        });
        Pdu::parse(owned_event_id!("$levels"), &json.to_string()).unwrap()
    }

    #[test]
    fn without_an_event_the_creator_has_100_and_everyone_else_0() {
        let levels = PowerLevels::from_event(None, Some(user_id!("@creator:domain").to_owned()));
        assert_eq!(
            levels.user_level(user_id!("@creator:domain")),
            Int::from(100)
        );
        assert_eq!(levels.user_level(user_id!("@other:domain")), Int::from(0));
        // The spec's defaults for the rest.
        assert_eq!((levels.redact, levels.invite()), (50.into(), 0.into()));
        assert_eq!(levels.state_level("m.room.name"), Int::from(50));
    }

    #[test]
    fn an_event_sets_users_defaults_and_per_type_levels() {
        let levels = PowerLevels::from_event(
            Some(&levels_event(serde_json::json!({
                "users": { "@mod:domain": 50 }, "users_default": 10,
                "events": { "m.room.topic": 0 }, "state_default": 75, "redact": 40,
            }))),
            Some(user_id!("@creator:domain").to_owned()),
        );
        // The event replaces the creator's implicit 100.
        assert_eq!(
            levels.user_level(user_id!("@creator:domain")),
            Int::from(10)
        );
        assert_eq!(levels.user_level(user_id!("@mod:domain")), Int::from(50));
        assert_eq!(levels.state_level("m.room.topic"), Int::from(0));
        assert_eq!(levels.state_level("m.room.name"), Int::from(75));
        assert_eq!(levels.redact, Int::from(40));
    }

    #[test]
    fn redacting_others_events_needs_the_redact_level() {
        let levels = PowerLevels::from_event(
            Some(&levels_event(serde_json::json!({
                "users": { "@mod:domain": 50, "@helper:domain": 49 }, "redact": 50,
            }))),
            None,
        );
        let (alice, mod_, helper) = (
            user_id!("@alice:domain"),
            user_id!("@mod:domain"),
            user_id!("@helper:domain"),
        );
        // Own events, whatever the level.
        assert!(levels.check_redaction(alice, alice).is_ok());
        // Others' events at the redact level, not one below.
        assert!(levels.check_redaction(mod_, alice).is_ok());
        let refused = levels.check_redaction(helper, alice).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "M_FORBIDDEN: You may only redact your own events"
        );
    }
}
