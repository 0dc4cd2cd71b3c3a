//! The Server-Server API (Matrix spec v1.16, "Server-Server API"): how other homeservers reach
//! this one, how this one reaches them, and how each proves who it is.
//!
//! Built so far: the server's published keys (`keys.rs`) served on the federation listener
//! (`[federation] listen`, TLS with rustls: `server/tls.rs`) with the version endpoint and the
//! profile query; `/.well-known/matrix/server` delegation on the client listener; requests to
//! peers (`client.rs`: where a server name is reached, signed, certificates checked, blocked
//! ranges refused); request signatures both ways (`xmatrix.rs`), checked with peers' keys
//! fetched from them (`keyring.rs`). Joining, transactions and the rest of issue #23 come next.

pub(crate) mod ask;
pub(crate) mod client;
pub(crate) mod devices;
mod dns;
mod gaps;
pub(crate) mod invite;
mod join;
pub(crate) mod keyring;
pub(crate) mod keys;
mod knock;
pub(crate) mod media;
pub(crate) mod membership;
mod notary;
mod pdus;
mod queries;
pub(crate) mod sender;
pub(crate) mod transactions;
pub(crate) mod xmatrix;

use std::sync::Arc;

use axum::http::StatusCode;
use ruma::{CanonicalJsonValue, OwnedServerName, ServerName};

use crate::{config::Config, error::Error, events::SigningKey};
use client::FederationClient;
use keyring::Keyring;
use xmatrix::{Refusal, SignedRequest, XMatrix};

/// The most PDUs and EDUs one transaction carries (spec v1.16, "Transactions").
pub(crate) const MAX_PDUS: usize = 50;
pub(crate) const MAX_EDUS: usize = 100;

/// What federating needs: requests out, and peers' keys to check requests in.
pub(crate) struct Federation {
    pub(crate) client: Arc<FederationClient>,
    keyring: Keyring,
    /// This server's key: its own events are checked with it, not fetched.
    key: Arc<SigningKey>,
    server_name: OwnedServerName,
    /// Requests per origin, once authenticated.
    per_origin: crate::ratelimit::RateLimiter,
    /// Each destination's outbound state (`sender`).
    pub(crate) outbox: sender::Outbox,
    /// What each origin has in flight here (`Origins`).
    origins: Origins,
}

/// The most requests one origin may have in flight at once; more are answered `429` (its
/// rate limit bounds how fast it may ask, this how much work it may hold at once).
const MAX_IN_FLIGHT_PER_ORIGIN: usize = 8;
/// Origins tracked before the idle ones are forgotten.
const MAX_TRACKED_ORIGINS: usize = 10_000;

/// Per-origin bounds on work in flight: requests at once, and one transaction at a time (a
/// server's transactions are applied in the order they come, as Synapse does), so one slow or
/// hostile server holds at most its own share of the server.
#[derive(Default)]
struct Origins(parking_lot::Mutex<std::collections::HashMap<OwnedServerName, Arc<OriginSlot>>>);

struct OriginSlot {
    requests: Arc<tokio::sync::Semaphore>,
    transactions: tokio::sync::Mutex<()>,
}

/// An origin's request in flight: released when the request ends.
pub(crate) struct InFlight {
    _permit: tokio::sync::OwnedSemaphorePermit,
    slot: Arc<OriginSlot>,
}

impl InFlight {
    /// Waits for the origin's previous transaction to be applied.
    pub(crate) async fn transaction_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.slot.transactions.lock().await
    }
}

impl Origins {
    fn enter(&self, origin: &ServerName) -> Result<InFlight, Error> {
        let slot = {
            let mut slots = self.0.lock();
            if slots.len() >= MAX_TRACKED_ORIGINS {
                slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            slots
                .entry(origin.to_owned())
                .or_insert_with(|| {
                    Arc::new(OriginSlot {
                        requests: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_ORIGIN)),
                        transactions: tokio::sync::Mutex::new(()),
                    })
                })
                .clone()
        };
        let permit = slot
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::limit_exceeded(1_000))?;
        Ok(InFlight {
            _permit: permit,
            slot,
        })
    }
}

/// An inbound request, as its signature covers it, and where it came from.
pub(crate) struct Inbound<'a> {
    pub(crate) from: std::net::IpAddr,
    /// The `Authorization` header, if any.
    pub(crate) authorization: Option<&'a str>,
    pub(crate) method: &'a str,
    /// The path and query as received.
    pub(crate) uri: &'a str,
    pub(crate) content: Option<&'a CanonicalJsonValue>,
}

impl Federation {
    /// `None` unless `[federation] enabled`.
    pub(crate) fn open(config: &Config, key: Arc<SigningKey>) -> Result<Option<Federation>, Error> {
        if !config.federation.enabled {
            return Ok(None);
        }
        let client = FederationClient::new(&config.federation, key.clone())
            .map_err(|e| Error::internal(format!("federation: {e}")))?;
        let client = Arc::new(client);
        Ok(Some(Federation {
            keyring: Keyring::new(
                client.clone(),
                config.federation.trusted_key_servers.clone(),
            ),
            client,
            key,
            server_name: config.server_name.clone(),
            per_origin: crate::ratelimit::RateLimiter::new(
                config.federation.per_origin_per_second,
                config.federation.per_origin_burst,
            ),
            outbox: sender::Outbox::new(),
            origins: Origins::default(),
        }))
    }

    /// The server that signed `request`, if its `X-Matrix` signature is for this server and
    /// verifies with the origin's published key (`401 M_UNAUTHORIZED` otherwise), with the
    /// request's place among the origin's in flight (`429` past the origin's rate or share).
    pub(crate) async fn authenticate(
        &self,
        request: &Inbound<'_>,
    ) -> Result<(OwnedServerName, InFlight), Error> {
        let refused = |why: &dyn std::fmt::Display| {
            Error::matrix(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", why.to_string())
        };
        let header = XMatrix::parse(
            request
                .authorization
                .ok_or(Refusal::Missing)
                .map_err(|e| refused(&e))?,
        )
        .map_err(|e| refused(&e))?;
        if header.origin == self.server_name {
            return Err(refused(&"a request in this server's own name"));
        }
        let keys = self
            .keyring
            .keys_for(&header.origin, &header.key, Some(request.from))
            .await
            .map_err(|e| match e {
                keyring::KeyError::TooMany(limited) => limited,
                e => refused(&e),
            })?;
        let signed = SignedRequest {
            method: request.method,
            uri: request.uri,
            origin: &header.origin,
            destination: &self.server_name,
            content: request.content,
        };
        signed.verify(&header, &keys).map_err(|e| refused(&e))?;
        self.per_origin.check(header.origin.as_str())?;
        let in_flight = self.origins.enter(&header.origin)?;
        self.outbox.contacted(&header.origin);
        Ok((header.origin, in_flight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_holds_at_most_its_share_of_requests_in_flight() {
        let origins = Origins::default();
        let slow = ruma::server_name!("slow.example");
        let held: Vec<InFlight> = (0..MAX_IN_FLIGHT_PER_ORIGIN)
            .map(|_| origins.enter(slow).unwrap())
            .collect();
        let refused = origins.enter(slow).err().unwrap();
        assert_eq!(refused.errcode(), "M_LIMIT_EXCEEDED");
        // Another origin is not held back by the slow one.
        assert!(origins.enter(ruma::server_name!("other.example")).is_ok());
        drop(held);
        assert!(origins.enter(slow).is_ok());
    }
}
