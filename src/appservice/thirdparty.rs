//! Third-party networks (`/thirdparty/*`): what the appservices bridging them say.
//!
//! A bridge declares the protocols it serves in its registration (`protocols`). The homeserver
//! has no data of its own here: it asks the appservices over the Application Service API
//! (`/_matrix/app/v1/thirdparty/...` with the `hs_token`) and merges their answers as Synapse
//! does. Protocol metadata of several bridges for one protocol is the first answer with every
//! bridge's `instances` appended, each instance given an `instance_id` of
//! `<appservice id>|<network_id>` (what `/publicRooms`' `third_party_instance_id` names).
//! Lookups are the concatenated valid results. An appservice that fails, times out or answers
//! malformed data is logged and left out, so one broken bridge cannot break the others.
//!
//! Protocol metadata changes rarely and clients ask for it whenever they open the room
//! directory, so each appservice's answer for a protocol is kept for a few minutes (Synapse
//! keeps it an hour; a bridge that gains a network should show it sooner). Failures are not
//! kept: a bridge that was down is asked again next time. Lookups are never cached.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use parking_lot::Mutex;
use reqwest::Url;
use serde_json::{Map, Value};

use super::{AppService, AppServices, outbound};

/// How long a bridge may take to answer a third-party query.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long an appservice's protocol metadata is reused.
const PROTOCOL_TTL: Duration = Duration::from_secs(5 * 60);

/// Protocol metadata by appservice id and protocol, with when it was fetched.
#[derive(Default)]
pub struct ProtocolCache(Mutex<HashMap<(String, String), (Instant, Value)>>);

impl ProtocolCache {
    fn get(&self, appservice: &str, protocol: &str) -> Option<Value> {
        let cache = self.0.lock();
        cache
            .get(&(appservice.to_owned(), protocol.to_owned()))
            .filter(|(at, _)| at.elapsed() < PROTOCOL_TTL)
            .map(|(_, info)| info.clone())
    }

    /// Drops what an appservice said, once it is unregistered.
    pub(super) fn forget(&self, appservice: &str) {
        self.0.lock().retain(|(a, _), _| a != appservice);
    }

    fn put(&self, appservice: &str, protocol: &str, info: &Value) {
        let mut cache = self.0.lock();
        cache.insert(
            (appservice.to_owned(), protocol.to_owned()),
            (Instant::now(), info.clone()),
        );
    }
}

/// What a lookup is for: a third-party user or a location (a portal room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThirdPartyKind {
    User,
    Location,
}

impl ThirdPartyKind {
    fn path(self) -> &'static str {
        match self {
            ThirdPartyKind::User => "user",
            ThirdPartyKind::Location => "location",
        }
    }

    /// The key a valid result names its Matrix side with.
    fn matrix_field(self) -> &'static str {
        match self {
            ThirdPartyKind::User => "userid",
            ThirdPartyKind::Location => "alias",
        }
    }
}

impl AppServices {
    /// Every protocol (or only `only`) with its merged metadata. A protocol no appservice
    /// answered for is left out.
    pub async fn thirdparty_protocols(&self, only: Option<&str>) -> BTreeMap<String, Value> {
        let all = self.all();
        let asked = all.iter().flat_map(|asv| {
            protocols(asv)
                .iter()
                .filter(|p| only.is_none_or(|o| o == p.as_str()))
                .map(move |p| (asv, p))
        });
        let answers = join_all(asked.map(|(asv, protocol)| async move {
            let info = self.protocol_info(asv, protocol).await;
            (protocol.clone(), info)
        }))
        .await;
        let mut merged: BTreeMap<String, Value> = BTreeMap::new();
        // Answers come back in registration order, so "the first" is deterministic.
        for (protocol, info) in answers {
            let Some(info) = info else { continue };
            match merged.get_mut(&protocol) {
                None => {
                    merged.insert(protocol, info);
                }
                Some(first) => {
                    let more = info["instances"].as_array().cloned().unwrap_or_default();
                    if let Some(instances) = first["instances"].as_array_mut() {
                        instances.extend(more);
                    }
                }
            }
        }
        merged
    }

