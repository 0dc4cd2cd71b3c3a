//! Other servers' keys: fetched from each server itself (`GET /_matrix/key/v2/server`), checked
//! (the document names that server and is signed by the keys it lists), kept until the
//! document's `valid_until_ts`, at most seven days (the spec's bound), in memory.
//!
//! A fetch is work anybody can make this server do, before any signature is checked: a request
//! naming an origin whose key is not known makes this server call that origin. So fetches are
//! bounded: one at a time per server (many requests from one origin wait for the same fetch), a
//! failed fetch is not tried again for a minute (a request naming a server that does not answer
//! is refused at once), and one address may cause [`FETCHES_PER_SECOND`] fetches a second (burst
//! [`FETCH_BURST`]). Notary servers (`/_matrix/key/v2/query`) are not asked yet.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use ruma::{
    CanonicalJsonObject, OwnedServerName, ServerName,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
};
use serde_json::Value;

use super::client::FederationClient;
use crate::expiring::ExpiringMap;

/// The longest a fetched key is trusted, whatever the document says.
const MAX_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Most servers whose keys are kept.
const CAPACITY: usize = 10_000;
/// How long a server whose keys could not be fetched is not asked again.
const FAILURE_BACKOFF: Duration = Duration::from_secs(60);
/// Fetches one address may cause, sustained and in a burst.
const FETCHES_PER_SECOND: f64 = 1.0;
const FETCH_BURST: u32 = 20;

/// Why a server's keys cannot be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("cannot fetch the keys of {0}: {1}")]
    Fetch(OwnedServerName, String),
    #[error("the key document of {0} is not valid: {1}")]
    Invalid(OwnedServerName, &'static str),
    #[error("too many key fetches from this address")]
    TooMany(crate::error::Error),
}

/// A server's verify keys and until when (ms since the epoch) they may be used.
#[derive(Clone)]
struct Known {
    keys: PublicKeySet,
    valid_until: u64,
    /// When they were fetched: a key id they lack is not asked for again for a while.
    fetched: u64,
}

pub(crate) struct Keyring {
    client: Arc<FederationClient>,
    known: parking_lot::Mutex<ExpiringMap<Known>>,
    /// The servers being fetched, each with the lock its fetch holds.
    fetching: parking_lot::Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
    /// Servers whose last fetch failed, for [`FAILURE_BACKOFF`].
    failed: parking_lot::Mutex<ExpiringMap<()>>,
    /// Fetches per requesting address.
    fetches: crate::ratelimit::RateLimiter,
}

impl Keyring {
    pub(crate) fn new(client: Arc<FederationClient>) -> Keyring {
        Keyring {
            client,
            known: parking_lot::Mutex::new(ExpiringMap::new(CAPACITY, MAX_VALIDITY)),
            fetching: parking_lot::Mutex::new(HashMap::new()),
            failed: parking_lot::Mutex::new(ExpiringMap::new(CAPACITY, FAILURE_BACKOFF)),
            fetches: crate::ratelimit::RateLimiter::new(FETCHES_PER_SECOND, FETCH_BURST),
        }
    }

    /// `server`'s keys, in the shape signature checks take, holding `key_id` and valid now;
    /// fetched when they are not known, for a request from the address `asker`, or for this
    /// server's own work (`None`: a join's answer, bounded by its size, not by the address
    /// limit meant for strangers).
    pub(crate) async fn keys_for(
        &self,
        server: &ServerName,
        key_id: &str,
        asker: Option<IpAddr>,
    ) -> Result<PublicKeyMap, KeyError> {
        let now = now_ms();
        let usable = |k: &Known| k.valid_until > now && k.keys.contains_key(key_id);
        let cached = self.cached(server);
        if let Some(known) = cached.clone().filter(usable) {
            return Ok(map(server, known.keys));
        }
        // A key id the server did not list a moment ago (a forger's, most likely).
        let backoff = FAILURE_BACKOFF.as_millis() as u64;
        if cached.is_some_and(|k| k.valid_until > now && now < k.fetched + backoff) {
            return Err(KeyError::Invalid(
                server.to_owned(),
                "it does not list the key used",
            ));
        }
        if self.failed.lock().contains(server.as_str()) {
            return Err(KeyError::Fetch(
                server.to_owned(),
                "failed a moment ago".into(),
            ));
        }
        if let Some(asker) = asker {
            self.fetches
                .check(&asker.to_string())
                .map_err(KeyError::TooMany)?;
        }
        let turn = Turn::take(&self.fetching, server);
        let fetched = {
            let _one_at_a_time = turn.lock.lock().await;
            // Another request may have fetched them, or failed to, while this one waited.
            if self.failed.lock().contains(server.as_str()) {
                return Err(KeyError::Fetch(
                    server.to_owned(),
                    "failed a moment ago".into(),
                ));
            }
            match self.cached(server).filter(usable) {
                Some(known) => Ok(known),
                None => self.fetch(server, now).await,
            }
        };
        drop(turn);
        let known = fetched.inspect_err(|_| {
            self.failed.lock().insert(server.to_string(), ());
        })?;
        self.known.lock().insert(server.to_string(), known.clone());
        if !usable(&known) {
            return Err(KeyError::Invalid(
                server.to_owned(),
                "it does not list the key used",
            ));
        }
        Ok(map(server, known.keys))
    }

