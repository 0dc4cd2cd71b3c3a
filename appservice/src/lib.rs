//! A toolkit for Matrix application services (bridges and bots), for any homeserver that speaks
//! the Application Service API of Matrix v1.16 (Charla, Synapse, …).
//!
//! - [`Registration`]: the registration YAML, read, validated, generated and written as
//!   Synapse and mautrix do; [`NamespaceMatcher`] for namespace checks.
//! - [`server::router`]: the HTTP endpoints the homeserver calls (transactions, deduplicated
//!   durably; user and alias queries; ping), delivering typed ruma events to your [`Handler`].
//! - [`Client`] and [`Intent`]: the Client-Server API as any user of the namespace (register,
//!   profile, rooms, messages, state, reactions, redactions, media, receipts, typing), with
//!   typed errors and bounded retries.
//! - [`AppService`]: ties them together.
//!
//! See the crate's README (below) for an echo bot.
#![doc = include_str!("../README.md")]

pub mod client;
mod endpoint;
pub mod error;
pub mod events;
mod handler;
pub mod intent;
pub mod registration;
pub mod server;
mod thirdparty;
pub mod txn_store;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ruma::{OwnedServerName, ServerName};

pub use client::{Client, RetryPolicy};
pub use error::{ApiError, Error, HandlerError, RegistrationError};
pub use events::{EphemeralEvent, Transaction};
pub use handler::Handler;
pub use intent::{CreateRoom, InitialState, Intent, RoomPreset, RoomVisibility, SendOptions};
pub use registration::{Namespace, NamespaceMatcher, Namespaces, Registration};
pub use txn_store::TxnStore;

/// An appservice could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    #[error(transparent)]
    TxnStore(#[from] txn_store::TxnStoreError),
    #[error(transparent)]
    Client(#[from] Error),
}

/// Registration, homeserver client, handler and durable state of one appservice.
pub struct AppService<H> {
    registration: Registration,
    client: Client,
    handler: Arc<H>,
    txns: TxnStore,
}

/// Collects what an [`AppService`] needs; see [`AppService::builder`].
pub struct AppServiceBuilder {
    registration: Registration,
    homeserver: String,
    server_name: OwnedServerName,
    state_dir: PathBuf,
    retry: RetryPolicy,
}

impl AppServiceBuilder {
    /// Where durable state lives (the processed-transaction store). Default: `./appservice-state`.
    pub fn state_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.state_dir = dir.as_ref().to_owned();
        self
    }

    /// How the intent client retries (default: [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Builds with a handler that does not need the appservice.
    pub fn build<H: Handler>(self, handler: H) -> Result<AppService<H>, BuildError> {
        self.build_with(|_| handler)
    }

    /// Builds, making the handler from the parts it usually needs (the client, intents).
    pub fn build_with<H: Handler>(
        self,
        make_handler: impl FnOnce(&AppServiceParts) -> H,
    ) -> Result<AppService<H>, BuildError> {
        self.registration.validate()?;
        let client = Client::new(
            &self.homeserver,
            &self.registration.as_token,
            &self.server_name,
        )?
        .with_retry_policy(self.retry);
        let txns = TxnStore::open(self.state_dir.join("transactions"))?;
        let parts = AppServiceParts {
            registration: self.registration,
            client,
        };
        let handler = Arc::new(make_handler(&parts));
        Ok(AppService {
            registration: parts.registration,
            client: parts.client,
            handler,
            txns,
        })
    }
}

/// What a handler can be built from before the [`AppService`] exists.
pub struct AppServiceParts {
    registration: Registration,
    client: Client,
}

impl AppServiceParts {
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The intent of the appservice's own user (`sender_localpart`).
    pub fn bot(&self) -> Intent {
        let user_id = self.client.user_id(&self.registration.sender_localpart);
        // `build_with` validated the localpart and the server name is a valid one.
        self.client
            .intent(user_id.expect("validated sender_localpart"))
    }
}

impl AppService<()> {
    /// Starts building an appservice for `registration`, talking to the homeserver at
    /// `homeserver` whose server name is `server_name`.
    pub fn builder(
        registration: Registration,
        homeserver: &str,
        server_name: &ServerName,
    ) -> AppServiceBuilder {
        AppServiceBuilder {
            registration,
            homeserver: homeserver.to_owned(),
            server_name: server_name.to_owned(),
            state_dir: PathBuf::from("appservice-state"),
            retry: RetryPolicy::default(),
        }
    }
}

impl Handler for () {}

impl<H: Handler> AppService<H> {
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// The durable record of processed transactions (what a backup of its state must take).
    pub fn txn_store(&self) -> &TxnStore {
        &self.txns
    }

    /// The intent of the appservice's own user (`sender_localpart`).
    pub fn bot(&self) -> Intent {
        AppServiceParts {
            registration: self.registration.clone(),
            client: self.client.clone(),
        }
        .bot()
    }

    /// The intent of `@localpart:server_name`.
    pub fn intent(&self, localpart: &str) -> Result<Intent, Error> {
        Ok(self.client.intent(self.client.user_id(localpart)?))
    }

    /// The router of the endpoints the homeserver calls.
    pub fn router(&self) -> axum::Router {
        server::router(
            self.handler.clone(),
            self.registration.hs_token.clone(),
            self.txns.clone(),
        )
    }

    /// Serves the router on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        self.serve_until(listener, std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn serve_until(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        drop(self);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
