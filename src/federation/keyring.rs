//! Other servers' keys: fetched from each server itself (`GET /_matrix/key/v2/server`), or,
//! when it does not answer, from the notaries of `[federation] trusted_key_servers`
//! (`POST /_matrix/key/v2/query`, a document both the server and the notary signed); checked
//! (the document names that server and is signed by the keys it lists), kept until the
//! document's `valid_until_ts`, at most seven days (the spec's bound), in memory. The documents
//! are kept as received, so this server answers key queries as a notary too (`notary.rs`).
//!
//! Old keys: a document's `old_verify_keys`, and a key a server stops listing, still verify
//! events sent before the key expired (`keys_for_event`); requests must be signed with a
//! current key.
//!
//! A fetch is work anybody can make this server do, before any signature is checked: a request
//! naming an origin whose key is not known makes this server call that origin. So fetches are
//! bounded: one at a time per server (many requests from one origin wait for the same fetch), a
//! failed fetch is not tried again for a minute (a request naming a server that does not answer
//! is refused at once), and one address may cause [`FETCHES_PER_SECOND`] fetches a second (burst
//! [`FETCH_BURST`]).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use reqwest::Method;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
};
use serde_json::{Value, json};

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
    /// Keys no longer in use, each with when it expired: they verify older events only.
    old: BTreeMap<String, (Base64, u64)>,
    valid_until: u64,
    /// When they were fetched: a key id they lack is not asked for again for a while.
    fetched: u64,
    /// The document as the server signed it, for key queries this server answers.
    document: Arc<Value>,
}

impl Known {
    /// Takes over the keys `earlier` had that this document no longer lists, as old keys
    /// expired now (a server that rotated its key still signed its past events with the old).
    fn keep_old(&mut self, earlier: Known, now: u64) {
        for (id, key) in earlier.keys {
            if !self.keys.contains_key(&id) {
                self.old.entry(id).or_insert((key, now));
            }
        }
        for (id, old) in earlier.old {
            self.old.entry(id).or_insert(old);
        }
    }
}

pub(crate) struct Keyring {
    client: Arc<FederationClient>,
    /// The notaries asked for a server's keys when it does not answer itself.
    notaries: Vec<OwnedServerName>,
    known: parking_lot::Mutex<ExpiringMap<Known>>,
    /// The servers being fetched, each with the lock its fetch holds.
    fetching: parking_lot::Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
    /// Servers whose last fetch failed, for [`FAILURE_BACKOFF`].
    failed: parking_lot::Mutex<ExpiringMap<()>>,
    /// Fetches per requesting address.
    fetches: crate::ratelimit::RateLimiter,
}

impl Keyring {
    pub(crate) fn new(client: Arc<FederationClient>, notaries: Vec<OwnedServerName>) -> Keyring {
        Keyring {
            client,
            notaries,
            known: parking_lot::Mutex::new(ExpiringMap::new(CAPACITY, MAX_VALIDITY)),
            fetching: parking_lot::Mutex::new(HashMap::new()),
            failed: parking_lot::Mutex::new(ExpiringMap::new(CAPACITY, FAILURE_BACKOFF)),
            fetches: crate::ratelimit::RateLimiter::new(FETCHES_PER_SECOND, FETCH_BURST),
        }
    }

    /// `server`'s current keys, in the shape signature checks take, holding `key_id` and valid
    /// now; fetched when they are not known, for a request from the address `asker`, or for
    /// this server's own work (`None`: a join's answer, bounded by its size, not by the address
    /// limit meant for strangers).
    pub(crate) async fn keys_for(
        &self,
        server: &ServerName,
        key_id: &str,
        asker: Option<IpAddr>,
    ) -> Result<PublicKeyMap, KeyError> {
        self.keys_at(server, key_id, None, asker).await
    }

    /// As [`keys_for`](Self::keys_for), for an event sent at `ts`: an old key that expired
    /// after it verifies it too.
    pub(crate) async fn keys_for_event(
        &self,
        server: &ServerName,
        key_id: &str,
        ts: u64,
        asker: Option<IpAddr>,
    ) -> Result<PublicKeyMap, KeyError> {
        self.keys_at(server, key_id, Some(ts), asker).await
    }