    fn cached(&self, server: &ServerName) -> Option<Known> {
        self.known.lock().get_mut(server.as_str()).cloned()
    }

    async fn fetch(&self, server: &ServerName, now: u64) -> Result<Known, KeyError> {
        let doc = self
            .client
            .get_unsigned(server, "/_matrix/key/v2/server")
            .await
            .map_err(|e| KeyError::Fetch(server.to_owned(), e.to_string()))?;
        check(server, &doc, now)
    }
}

/// A request's place in the queue of one server's fetches; the last one out (also a request
/// dropped while it waited) removes the server's lock, so the map holds only servers being
/// fetched.
struct Turn<'a> {
    map: &'a parking_lot::Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
    server: &'a ServerName,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Turn<'a> {
    fn take(
        map: &'a parking_lot::Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
        server: &'a ServerName,
    ) -> Turn<'a> {
        let lock = map.lock().entry(server.to_owned()).or_default().clone();
        Turn { map, server, lock }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        // This turn's reference and the map's: nobody else waits.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(self.server);
        }
    }
}

/// The keys of a key document `doc` said to come from `server`, if it is valid: it names
/// `server`, lists ed25519 keys, and each signature `server` made on it verifies.
fn check(server: &ServerName, doc: &Value, now: u64) -> Result<Known, KeyError> {
    let invalid = |why| KeyError::Invalid(server.to_owned(), why);
    if doc.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
        return Err(invalid("it names another server"));
    }
    let mut keys = PublicKeySet::new();
    for (id, key) in doc
        .get("verify_keys")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no verify_keys"))?
    {
        let key = key
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("a key without a value"))?;
        let key = Base64::parse(key).map_err(|_| invalid("a key that is not base64"))?;
        if id.starts_with("ed25519:") {
            keys.insert(id.clone(), key);
        }
    }
    if keys.is_empty() {
        return Err(invalid("no ed25519 key"));
    }
    let object: CanonicalJsonObject =
        serde_json::from_value(doc.clone()).map_err(|_| invalid("not canonical JSON"))?;
    ruma::signatures::verify_json(&map(server, keys.clone()), &object)
        .map_err(|_| invalid("its signature does not verify"))?;
    let until = doc
        .get("valid_until_ts")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(Known {
        keys,
        valid_until: until.min(now + MAX_VALIDITY.as_millis() as u64),
        fetched: now,
    })
}

fn map(server: &ServerName, keys: PublicKeySet) -> PublicKeyMap {
    BTreeMap::from([(server.to_string(), keys)])
}

fn now_ms() -> u64 {
    u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::SigningKey;

    #[test]
    fn a_key_document_is_taken_only_from_the_server_it_names_and_signed() {
        let key = SigningKey::spec_test_key();
        let now = 1_700_000_000_000;
        let doc = crate::federation::keys::server_keys(&key, now).unwrap();
        let domain = ruma::server_name!("domain");
        let known = check(domain, &doc, now).unwrap();
        assert!(known.keys.contains_key("ed25519:1"));
        assert_eq!(known.valid_until, now + 86_400_000);
        // Served by another server in this one's name.
        assert!(check(ruma::server_name!("evil.example"), &doc, now).is_err());
        // Changed after signing.
        let mut forged = doc.clone();
        forged["valid_until_ts"] = (now + 365 * 86_400_000).into();
        assert!(check(domain, &forged, now).is_err());
        // Unsigned.
        let mut unsigned = doc.clone();
        unsigned.as_object_mut().unwrap().remove("signatures");
        assert!(check(domain, &unsigned, now).is_err());
        // Read ten days before it expires: trusted for seven days only.
        let early = now - 9 * 86_400_000;
        let known = check(domain, &doc, early).unwrap();
        assert_eq!(known.valid_until, early + 7 * 86_400_000);
    }
}
