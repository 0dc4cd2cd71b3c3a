//! Application services: the registrations loaded from config, who owns which users and
//! aliases, and the traffic to them (transactions, queries, ping).
//!
//! Bridges and bots reach Charla only through this door, also when they run in-process, so a
//! bridge can move to its own host without change.

mod outbound;
mod pusher;
mod registration;
mod thirdparty;

use std::{collections::HashMap, sync::Arc};

use ruma::{RoomAliasId, ServerName, UserId};

pub use outbound::PingError;
pub use pusher::{Pushers, QueueDepth, any_to_push, queue_depths, run_pushers};
pub use registration::{AppService, check_unique};
pub use thirdparty::ThirdPartyKind;

use crate::config::AppserviceConfig;

/// Every registered appservice.
pub struct AppServices {
    list: Vec<Arc<AppService>>,
    by_token: HashMap<String, Arc<AppService>>,
    http: reqwest::Client,
    protocols: thirdparty::ProtocolCache,
}

impl AppServices {
    /// Loads and checks every registration file the config lists.
    pub fn load(config: &AppserviceConfig, server: &ServerName) -> Result<Self, String> {
        let list = config
            .registrations
            .iter()
            .map(|path| AppService::load(path, server))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(list)
    }

    pub fn new(list: Vec<AppService>) -> Result<Self, String> {
        check_unique(&list)?;
        let list: Vec<Arc<AppService>> = list.into_iter().map(Arc::new).collect();
        let by_token = list
            .iter()
            .map(|a| (a.registration.as_token.clone(), a.clone()))
            .collect();
        Ok(AppServices {
            list,
            by_token,
            http: outbound::client(),
            protocols: Default::default(),
        })
    }

    pub fn all(&self) -> &[Arc<AppService>] {
        &self.list
    }

    pub fn by_token(&self, token: &str) -> Option<&Arc<AppService>> {
        self.by_token.get(token)
    }

    /// The appservice that holds `user` in an exclusive namespace, if any.
    pub fn exclusive_user_owner(&self, user: &UserId) -> Option<&Arc<AppService>> {
        self.list.iter().find(|a| a.owns_user_exclusively(user))
    }

    pub fn exclusive_alias_owner(&self, alias: &RoomAliasId) -> Option<&Arc<AppService>> {
        self.list
            .iter()
            .find(|a| a.owns_alias_exclusively(alias.as_str()))
    }

    /// Asks the appservices whose namespace holds `user` whether it exists (they create it
    /// before answering yes). `true` if one did.
    pub async fn query_user(&self, user: &UserId) -> bool {
        for asv in self.list.iter().filter(|a| a.owns_user(user)) {
            if outbound::query(&self.http, asv, "users", user.as_str()).await {
                return true;
            }
        }
        false
    }

    /// Same for a room alias: the appservice creates the room and alias before answering yes.
    pub async fn query_alias(&self, alias: &RoomAliasId) -> bool {
        for asv in self.list.iter().filter(|a| a.owns_alias(alias.as_str())) {
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
    ) -> Result<u64, PingError> {
        let ms = outbound::ping(&self.http, asv, transaction_id).await?;
        asv.reachable.notify_one();
        Ok(ms)
    }
}
