//! What a failure to bring a webhook into Matrix means: who has to wait for it, whether trying
//! again can help, and what an operator has to fix.
//!
//! The webhook was acknowledged (Meta had its 200), so no failure ever drops it. The question
//! is only how far it reaches:
//!
//! - [`Failure::Unavailable`]: nothing got through (the homeserver is unreachable, answers 5xx
//!   or 429, the disk failed, WhatsApp's media servers fail). Every customer waits; the inbox
//!   retries with a doubling pause.
//! - [`Failure::Unauthorized`]: the homeserver refuses the bridge itself (401: it does not know
//!   the `as_token`). Every customer waits until the homeserver has the bridge's registration.
//! - [`Failure::Refused`]: the homeserver refuses what this customer's messages need (403:
//!   registration of the puppet, the bot or puppet not allowed in the portal; 400
//!   `M_EXCLUSIVE`: the puppet outside the registration's namespace; 404: the room is gone).
//!   An operator can fix each of these, and each concerns one customer (or the customers not
//!   yet known): their messages are held, in order, and retried; the others go on.
//! - [`Failure::Unacceptable`]: the homeserver can never accept this message as it is (413
//!   `M_TOO_LARGE`, 400 `M_BAD_JSON`, `M_NOT_JSON`, `M_INVALID_PARAM`). Held and retried a few
//!   times like a refusal (a proxy or a bug can answer 400 once), then kept aside in the
//!   dead-letter table so that it does not hold the customer's next messages for ever.

use appservice::HandlerError;

/// How far a failure reaches; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Unavailable,
    Unauthorized,
    Refused,
    Unacceptable,
}

impl Failure {
    /// The class of an error met while bridging a webhook.
    pub fn of(error: &HandlerError) -> Self {
        let Some(error) = error.downcast_ref::<appservice::Error>() else {
            // The bridge's store, or WhatsApp (a media download): nothing about the message.
            return Failure::Unavailable;
        };
        match error {
            appservice::Error::Matrix {
                status, errcode, ..
            } => match (*status, errcode.as_str()) {
                (429, _) | (500.., _) => Failure::Unavailable,
                (401, _) => Failure::Unauthorized,
                (413, _)
                | (400, "M_BAD_JSON" | "M_NOT_JSON" | "M_INVALID_PARAM" | "M_TOO_LARGE") => {
                    Failure::Unacceptable
                }
                _ => Failure::Refused,
            },
            appservice::Error::Transport(_) => Failure::Unavailable,
            // A 2xx body that is not what the endpoint returns: a proxy or a broken homeserver.
            appservice::Error::InvalidResponse(_) => Failure::Unavailable,
            // Nothing could be sent for this message (an id the homeserver can never take).
            appservice::Error::InvalidRequest(_) => Failure::Unacceptable,
        }
    }

    /// Whether every customer waits (the round is retried), not just this one.
    pub fn blocks_everyone(self) -> bool {
        matches!(self, Failure::Unavailable | Failure::Unauthorized)
    }
}

/// What an operator should do about `error`, for the log line that reports it.
pub fn hint(error: &HandlerError) -> &'static str {
    let Some(error) = error.downcast_ref::<appservice::Error>() else {
        return "the bridge's own state or WhatsApp's media servers failed: check the disk and \
                the network; retrying";
    };
    match (error.status(), error.errcode()) {
        (Some(401), _) => {
            "the homeserver does not accept the bridge's as_token: give the homeserver the \
             bridge's registration file (and restart it)"
        }
        (Some(400), Some("M_EXCLUSIVE")) => {
            "the puppet is outside the bridge's user namespace (or inside another appservice's \
             exclusive one): the registration's namespaces.users must cover @whatsapp_.* on \
             this server"
        }
        (Some(403), _) => {
            "the homeserver forbids what the bridge needs: it must let the appservice register \
             and assert its users, and the bridge bot and the customer's puppet must be in the \
             portal room with their power"
        }
        (Some(404), _) => {
            "the homeserver does not know the portal room or the endpoint: check the room was \
             not purged and the homeserver speaks the Client-Server API the bridge uses"
        }
        (Some(429), _) => {
            "the homeserver rate-limits the bridge: set rate_limited: false in its registration"
        }
        (Some(413), _) | (Some(400), _) => {
            "the homeserver cannot take this message as it is; after a few attempts it is kept \
             in the bridge's dead-letter table"
        }
        (Some(_), _) => "the homeserver is failing: check its log; retrying",
        (None, _) => "the homeserver is unreachable: check it runs at the bridge's homeserver URL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(status: u16, errcode: &str) -> HandlerError {
        Box::new(appservice::Error::Matrix {
            status,
            errcode: errcode.into(),
            message: String::new(),
            retry_after_ms: None,
        })
    }

    #[test]
    fn refusals_an_operator_can_fix_are_never_final() {
        assert_eq!(Failure::of(&matrix(403, "M_FORBIDDEN")), Failure::Refused);
        assert_eq!(Failure::of(&matrix(400, "M_EXCLUSIVE")), Failure::Refused);
        assert_eq!(Failure::of(&matrix(404, "M_NOT_FOUND")), Failure::Refused);
        assert_eq!(
            Failure::of(&matrix(401, "M_UNKNOWN_TOKEN")),
            Failure::Unauthorized
        );
        assert_eq!(Failure::of(&matrix(503, "M_UNKNOWN")), Failure::Unavailable);
        assert_eq!(
            Failure::of(&matrix(429, "M_LIMIT_EXCEEDED")),
            Failure::Unavailable
        );
        let disk: HandlerError = "disk full".into();
        assert_eq!(Failure::of(&disk), Failure::Unavailable);
        assert!(Failure::Unauthorized.blocks_everyone() && !Failure::Refused.blocks_everyone());
    }

    #[test]
    fn only_what_the_homeserver_can_never_take_is_unacceptable() {
        assert_eq!(
            Failure::of(&matrix(413, "M_TOO_LARGE")),
            Failure::Unacceptable
        );
        assert_eq!(
            Failure::of(&matrix(400, "M_BAD_JSON")),
            Failure::Unacceptable
        );
        assert!(hint(&matrix(400, "M_EXCLUSIVE")).contains("namespaces.users"));
        assert!(hint(&matrix(401, "M_UNKNOWN_TOKEN")).contains("as_token"));
    }
}