    async fn keys_at(
        &self,
        server: &ServerName,
        key_id: &str,
        event_ts: Option<u64>,
        asker: Option<IpAddr>,
    ) -> Result<PublicKeyMap, KeyError> {
        let now = now_ms();
        let usable = |k: &Known| usable_keys(k, key_id, event_ts, now);
        let cached = self.cached(server);
        if let Some(keys) = cached.as_ref().and_then(usable) {
            return Ok(map(server, keys));
        }
        // A key id the server did not list a moment ago (a forger's, most likely).
        let backoff = FAILURE_BACKOFF.as_millis() as u64;
        if cached.is_some_and(|k| k.valid_until > now && now < k.fetched + backoff) {
            return Err(KeyError::Invalid(
                server.to_owned(),
                "it does not list the key used",
            ));
        }
        let known = self.fetched(server, asker, |k| usable(k).is_some()).await?;
        match usable(&known) {
            Some(keys) => Ok(map(server, keys)),
            None => Err(KeyError::Invalid(
                server.to_owned(),
                "it does not list the key used",
            )),
        }
    }

    /// `server`'s key document as it signed it, valid at least until `valid_until` (ms since
    /// the epoch): the cached one, or fetched for the address `asker`. What this server answers
    /// as a notary.
    pub(crate) async fn document(
        &self,
        server: &ServerName,
        valid_until: u64,
        asker: Option<IpAddr>,
    ) -> Result<Arc<Value>, KeyError> {
        let fresh = |k: &Known| k.valid_until >= valid_until.max(now_ms());
        if let Some(known) = self.cached(server).filter(fresh) {
            return Ok(known.document);
        }
        Ok(self.fetched(server, asker, fresh).await?.document)
    }

    /// `server`'s keys once `good` holds for them: fetched unless another request fetched such
    /// keys while this one waited for its turn.
    async fn fetched(
        &self,
        server: &ServerName,
        asker: Option<IpAddr>,
        good: impl Fn(&Known) -> bool,
    ) -> Result<Known, KeyError> {
        let failed_lately = || {
            self.failed
                .lock()
                .contains(server.as_str())
                .then(|| KeyError::Fetch(server.to_owned(), "failed a moment ago".into()))
        };
        if let Some(failed) = failed_lately() {
            return Err(failed);
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
            if let Some(failed) = failed_lately() {
                return Err(failed);
            }
            match self.cached(server).filter(|k| good(k)) {
                Some(known) => return Ok(known),
                None => self.fetch(server, now_ms()).await,
            }
        };
        drop(turn);
        let mut known = fetched.inspect_err(|_| {
            self.failed.lock().insert(server.to_string(), ());
        })?;
        if let Some(earlier) = self.cached(server) {
            known.keep_old(earlier, now_ms());
        }
        self.known.lock().insert(server.to_string(), known.clone());
        Ok(known)
    }

    fn cached(&self, server: &ServerName) -> Option<Known> {
        self.known.lock().get_mut(server.as_str()).cloned()
    }

    /// From the server itself, else from the first notary that vouches for its keys.
    async fn fetch(&self, server: &ServerName, now: u64) -> Result<Known, KeyError> {
        let direct = match self
            .client
            .get_unsigned(server, "/_matrix/key/v2/server")
            .await
        {
            Ok(doc) => return check(server, &doc, now),
            Err(e) => KeyError::Fetch(server.to_owned(), e.to_string()),
        };
        for notary in self.notaries.iter().filter(|n| **n != *server) {
            match self.through_notary(server, notary, now).await {
                Ok(known) => return Ok(known),
                Err(e) => tracing::info!(%server, %notary, error = %e, "a notary did not vouch"),
            }
        }
        Err(direct)
    }

    /// `server`'s keys as `notary` vouches for them: a document `server` signed, signed by
    /// `notary` too, with `notary`'s own keys fetched from it directly.
    async fn through_notary(
        &self,
        server: &ServerName,
        notary: &ServerName,
        now: u64,
    ) -> Result<Known, KeyError> {
        let failed = |e: &dyn std::fmt::Display| KeyError::Fetch(notary.to_owned(), e.to_string());
        let body = json!({ "server_keys": { server.as_str(): {} } });
        let answer = self
            .client
            .send_signed(notary, Method::POST, "/_matrix/key/v2/query", Some(&body))
            .await
            .map_err(|e| failed(&e))?;
        let notary_keys = match self.cached(notary) {
            Some(known) if known.valid_until > now => known.keys,
            // Never through another notary: the notary's own word on its keys.
            _ => {
                let doc = self
                    .client
                    .get_unsigned(notary, "/_matrix/key/v2/server")
                    .await
                    .map_err(|e| failed(&e))?;
                let known = check(notary, &doc, now)?;
                self.known.lock().insert(notary.to_string(), known.clone());
                known.keys
            }
        };
        let documents = answer
            .get("server_keys")
            .and_then(Value::as_array)
            .ok_or_else(|| failed(&"no server_keys"))?;
        for doc in documents {
            if doc.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
                continue;
            }
            let known = check(server, doc, now)?;
            let object: CanonicalJsonObject = serde_json::from_value(doc.clone())
                .map_err(|_| KeyError::Invalid(notary.to_owned(), "not canonical JSON"))?;
            if !signed_by(&object, notary, notary_keys) {
                return Err(KeyError::Invalid(
                    notary.to_owned(),
                    "its signature does not verify",
                ));
            }
            return Ok(known);
        }
        Err(failed(&"it does not know the server's keys"))
    }
}

