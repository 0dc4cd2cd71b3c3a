//! Sync tokens: a position in each stream a sync follows.
//!
//! Most of what a client syncs has a place in the global, durable stream. Two things do not:
//! typing and presence live in memory and are numbered by the *ephemeral* stream, which starts
//! from the wall clock at boot so that its numbers keep growing across restarts; and to-device
//! messages are delivered at most a batch at a time, so the token remembers the last one the
//! device was given (the next sync with that token acknowledges, and deletes, them).
//!
//! Tokens look like `s<pos>_<ephemeral>_<to_device>`. A bare `s<pos>` or `<pos>` (pagination
//! tokens, older clients) parses with the other parts at zero.

use std::fmt;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncToken {
    /// The global stream: room events, account data, receipts, device-list changes.
    pub(crate) pos: u64,
    /// The ephemeral stream: typing notifications and presence.
    pub(crate) ephemeral: u64,
    /// The global position of the last to-device message delivered with this token.
    pub(crate) to_device: u64,
}

impl SyncToken {
    pub(crate) fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid token {token:?}"));
        let mut parts = token.strip_prefix('s').unwrap_or(token).split('_');
        let mut next = |required: bool| -> Result<u64> {
            match parts.next() {
                Some(p) => p.parse().map_err(|_| invalid()),
                None if required => Err(invalid()),
                None => Ok(0),
            }
        };
        let token = SyncToken {
            pos: next(true)?,
            ephemeral: next(false)?,
            to_device: next(false)?,
        };
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(token)
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}_{}", self.pos, self.ephemeral, self.to_device)
    }
}

/// A pagination token: a global position.
pub(crate) fn format_token(pos: u64) -> String {
    format!("s{pos}")
}

/// Parses a pagination token. Sync tokens are accepted too (the spec lets `/messages` start
/// from a sync's `next_batch`); only their global position counts.
pub(crate) fn parse_token(token: &str) -> Result<u64> {
    SyncToken::parse(token).map(|t| t.pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = SyncToken {
            pos: 42,
            ephemeral: 1_700_000_000_000,
            to_device: 40,
        };
        assert_eq!(SyncToken::parse(&t.to_string()).unwrap(), t);
        assert_eq!(parse_token(&format_token(42)).unwrap(), 42);
        assert_eq!(parse_token("17").unwrap(), 17);
        assert_eq!(parse_token("s9_3_1").unwrap(), 9);
        assert_eq!(
            SyncToken::parse("s5").unwrap(),
            SyncToken {
                pos: 5,
                ..Default::default()
            }
        );
        for bad in ["nope", "s", "s1_x", "s1_2_3_4", ""] {
            assert_eq!(
                SyncToken::parse(bad).unwrap_err().errcode(),
                "M_INVALID_PARAM",
                "{bad}"
            );
        }
    }
}