    /// Third-party users or locations matching `fields`, from the appservices serving
    /// `protocol`; without a protocol (the reverse lookups by `userid` or `alias`), from every
    /// appservice that serves any.
    pub async fn thirdparty_lookup(
        &self,
        kind: ThirdPartyKind,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> Vec<Value> {
        let all = self.all();
        let asked = all.iter().filter(|asv| match protocol {
            Some(p) => protocols(asv).iter().any(|q| q == p),
            None => !protocols(asv).is_empty(),
        });
        let answers = join_all(asked.map(|asv| self.lookup(asv, kind, protocol, fields))).await;
        answers.into_iter().flatten().collect()
    }

    /// Whether some appservice serves `protocol`.
    pub fn serves_protocol(&self, protocol: &str) -> bool {
        self.all()
            .iter()
            .any(|asv| protocols(asv).iter().any(|p| p == protocol))
    }

    /// The protocol's metadata from the cache or from the appservice.
    async fn protocol_info(&self, asv: &AppService, protocol: &str) -> Option<Value> {
        if let Some(info) = self.protocols.get(asv.id(), protocol) {
            return Some(info);
        }
        let info = self.fetch_protocol_info(asv, protocol).await?;
        self.protocols.put(asv.id(), protocol, &info);
        Some(info)
    }

    /// `GET /_matrix/app/v1/thirdparty/protocol/{protocol}`, validated, with `instance_id`s.
    async fn fetch_protocol_info(&self, asv: &AppService, protocol: &str) -> Option<Value> {
        let path = format!("thirdparty/protocol/{}", outbound::encode(protocol));
        let mut info = self.get_json(asv, &path, &BTreeMap::new()).await?;
        let Some(instances) = info.get_mut("instances").and_then(Value::as_array_mut) else {
            tracing::warn!(
                appservice = asv.id(),
                protocol,
                "protocol metadata without instances"
            );
            return None;
        };
        for instance in instances.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(network) = instance.get("network_id").and_then(Value::as_str) {
                let id = format!("{}|{network}", asv.id());
                instance.insert("instance_id".into(), id.into());
            }
        }
        Some(info)
    }

    /// One appservice's valid results for a lookup; nothing if it fails.
    async fn lookup(
        &self,
        asv: &AppService,
        kind: ThirdPartyKind,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> Vec<Value> {
        let path = match protocol {
            Some(p) => format!("thirdparty/{}/{}", kind.path(), outbound::encode(p)),
            None => format!("thirdparty/{}", kind.path()),
        };
        let Some(Value::Array(results)) = self.get_json(asv, &path, fields).await else {
            return Vec::new();
        };
        results
            .into_iter()
            .filter(|r| {
                let valid = r.as_object().is_some_and(|r| is_valid_result(r, kind));
                if !valid {
                    tracing::warn!(
                        appservice = asv.id(),
                        "skipping an invalid third-party result"
                    );
                }
                valid
            })
            .collect()
    }

    /// A GET to the appservice with the `hs_token`; the JSON of a 2xx answer, else `None`.
    async fn get_json(
        &self,
        asv: &AppService,
        path: &str,
        query: &BTreeMap<String, String>,
    ) -> Option<Value> {
        let mut url = Url::parse(&outbound::endpoint(asv, path)?).ok()?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let answer = self
            .http
            .get(url)
            .bearer_auth(&asv.registration.hs_token)
            .timeout(TIMEOUT)
            .send()
            .await;
        let response = match answer {
            Ok(r) if r.status().is_success() => r,
            // The spec's answer for "nothing found".
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => return None,
            Ok(r) => {
                tracing::warn!(appservice = asv.id(), path, status = %r.status(), "third-party query refused");
                return None;
            }
            Err(e) => {
                tracing::warn!(appservice = asv.id(), path, error = %e, "third-party query failed");
                return None;
            }
        };
        match response.json::<Value>().await {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(appservice = asv.id(), path, error = %e, "third-party answer is not JSON");
                None
            }
        }
    }
}

fn protocols(asv: &AppService) -> &[String] {
    asv.registration.protocols.as_deref().unwrap_or_default()
}

/// Synapse's check: a string `protocol`, a string Matrix id, an object of `fields`.
fn is_valid_result(result: &Map<String, Value>, kind: ThirdPartyKind) -> bool {
    [kind.matrix_field(), "protocol"]
        .iter()
        .all(|k| result.get(*k).is_some_and(Value::is_string))
        && result.get("fields").is_some_and(Value::is_object)
}
