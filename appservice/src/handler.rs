//! [`Handler`]: what a bridge or bot implements to receive what the homeserver pushes, and what
//! the router (`server.rs`) calls.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use ruma::events::{AnyTimelineEvent, AnyToDeviceEvent};
use ruma::serde::Raw;
use ruma::thirdparty::{Location, Protocol, User};
use ruma::{RoomAliasId, UserId};

use crate::error::HandlerError;
use crate::events::{EphemeralEvent, Transaction};

/// What a bridge or bot implements to receive what the homeserver pushes. Every method has a
/// default, so a bot overrides only what it needs. Transactions are handled one at a time;
/// queries and pings may run while a transaction is being handled.
pub trait Handler: Send + Sync + 'static {
    /// A new transaction. The default hands each timeline event to [`Handler::on_event`] in
    /// order, then each EDU to [`Handler::on_ephemeral`], then each to-device message to
    /// [`Handler::on_to_device`], and stops at the first error (the whole transaction is then
    /// redelivered, so handlers should tolerate seeing its first events again).
    fn on_transaction(
        &self,
        txn: &Transaction,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            for raw in &txn.events {
                match raw.deserialize() {
                    Ok(event) => self.on_event(event, raw).await?,
                    Err(error) => self.on_invalid_event(raw, error).await?,
                }
            }
            for raw in &txn.ephemeral {
                match raw.deserialize() {
                    Ok(edu) => self.on_ephemeral(edu).await?,
                    Err(error) => {
                        tracing::warn!(txn_id = %txn.id, %error, "skipping an EDU that does not parse")
                    }
                }
            }
            for raw in &txn.to_device {
                self.on_to_device(raw).await?;
            }
            Ok(())
        }
    }

    /// One timeline event, typed; `raw` has every field, also those ruma does not model.
    fn on_event(
        &self,
        event: AnyTimelineEvent,
        raw: &Raw<AnyTimelineEvent>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (event, raw);
        async { Ok(()) }
    }

    /// A timeline event that does not deserialize (e.g. a known type with malformed content).
    /// The default logs and skips it: retrying would not make it parse.
    fn on_invalid_event(
        &self,
        raw: &Raw<AnyTimelineEvent>,
        error: serde_json::Error,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let event_id = raw.get_field::<String>("event_id").ok().flatten();
        tracing::warn!(?event_id, %error, "skipping a timeline event that does not parse");
        async { Ok(()) }
    }

    /// One EDU (receipt, typing or presence).
    fn on_ephemeral(
        &self,
        edu: EphemeralEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = edu;
        async { Ok(()) }
    }

    /// One to-device message (MSC2409); `to_user_id` and `to_device_id` are fields of `raw`.
    fn on_to_device(
        &self,
        raw: &Raw<AnyToDeviceEvent>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = raw;
        async { Ok(()) }
    }

    /// The homeserver asks whether `user_id` (in our namespace) exists. Return `true` after
    /// creating it (e.g. with [`crate::Intent::ensure_registered`]); `false` answers 404.
    fn query_user(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        let _ = user_id;
        async { Ok(false) }
    }

    /// The homeserver asks whether `alias` exists. Return `true` after creating the room with
    /// that alias; `false` answers 404.
    fn query_room_alias(
        &self,
        alias: &RoomAliasId,
    ) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        let _ = alias;
        async { Ok(false) }
    }

    /// A ping from the homeserver, with the `transaction_id` the appservice gave to
    /// `POST /_matrix/client/v1/appservice/{id}/ping`, if any.
    fn on_ping(&self, transaction_id: Option<&str>) -> impl Future<Output = ()> + Send {
        let _ = transaction_id;
        async {}
    }

    /// The metadata of a third-party `protocol` this bridge serves (listed in its
    /// registration's `protocols`); `None` answers 404.
    fn thirdparty_protocol(
        &self,
        protocol: &str,
    ) -> impl Future<Output = Result<Option<Protocol>, HandlerError>> + Send {
        let _ = protocol;
        async { Ok(None) }
    }

    /// Third-party users matching `fields` on `protocol`, or with `protocol` `None` the ones a
    /// Matrix user stands for (`fields` then holds just `userid`). Empty answers 404.
    fn thirdparty_users(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<User>, HandlerError>> + Send {
        let _ = (protocol, fields);
        async { Ok(Vec::new()) }
    }

    /// Third-party locations (portal rooms) matching `fields` on `protocol`, or with `protocol`
    /// `None` the ones a room alias bridges to (`fields` then holds just `alias`). Empty
    /// answers 404.
    fn thirdparty_locations(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Location>, HandlerError>> + Send {
        let _ = (protocol, fields);
        async { Ok(Vec::new()) }
    }
}

/// A shared handler is a handler, so a bridge can keep an `Arc` to the state its handler
/// updates.
impl<H: Handler> Handler for Arc<H> {
    fn on_transaction(
        &self,
        txn: &Transaction,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).on_transaction(txn)
    }

    fn query_user(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        (**self).query_user(user_id)
    }

    fn query_room_alias(
        &self,
        alias: &RoomAliasId,
    ) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        (**self).query_room_alias(alias)
    }

    fn on_ping(&self, transaction_id: Option<&str>) -> impl Future<Output = ()> + Send {
        (**self).on_ping(transaction_id)
    }

    fn thirdparty_protocol(
        &self,
        protocol: &str,
    ) -> impl Future<Output = Result<Option<Protocol>, HandlerError>> + Send {
        (**self).thirdparty_protocol(protocol)
    }

    fn thirdparty_users(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<User>, HandlerError>> + Send {
        (**self).thirdparty_users(protocol, fields)
    }

    fn thirdparty_locations(
        &self,
        protocol: Option<&str>,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Location>, HandlerError>> + Send {
        (**self).thirdparty_locations(protocol, fields)
    }
}