/// The keys of `known` that verify a signature by `key_id`: its current keys while they are
/// valid, or for an event sent at `event_ts`, the old key when it expired after the event.
fn usable_keys(
    known: &Known,
    key_id: &str,
    event_ts: Option<u64>,
    now: u64,
) -> Option<PublicKeySet> {
    if known.valid_until > now && known.keys.contains_key(key_id) {
        return Some(known.keys.clone());
    }
    let (key, expired) = known.old.get(key_id)?;
    event_ts
        .filter(|ts| ts < expired)
        .map(|_| PublicKeySet::from([(key_id.to_owned(), key.clone())]))
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
    if !signed_by(&object, server, keys.clone()) {
        return Err(invalid("its signature does not verify"));
    }
    let mut old = BTreeMap::new();
    for (id, key) in doc
        .get("old_verify_keys")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let expired = key.get("expired_ts").and_then(Value::as_u64);
        let key = key
            .get("key")
            .and_then(Value::as_str)
            .and_then(|k| Base64::parse(k).ok());
        if let (true, Some(key), Some(expired)) = (id.starts_with("ed25519:"), key, expired) {
            old.insert(id.clone(), (key, expired));
        }
    }
    let until = doc
        .get("valid_until_ts")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(Known {
        keys,
        old,
        valid_until: until.min(now + MAX_VALIDITY.as_millis() as u64),
        fetched: now,
        document: Arc::new(doc.clone()),
    })
}

/// Whether `object` carries a valid signature of `entity` by one of `keys`; other signers'
/// signatures (a notary's) are not checked here.
fn signed_by(object: &CanonicalJsonObject, entity: &ServerName, keys: PublicKeySet) -> bool {
    let mut only = object.clone();
    if let Some(CanonicalJsonValue::Object(signatures)) = only.get_mut("signatures") {
        signatures.retain(|signer, _| signer == entity.as_str());
    }
    ruma::signatures::verify_json(&map(entity, keys), &only).is_ok()
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

    #[test]
    fn an_old_key_verifies_only_events_sent_before_it_expired() {
        let key = SigningKey::spec_test_key();
        let now = 1_700_000_000_000;
        let mut doc = crate::federation::keys::server_keys(&key, now).unwrap();
        let domain = ruma::server_name!("domain");
        let current = check(domain, &doc, now).unwrap();
        // A document that lists the same key as old, expired an hour ago, re-signed.
        let public = doc["verify_keys"]["ed25519:1"]["key"].clone();
        let expired = now - 3_600_000;
        doc["old_verify_keys"] = serde_json::json!({
            "ed25519:old": { "key": public, "expired_ts": expired },
        });
        doc.as_object_mut().unwrap().remove("signatures");
        let mut object: CanonicalJsonObject = serde_json::from_value(doc).unwrap();
        ruma::signatures::sign_json("domain", &key.key_pair, &mut object).unwrap();
        let doc = serde_json::to_value(CanonicalJsonValue::Object(object)).unwrap();
        let known = check(domain, &doc, now).unwrap();
        assert!(usable_keys(&known, "ed25519:1", None, now).is_some());
        assert!(
            usable_keys(&known, "ed25519:old", None, now).is_none(),
            "not for requests"
        );
        assert!(usable_keys(&known, "ed25519:old", Some(expired - 1), now).is_some());
        assert!(usable_keys(&known, "ed25519:old", Some(expired), now).is_none());
        // A key the server stops listing is kept as old, expired when it was dropped.
        let mut rotated = known.clone();
        rotated.keys.clear();
        rotated.keep_old(current, now);
        assert!(usable_keys(&rotated, "ed25519:1", Some(now - 1), now).is_some());
        assert!(usable_keys(&rotated, "ed25519:1", None, now).is_none());
    }
}
