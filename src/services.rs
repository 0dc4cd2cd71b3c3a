//! Every service of a running server, built once from the config and shared by handlers.
//!
//! Passed explicitly (axum state) rather than held in a global, so tests can run several
//! servers in one process.

use std::sync::Arc;

use crate::{
    appservice::AppServices,
    config::Config,
    e2ee::E2eeService,
    ephemeral::{PresenceService, ReceiptService, TypingService},
    error::Result,
    media::{FileStore, MediaService, preview::UrlPreviewer},
    push::PushService,
    ratelimit::RateLimiter,
    rooms::RoomService,
    storage::Store,
    stream::{Notifier, Stream},
    support::SupportService,
    sync::SyncService,
    users::{UserService, uiaa::Uiaa},
};

pub struct Services {
    pub config: Config,
    pub(crate) appservices: AppServices,
    pub store: Store,
    pub stream: Arc<Stream>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) users: UserService,
    pub(crate) rooms: RoomService,
    pub(crate) sync: SyncService,
    pub(crate) receipts: ReceiptService,
    pub(crate) typing: TypingService,
    pub(crate) presence: PresenceService,
    pub(crate) push: PushService,
    pub(crate) e2ee: E2eeService,
    pub(crate) media: MediaService,
    pub(crate) previews: UrlPreviewer,
    pub(crate) uiaa: Uiaa,
    pub(crate) send_limiter: RateLimiter,
    pub(crate) login_limiter: RateLimiter,
    /// Full-text searches per user.
    pub(crate) search_limiter: RateLimiter,
    pub(crate) shared_secret: crate::users::shared_secret::SharedSecretRegistration,
    /// `admin.token`: the operator's credential on the admin API.
    pub(crate) admin_token: crate::users::admin_token::AdminToken,
    pub(crate) support: SupportService,
    /// Backups of the running server (`GET /_charla/admin/v1/backup`).
    pub(crate) backup: crate::backup::BackupService,
    /// The web chat channel, when `[webchat] enabled`.
    pub(crate) webchat: Option<crate::webchat::WebChat>,
    /// Full-text search (`/search`, the support API's `q`).
    pub(crate) search: crate::search::SearchService,
    /// Requests to and from other servers, when `[federation] enabled`.
    pub(crate) federation: Option<Arc<crate::federation::Federation>>,
}

impl Services {
    /// Opens the store and builds the services. Must run inside a tokio runtime.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.storage.path).map_err(|e| {
            crate::error::Error::internal(format!("cannot create data folder: {e}"))
        })?;
        let store = Store::open(&config.storage.path, config.storage.cache_capacity_mb)?;
        let appservices = AppServices::open(&config.appservice, &config.server_name, store.clone())
            .map_err(crate::error::Error::internal)?;
        let shared_secret = crate::users::shared_secret::SharedSecretRegistration::open(
            config.registration.shared_secret.as_deref(),
            &config.storage.path,
        )?;
        let admin_token = crate::users::admin_token::AdminToken::open(&config.storage.path)?;
        let stream = Arc::new(Stream::open(store.clone())?);
        let notifier = Arc::new(Notifier::default());
        let key =
            Arc::new(crate::rooms::load_signing_key(&store, config.server_name.clone()).await?);
        let users = UserService::new(
            store.clone(),
            stream.clone(),
            notifier.clone(),
            config.server_name.clone(),
            Box::new(crate::e2ee::DeviceKeys),
        );
        users.hash_stored_tokens().await?;
        let rooms = RoomService::new(
            store.clone(),
            stream.clone(),
            notifier.clone(),
            key.clone(),
            config.rooms.default_version.clone(),
        );
        for asv in appservices.all().iter() {
            crate::admin::ensure_appservice_user(&users, asv).await?;
        }
        let sync = SyncService::new(stream.clone(), notifier.clone());
        let receipts = ReceiptService::new(store.clone(), stream.clone(), notifier.clone());
        let typing = TypingService::new(stream.clone(), notifier.clone());
        let presence = PresenceService::new(&config.presence, stream.clone(), notifier.clone());
        let push = PushService::new(store.clone());
        let e2ee = E2eeService::new(store.clone(), stream.clone(), notifier.clone());
        let files = FileStore::open(config.media_path())
            .map_err(|e| crate::error::Error::internal(format!("cannot open media folder: {e}")))?;
        let media = MediaService::open(
            store.clone(),
            files,
            config.server_name.clone(),
            config.media.clone(),
        );
        let previews = UrlPreviewer::new(&config.media).map_err(crate::error::Error::internal)?;
        let support =
            SupportService::new(store.clone(), config.support.clone(), &config.server_name)?;
        let backup =
            crate::backup::BackupService::new(&store, config.media_path(), &config.server_name);
        let webchat = crate::webchat::WebChat::open(&config.webchat, store.clone())?;
        let search = crate::search::SearchService::open(&config.search, config.search_path())?;
        let federation = crate::federation::Federation::open(&config, key.clone())?.map(Arc::new);
        if let Some(federation) = &federation {
            rooms.set_federated(federation.clone());
        }
        let limits = &config.limits;
        Ok(Arc::new(Services {
            send_limiter: RateLimiter::new(limits.send_per_second, limits.send_burst),
            login_limiter: RateLimiter::new(limits.login_per_second, limits.login_burst),
            search_limiter: RateLimiter::new(limits.search_per_second, limits.search_burst),
            config,
            appservices,
            store,
            stream,
            notifier,
            users,
            rooms,
            sync,
            receipts,
            typing,
            presence,
            push,
            e2ee,
            media,
            previews,
            uiaa: Uiaa::default(),
            shared_secret,
            admin_token,
            support,
            backup,
            webchat,
            search,
            federation,
        }))
    }
}

