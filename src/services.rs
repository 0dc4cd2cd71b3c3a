//! Every service of a running server, built once from the config and shared by handlers.
//!
//! Passed explicitly (axum state) rather than held in a global, so tests can run several
//! servers in one process.

use std::sync::Arc;

use crate::{
    config::Config,
    error::Result,
    events::SigningKey,
    media::{FileStore, MediaService},
    ratelimit::RateLimiter,
    rooms::RoomService,
    storage::Store,
    stream::Stream,
    sync::{Notifier, SyncService},
    users::{UserService, uiaa::Uiaa},
};

pub struct Services {
    pub config: Config,
    pub store: Store,
    pub stream: Arc<Stream>,
    pub notifier: Arc<Notifier>,
    pub key: Arc<SigningKey>,
    pub users: UserService,
    pub rooms: RoomService,
    pub sync: SyncService,
    pub media: MediaService,
    pub uiaa: Uiaa,
    pub send_limiter: RateLimiter,
    pub login_limiter: RateLimiter,
    pub nonces: crate::api::synapse_admin::Nonces,
}

impl Services {
    /// Opens the store and builds the services. Must run inside a tokio runtime.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.storage.path).map_err(|e| {
            crate::error::Error::internal(format!("cannot create data folder: {e}"))
        })?;
        let store = Store::open(&config.storage.path, config.storage.cache_capacity_mb)?;
        let stream = Arc::new(Stream::open(store.clone())?);
        let notifier = Arc::new(Notifier::default());
        let key = Arc::new(SigningKey::load_or_create(&store, config.server_name.clone()).await?);
        let users = UserService::new(
            store.clone(),
            stream.clone(),
            notifier.clone(),
            config.server_name.clone(),
        );
        let rooms = RoomService::new(
            store.clone(),
            stream.clone(),
            notifier.clone(),
            key.clone(),
            config.rooms.default_version.clone(),
        );
        let sync = SyncService::new(stream.clone(), notifier.clone());
        let files = FileStore::open(config.media_path())
            .map_err(|e| crate::error::Error::internal(format!("cannot open media folder: {e}")))?;
        let media = MediaService::open(
            store.clone(),
            files,
            config.server_name.clone(),
            config.media.clone(),
        );
        let limits = &config.limits;
        Ok(Arc::new(Services {
            send_limiter: RateLimiter::new(limits.send_per_second, limits.send_burst),
            login_limiter: RateLimiter::new(limits.login_per_second, limits.login_burst),
            config,
            store,
            stream,
            notifier,
            key,
            users,
            rooms,
            sync,
            media,
            uiaa: Uiaa::default(),
            nonces: Default::default(),
        }))
    }
}
