//! The web chat channel: customers on the business's website talk to support through the
//! widget, over `/api/chat` (the seed "Backend Requirements: ChatSupport", `docs/webchat.md`)
//! and its WebSocket.
//!
//! # Model
//!
//! A session is a support conversation (channel `web`) in a desk-owned room, opened the way the
//! support API opens one (`support::actions::create_conversation`): the bot creates the room,
//! greets, and the queue assigns it; agents answer from any Matrix client. The customer is a
//! Matrix user of the server's own (`@web_<sub>`, no password: only this API acts as it), so
//! their messages are ordinary events the bot, pushers and every client see.
//!
//! - [`jwt`]: who calls (the website's token).
//! - [`sessions`]: the sessions' records and indexes.
//! - [`messages`]: what the customer sees of the room.
//! - [`service`]: the contract's operations.
//! - [`feed`]: the stream consumer that turns the rooms' events into session status changes
//!   and socket frames; [`hub`]: the open sockets it hands them to.

pub(crate) mod feed;
pub(crate) mod hub;
pub(crate) mod jwt;
pub(crate) mod messages;
pub(crate) mod service;
pub(crate) mod sessions;
pub(crate) mod widget;

use std::sync::atomic::AtomicU64;

use sha2::{Digest, Sha256};

use crate::{
    config::WebchatConfig,
    ephemeral::{ReceiptService, TypingService},
    error::Error,
    ratelimit::RateLimiter,
    storage::Store,
    stream::{Notifier, Stream},
    support::Desk,
};

pub(crate) use jwt::Customer;

/// Requests one customer may make per second, sustained, and at once: a page load makes three
/// or four, a widget that reconnects a few more.
const REQUESTS_PER_SECOND: f64 = 20.0;
const REQUEST_BURST: u32 = 60;

/// The localpart prefix of web chat customers' Matrix users: reserved, nobody registers it.
pub(crate) const CUSTOMER_PREFIX: &str = "web_";

/// Whether a localpart is one of web chat customers' (refused to `/register`).
pub(crate) fn is_customer_localpart(localpart: &str) -> bool {
    localpart.starts_with(CUSTOMER_PREFIX)
}

/// The localpart of the customer `sub`'s Matrix user: `web_<sub>` when `sub` is made of what
/// a localpart may hold (and no `=`), else `web_=` and a hash of it, so two customers never
/// share a user.
pub(crate) fn customer_localpart(sub: &str) -> String {
    let plain = sub.len() <= 200
        && sub.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if plain {
        format!("{CUSTOMER_PREFIX}{sub}")
    } else {
        let digest = Sha256::digest(sub.as_bytes());
        format!("{CUSTOMER_PREFIX}={}", hex::encode(&digest[..16]))
    }
}

/// The web chat's own state, built once at start when `[webchat] enabled`.
pub(crate) struct WebChat {
    pub(crate) verifier: jwt::Verifier,
    pub(crate) sessions: sessions::Sessions,
    /// `messages_per_minute` per customer.
    pub(crate) messages: RateLimiter,
    /// `sessions_per_hour` per customer.
    pub(crate) creations: RateLimiter,
    /// Every request of a customer: reads cost a walk of their room, so they are bounded too.
    pub(crate) requests: RateLimiter,
    pub(crate) hub: hub::Hub,
    /// Origins allowed to use the API from a browser, normalized.
    pub(crate) origins: Vec<String>,
    /// How far the feed has handed frames to the sockets (a stream position): a socket that
    /// resumes reads the store up to here and takes the hub's frames after it.
    pub(crate) feed_pos: AtomicU64,
}

/// What the web chat's background work runs on: the composition root implements it, so the
/// feed never sees the rest of the server.
pub(crate) trait ChatServices: Send + Sync + 'static {
    /// The web chat's view of the server; `None` when `[webchat]` is off.
    fn chat(&self) -> Option<Chat<'_>>;
}

impl WebChat {
    pub(crate) fn open(config: &WebchatConfig, store: Store) -> Result<Option<Self>, Error> {
        if !config.enabled {
            return Ok(None);
        }
        let verifier = jwt::Verifier::new(config).map_err(Error::internal)?;
        let origins = config
            .allowed_origins
            .iter()
            .filter_map(|o| crate::config::webchat::normalized_origin(o))
            .collect();
        Ok(Some(WebChat {
            verifier,
            sessions: sessions::Sessions::new(store),
            messages: RateLimiter::new(
                f64::from(config.messages_per_minute) / 60.0,
                config.messages_per_minute,
            ),
            creations: RateLimiter::new(
                f64::from(config.sessions_per_hour) / 3600.0,
                config.sessions_per_hour,
            ),
            requests: RateLimiter::new(REQUESTS_PER_SECOND, REQUEST_BURST),
            hub: hub::Hub::new(config.sockets_per_customer, config.max_sockets),
            origins,
            feed_pos: AtomicU64::new(0),
        }))
    }

    /// Whether a browser page of `origin` may use the API. The server's own pages (the demo
    /// widget) always may.
    pub(crate) fn origin_allowed(&self, origin: &str, own: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        own.is_some_and(|own| own.eq_ignore_ascii_case(&origin)) || self.origins.contains(&origin)
    }
}

/// What the web chat's operations use: the desk (rooms, users, the support service), the
/// receipts and typing of the rooms, and the web chat's own state.
#[derive(Clone, Copy)]
pub(crate) struct Chat<'a> {
    pub(crate) desk: Desk<'a>,
    pub(crate) receipts: &'a ReceiptService,
    pub(crate) typing: &'a TypingService,
    pub(crate) stream: &'a Stream,
    pub(crate) notifier: &'a Notifier,
    pub(crate) web: &'a WebChat,
}

/// Why a web chat operation was refused: the seed's error cases.
#[derive(Debug)]
pub(crate) enum ChatError {
    /// 400: `field` is wrong, and why (the seed's `errors` map).
    Invalid {
        field: &'static str,
        message: String,
    },
    /// 401: no token, or one that does not verify.
    Unauthorized,
    /// 403: another customer's session.
    Forbidden,
    /// 403: a browser page of an origin that is not allowed.
    OriginRefused,
    /// 404: no such session (or none open to write to).
    NotFound,
    /// 409: a session is open already.
    Conflict,
    /// 413: a body over the API's bound.
    TooLarge,
    /// 429: too many, retry after this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// 500: logged, never shown.
    Internal(Error),
}

impl From<Error> for ChatError {
    fn from(e: Error) -> Self {
        ChatError::Internal(e)
    }
}

impl From<crate::storage::StorageError> for ChatError {
    fn from(e: crate::storage::StorageError) -> Self {
        ChatError::Internal(e.into())
    }
}

impl ChatError {
    /// A rate limiter's refusal, in whole seconds (`Retry-After` has no finer unit).
    pub(crate) fn limited(e: &Error) -> ChatError {
        let ms = e.retry_after_ms().unwrap_or(1000);
        ChatError::RateLimited {
            retry_after_secs: ms.div_ceil(1000).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_get_distinct_reserved_localparts() {
        assert_eq!(customer_localpart("cust-42"), "web_cust-42");
        let hashed = customer_localpart("Ana@Example.com");
        assert!(hashed.starts_with("web_="));
        assert_ne!(hashed, customer_localpart("ana@example.com"));
        // `=` would let a plain id look like a hashed one.
        assert!(
            customer_localpart("=abc").starts_with("web_=")
                && customer_localpart("=abc").len() > 10
        );
        assert!(is_customer_localpart(&hashed));
        assert!(!is_customer_localpart("webster"));
    }
}