impl Services {
    /// Resolves a local alias, asking the appservices whose namespace holds it when it is
    /// unknown (they may create it on demand, as the spec's alias query allows).
    pub async fn resolve_alias(
        &self,
        alias: &ruma::RoomAliasId,
    ) -> Result<Option<ruma::OwnedRoomId>> {
        if let Some(room) = self.rooms.resolve_alias(alias)? {
            return Ok(Some(room));
        }
        if alias.server_name() == self.config.server_name
            && self.appservices.query_alias(alias).await
        {
            return self.rooms.resolve_alias(alias);
        }
        Ok(None)
    }

    /// Refuses an alias that an appservice holds exclusively, unless that appservice asks.
    pub fn check_alias_namespace(
        &self,
        alias: &ruma::RoomAliasId,
        who: &crate::users::Identity,
    ) -> Result<()> {
        match self.appservices.exclusive_alias_owner(alias) {
            Some(owner) if who.appservice.as_ref().is_none_or(|a| a.id() != owner.id()) => Err(
                crate::error::Error::exclusive("This alias is reserved by an application service"),
            ),
            _ => Ok(()),
        }
    }

    /// Whether a local user exists and is active, asking the appservices whose namespace
    /// holds an unknown one (the spec's user query).
    pub async fn user_is_active(&self, user: &ruma::UserId) -> Result<bool> {
        if self.users.is_active(user)? {
            return Ok(true);
        }
        if user.server_name() == self.config.server_name
            && !self.users.exists(user)?
            && self.appservices.query_user(user).await
        {
            return self.users.is_active(user);
        }
        Ok(false)
    }
    /// What `/sync` reads.
    pub fn sync_services(&self) -> crate::sync::SyncServices<'_> {
        crate::sync::SyncServices {
            users: &self.users,
            rooms: &self.rooms,
            receipts: &self.receipts,
            typing: &self.typing,
            presence: &self.presence,
            push: &self.push,
            e2ee: &self.e2ee,
        }
    }

    /// What administration uses (`admin`).
    pub(crate) fn admin(&self) -> crate::admin::Admin<'_> {
        crate::admin::Admin {
            users: &self.users,
            rooms: &self.rooms,
            stream: &self.stream,
            desk: self.desk(),
            search: &self.search,
        }
    }

    /// The support desk's view of the server: what `support/` and the bot use.
    pub(crate) fn desk(&self) -> crate::support::Desk<'_> {
        crate::support::Desk {
            support: &self.support,
            rooms: &self.rooms,
            users: &self.users,
            presence: &self.presence,
            appservices: &self.appservices,
            store: &self.store,
        }
    }

    /// What push delivery uses (`push::gateway`).
    pub fn push_delivery(&self) -> crate::push::gateway::Delivery<'_> {
        crate::push::gateway::Delivery {
            store: &self.store,
            stream: &self.stream,
            notifier: &self.notifier,
            rooms: &self.rooms,
            users: &self.users,
            receipts: &self.receipts,
            push: &self.push,
            server: &self.config.server,
        }
    }

    /// What the appservice pushers use (`appservice::run_pushers`).
    pub fn appservice_pushers(&self) -> crate::appservice::Pushers<'_> {
        crate::appservice::Pushers {
            appservices: &self.appservices,
            rooms: &self.rooms,
            store: &self.store,
            stream: &self.stream,
            notifier: &self.notifier,
        }
    }
}

impl Services {
    /// What the search indexer and rebuilds use (`search::indexer`).
    pub(crate) fn search_indexer(&self) -> crate::search::indexer::IndexerView<'_> {
        crate::search::indexer::IndexerView {
            search: &self.search,
            rooms: &self.rooms,
            desk: self.desk(),
            stream: &self.stream,
            notifier: &self.notifier,
        }
    }

    /// Tells the other servers sharing a room with `user` that these devices changed (keys
    /// uploaded, or deleted), when federation is enabled. Best effort: a failure is logged.
    pub(crate) fn announce_devices<'a>(
        &self,
        user: &ruma::UserId,
        devices: impl IntoIterator<Item = &'a ruma::DeviceId>,
        deleted: bool,
    ) {
        let Some(federation) = &self.federation else {
            return;
        };
        for device in devices {
            if let Err(e) = federation.device_changed(
                (&self.rooms, &self.store),
                user,
                device.as_str(),
                deleted,
            ) {
                tracing::warn!(%user, error = %e, "device list update not sent");
            }
        }
    }

    /// What the federation sender uses (`federation::sender`), when federation is enabled.
    pub(crate) fn federation_sender(&self) -> Option<crate::federation::sender::SenderView<'_>> {
        Some(crate::federation::sender::SenderView {
            federation: self.federation.as_deref()?,
            rooms: &self.rooms,
            store: &self.store,
            stream: &self.stream,
            notifier: &self.notifier,
        })
    }

    /// What the web chat uses (`webchat`), when it is enabled.
    pub(crate) fn chat(&self) -> Option<crate::webchat::Chat<'_>> {
        Some(crate::webchat::Chat {
            desk: self.desk(),
            receipts: &self.receipts,
            typing: &self.typing,
            stream: &self.stream,
            notifier: &self.notifier,
            web: self.webchat.as_ref()?,
        })
    }
}

impl crate::webchat::ChatServices for Services {
    fn chat(&self) -> Option<crate::webchat::Chat<'_>> {
        Services::chat(self)
    }
}

impl crate::search::SearchServices for Services {
    fn search_indexer(&self) -> crate::search::indexer::IndexerView<'_> {
        Services::search_indexer(self)
    }
}

impl crate::bot::BotServices for Services {
    fn desk(&self) -> crate::support::Desk<'_> {
        Services::desk(self)
    }

    fn stream(&self) -> &Stream {
        &self.stream
    }

    fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}
