//! Application services: the registrations (the config's files and those an administrator
//! adds at runtime, kept in the store), who owns which users and aliases, and the traffic to
//! them (transactions, queries, ping).
//!
//! Bridges and bots reach Charla only through this door, also when they run in-process, so a
//! bridge can move to its own host without change.
//!
//! The registrations in use are a snapshot ([`Registered`]) that a change replaces whole once
//! it is on disk: every request's token lookup reads one, and one registered or removed at
//! runtime is used (its token, namespaces, pusher) or dropped from the next request on, never
//! seen half-added. Whoever holds an [`AppService`] from before keeps a valid one; a removed
//! one is marked retired, which stops its pusher.

mod outbound;
mod pusher;
mod registration;
mod registry;
mod thirdparty;

use std::{collections::HashMap, ops::Deref, sync::Arc};

use parking_lot::RwLock;
use ruma::{OwnedServerName, RoomAliasId, ServerName, UserId};

pub use outbound::PingError;
pub use pusher::{Pushers, QueueDepth, queue_depths, run_pushers};
pub use registration::{AppService, Source, check_unique};
pub use thirdparty::ThirdPartyKind;

use crate::{
    config::AppserviceConfig,
    error::Result,
    storage::{Batch, Store},
};

/// Every registered appservice.
pub struct AppServices {
    registered: RwLock<Arc<Registered>>,
    /// Bumped after every change, so the pushers start and stop with the registrations.
    changes: tokio::sync::watch::Sender<u64>,
    /// One change at a time: checked against the registrations it replaces.
    changing: tokio::sync::Mutex<()>,
    store: Store,
    server: OwnedServerName,
    http: reqwest::Client,
    protocols: thirdparty::ProtocolCache,
}

/// The registrations in use at one moment, in order: the config's, then the store's by id.
#[derive(Default)]
pub struct Registered {
    list: Vec<Arc<AppService>>,
    by_token: HashMap<String, Arc<AppService>>,
}

impl Registered {
    fn new(list: Vec<Arc<AppService>>) -> Self {
        let by_token = list
            .iter()
            .map(|a| (a.registration.as_token.clone(), a.clone()))
            .collect();
        Registered { list, by_token }
    }
}

impl Deref for Registered {
    type Target = [Arc<AppService>];

    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

impl AppServices {
    /// Loads and checks every registration file the config lists, and those kept in the store.
    pub fn open(
        config: &AppserviceConfig,
        server: &ServerName,
        store: Store,
    ) -> std::result::Result<Self, String> {
        let mut list = config
            .registrations
            .iter()
            .map(|path| AppService::load(path, server))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        check_unique(&list)?;
        list.extend(registry::load(&store, server, &list)?);
        Ok(AppServices {
            registered: RwLock::new(Arc::new(Registered::new(
                list.into_iter().map(Arc::new).collect(),
            ))),
            changes: tokio::sync::watch::channel(0).0,
            changing: tokio::sync::Mutex::new(()),
            store,
            server: server.to_owned(),
            http: outbound::client(),
            protocols: Default::default(),
        })
    }

    /// The registrations in use now.
    pub fn all(&self) -> Arc<Registered> {
        self.registered.read().clone()
    }

    /// The appservice whose `as_token` this is.
    pub fn by_token(&self, token: &str) -> Option<Arc<AppService>> {
        self.registered.read().by_token.get(token).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<AppService>> {
        self.all().iter().find(|a| a.id() == id).cloned()
    }

    /// Wakes on every change of the registrations.
    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Parses and checks a registration an administrator adds (YAML as Synapse takes it, or
    /// JSON, which is YAML too), against those in use. Nothing is kept: see [`Self::add`].
    pub fn check_new(&self, text: &str) -> Result<AppService> {
        let asv = AppService::parse(text, &self.server, Source::Store)
            .map_err(|e| registry::invalid(&e))?;
        registry::check_against(&asv, &self.all())?;
        Ok(asv)
    }

    /// Adds a checked registration: kept in the store (with `batch`, the caller's record of
    /// it) and in use once that is on disk; it is sent the events after stream position
    /// `from`. Checked again under the lock, so two at once never both take an id or a token.
    pub async fn add(&self, asv: AppService, from: u64, batch: Batch) -> Result<Arc<AppService>> {
        let _one_at_a_time = self.changing.lock().await;
        registry::check_against(&asv, &self.all())?;
        registry::save(&self.store, &asv, from, batch).await?;
        let asv = Arc::new(asv);
        self.replace(|list| list.push(asv.clone()));
        tracing::info!(appservice = asv.id(), "appservice registered");
        Ok(asv)
    }

    /// Removes an appservice added at runtime (the config's stay until the config changes):
    /// dropped from the store with `batch`, then from use; its pusher stops.
    pub async fn remove(&self, id: &str, batch: Batch) -> Result<Arc<AppService>> {
        let _one_at_a_time = self.changing.lock().await;
        let asv = registry::removable(self.by_id(id), id)?;
        registry::delete(&self.store, id, batch).await?;
        self.replace(|list| list.retain(|a| !Arc::ptr_eq(a, &asv)));
        asv.retire();
        self.protocols.forget(id);
        tracing::info!(appservice = id, "appservice unregistered");
        Ok(asv)
    }

    /// Swaps in the registrations `change` makes of the current ones, and tells the pushers.
    fn replace(&self, change: impl FnOnce(&mut Vec<Arc<AppService>>)) {
        let mut list = self.all().list.clone();
        change(&mut list);
        *self.registered.write() = Arc::new(Registered::new(list));
        self.changes.send_modify(|n| *n += 1);
    }

    /// The appservice that holds `user` in an exclusive namespace, if any.
    pub fn exclusive_user_owner(&self, user: &UserId) -> Option<Arc<AppService>> {
        self.all()
            .iter()
            .find(|a| a.owns_user_exclusively(user))
            .cloned()
    }

    pub fn exclusive_alias_owner(&self, alias: &RoomAliasId) -> Option<Arc<AppService>> {
        self.all()
            .iter()
            .find(|a| a.owns_alias_exclusively(alias.as_str()))
            .cloned()
    }

    /// Asks the appservices whose namespace holds `user` whether it exists (they create it
    /// before answering yes). `true` if one did.
    pub async fn query_user(&self, user: &UserId) -> bool {
        let all = self.all();
        for asv in all.iter().filter(|a| a.owns_user(user)) {
            if outbound::query(&self.http, asv, "users", user.as_str()).await {
                return true;
            }
        }
        false
    }

    /// Same for a room alias: the appservice creates the room and alias before answering yes.
    pub async fn query_alias(&self, alias: &RoomAliasId) -> bool {
        let all = self.all();
        for asv in all.iter().filter(|a| a.owns_alias(alias.as_str())) {
            if outbound::query(&self.http, asv, "rooms", alias.as_str()).await {
                return true;
            }
        }
        false
    }

    /// `POST /_matrix/app/v1/ping` to the appservice; the round trip in milliseconds.
    ///
    /// An appservice pings when it starts; a success ends the pusher's backoff, so a backlog
    /// queued while it was down starts draining at once.
    pub async fn ping(
        &self,
        asv: &AppService,
        transaction_id: Option<&str>,
    ) -> std::result::Result<u64, PingError> {
        let ms = outbound::ping(&self.http, asv, transaction_id).await?;
        asv.reachable.notify_one();
        Ok(ms)
    }
}
