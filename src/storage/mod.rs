//! The homeserver's tables, over the `charla-storage` crate (`storage/`).
//!
//! Services see named [`Table`]s of byte keys and values, atomic multi-table [`Batch`]es and a
//! durability barrier ([`Store::durable`]); nothing outside the storage crate names sled. Keys
//! are built with [`keys::Key`]: big-endian integers and `0xFF`-separated strings (UTF-8 never
//! contains `0xFF`), so byte order is the order services range-scan in.
//!
//! The layer itself (one sled tree with a one-byte prefix per table, Charla's write-ahead log
//! with group commit, the overlay of writes sled does not have yet) lives in the crate, shared
//! with the appservice toolkit and the WhatsApp bridge; its documentation says why it is built
//! so. This module only declares the homeserver's table set and names the crate's types for it,
//! so services write `storage::{Store, Batch, Table}` as before.

pub(crate) use charla_storage::{Key, Result, StorageError, TableSet, WriteTicket, keys};

/// The homeserver's store: the tables below, in the folder `[storage] path`.
pub(crate) type Store = charla_storage::Store<Table>;

/// An atomic set of writes to the homeserver's tables.
pub type Batch = charla_storage::Batch<Table>;

/// Every table of the homeserver's store. Adding one is appending a variant here and to
/// [`Table::ALL`]: its place there is its key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Counters and singletons (stream position, signing key).
    Global,
    /// user id → account record.
    Users,
    /// access token → (user, device).
    Tokens,
    /// user, device → device record.
    Devices,
    /// user, room (empty for global), type → account data content.
    AccountData,
    /// user, filter id → filter definition.
    Filters,
    /// user, device, room, event type, txn id → event id, for idempotent sends.
    TxnIds,
    /// stream position → stored event.
    Events,
    /// event id → stream position.
    EventIds,
    /// room → room record.
    Rooms,
    /// room short id, stream position → (), the room's timeline in order.
    Timeline,
    /// room short id, event type, state key → stream position of the current state event.
    RoomState,
    /// room short id, event type, state key, stream position → (), every state change.
    StateHistory,
    /// user, room → membership and position, the rooms a user is in or was in.
    UserRooms,
    /// alias → room id.
    Aliases,
    /// room id → (), rooms in the public directory.
    PublicRooms,
    /// room short id, receipt type, user, thread → the user's current receipt.
    Receipts,
    /// room short id, stream position → a receipt change.
    ReceiptLog,
    /// user, app id, pushkey → pusher.
    Pushers,
    /// app id, pushkey, user → (), to find a pushkey's other users.
    PusherKeys,
    /// appservice id → its pusher's cursor and pending transaction.
    AppserviceState,
    /// parent position, rel_type, child position → child's event type, sender, annotation key.
    Relations,
    /// room short id, position of the thread's latest reply, root position → ().
    ThreadRoots,
    /// user, device → the device's uploaded identity keys (JSON).
    DeviceKeys,
    /// user, device, algorithm, key id → an unclaimed one-time key (JSON).
    OneTimeKeys,
    /// user, device, algorithm → the fallback key with its id and whether it was used.
    FallbackKeys,
    /// user, usage (`master`, `self_signing`, `user_signing`) → cross-signing key (JSON).
    CrossSigningKeys,
    /// target user, target key id, signer → signatures one user made on another's key.
    KeySignatures,
    /// stream position, user → (), users whose device list or cross-signing keys changed.
    DeviceListChanges,
    /// user, device, stream position → a to-device message waiting for the device.
    ToDeviceInbox,
    /// sender, sender device, txn id → (), `sendToDevice` transactions already handled.
    ToDeviceTxns,
    /// user, version → key backup version record.
    BackupVersions,
    /// user, version, room, session → backed-up session key (JSON).
    BackupKeys,
    /// media id → media record (uploader, content hash, type, name, size; or pending).
    Media,
    /// media id, width, height, method, animated → stored thumbnail.
    MediaThumbnails,
    /// uploader, media id → expiry, the async uploads created and not yet uploaded.
    MediaPending,
    /// room id → the support desk's record of a conversation (content, activity, counts).
    SupportConversations,
    /// facet, value, sort kind, sort time, room id → (): the conversation filters.
    SupportIndex,
    /// ticket number → ticket record.
    SupportTickets,
    /// facet, value, ticket number → (): ticket filters and idempotency of `!ticket`.
    SupportTicketIndex,
    /// time, sequence → an administrative action.
    SupportAudit,
    /// name → the support bot's durable state (its stream cursor, per-room markers).
    SupportState,
    /// cursor, or pusher (user, app id, pushkey) and sequence → the push gateway delivery's
    /// stream cursor and each pusher's queued notifications.
    PushGateway,
    /// user id → the desk role an administrator set (`support::roster`), over the config's.
    SupportRoles,
    /// appservice id → a registration added at runtime (its YAML), besides the config's files.
    AppserviceRegistrations,
    /// web chat session id → its record (`webchat::sessions`).
    WebchatSessions,
    /// customer, creation time, session id → (): a customer's sessions in order.
    WebchatCustomers,
    /// room id → the web chat session the room is the conversation of.
    WebchatRooms,
    /// name → the web chat feed's durable state (its stream cursor).
    WebchatState,
    /// event id → stored event, for events known outside the timeline: another server's room
    /// state received when joining, auth chains, soft-failed events.
    Outliers,
    /// room short id → the room's forward extremities (JSON list of event ids).
    Extremities,
    /// destination server, sequence → stream position of a PDU queued for it.
    FederationQueue,
    /// name → the federation sender's durable state (its stream cursor).
    FederationState,
    /// room short id, user → the stripped state another server sent with the user's invite.
    RemoteInvites,
    /// room short id, n → the id of the nth event back (0: the newest) of what another
    /// server's room held before this server joined it, fetched for clients paginating back.
    PreJoin,
    /// destination server, sequence → an EDU that must reach it across restarts (to-device
    /// messages, device list and signing key updates), until acknowledged.
    FederationEdus,
}

impl Table {
    const ALL: [Table; 56] = [
        Table::Global,
        Table::Users,
        Table::Tokens,
        Table::Devices,
        Table::AccountData,
        Table::Filters,
        Table::TxnIds,
        Table::Events,
        Table::EventIds,
        Table::Rooms,
        Table::Timeline,
        Table::RoomState,
        Table::StateHistory,
        Table::UserRooms,
        Table::Aliases,
        Table::PublicRooms,
        Table::Receipts,
        Table::ReceiptLog,
        Table::Pushers,
        Table::PusherKeys,
        Table::AppserviceState,
        Table::Relations,
        Table::ThreadRoots,
        Table::DeviceKeys,
        Table::OneTimeKeys,
        Table::FallbackKeys,
        Table::CrossSigningKeys,
        Table::KeySignatures,
        Table::DeviceListChanges,
        Table::ToDeviceInbox,
        Table::ToDeviceTxns,
        Table::BackupVersions,
        Table::BackupKeys,
        Table::Media,
        Table::MediaThumbnails,
        Table::MediaPending,
        Table::SupportConversations,
        Table::SupportIndex,
        Table::SupportTickets,
        Table::SupportTicketIndex,
        Table::SupportAudit,
        Table::SupportState,
        Table::PushGateway,
        Table::SupportRoles,
        Table::AppserviceRegistrations,
        Table::WebchatSessions,
        Table::WebchatCustomers,
        Table::WebchatRooms,
        Table::WebchatState,
        Table::Outliers,
        Table::Extremities,
        Table::FederationQueue,
        Table::FederationState,
        Table::RemoteInvites,
        Table::PreJoin,
        Table::FederationEdus,
    ];

    /// The table's name, for error messages and operators.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Global => "global",
            Table::Users => "users",
            Table::Tokens => "tokens",
            Table::Devices => "devices",
            Table::AccountData => "account_data",
            Table::Filters => "filters",
            Table::TxnIds => "txn_ids",
            Table::Events => "events",
            Table::EventIds => "event_ids",
            Table::Rooms => "rooms",
            Table::Timeline => "timeline",
            Table::RoomState => "room_state",
            Table::StateHistory => "state_history",
            Table::UserRooms => "user_rooms",
            Table::Aliases => "aliases",
            Table::PublicRooms => "public_rooms",
            Table::Receipts => "receipts",
            Table::ReceiptLog => "receipt_log",
            Table::Pushers => "pushers",
            Table::PusherKeys => "pusher_keys",
            Table::AppserviceState => "appservice_state",
            Table::Relations => "relations",
            Table::ThreadRoots => "thread_roots",
            Table::DeviceKeys => "device_keys",
            Table::OneTimeKeys => "one_time_keys",
            Table::FallbackKeys => "fallback_keys",
            Table::CrossSigningKeys => "cross_signing_keys",
            Table::KeySignatures => "key_signatures",
            Table::DeviceListChanges => "device_list_changes",
            Table::ToDeviceInbox => "to_device_inbox",
            Table::ToDeviceTxns => "to_device_txns",
            Table::BackupVersions => "backup_versions",
            Table::BackupKeys => "backup_keys",
            Table::Media => "media",
            Table::MediaThumbnails => "media_thumbnails",
            Table::MediaPending => "media_pending",
            Table::SupportConversations => "support_conversations",
            Table::SupportIndex => "support_index",
            Table::SupportTickets => "support_tickets",
            Table::SupportTicketIndex => "support_ticket_index",
            Table::SupportAudit => "support_audit",
            Table::SupportState => "support_state",
            Table::PushGateway => "push_gateway",
            Table::SupportRoles => "support_roles",
            Table::AppserviceRegistrations => "appservice_registrations",
            Table::WebchatSessions => "webchat_sessions",
            Table::WebchatCustomers => "webchat_customers",
            Table::WebchatRooms => "webchat_rooms",
            Table::WebchatState => "webchat_state",
            Table::Outliers => "outliers",
            Table::Extremities => "extremities",
            Table::FederationQueue => "federation_queue",
            Table::FederationState => "federation_state",
            Table::RemoteInvites => "remote_invites",
            Table::PreJoin => "pre_join",
            Table::FederationEdus => "federation_edus",
        }
    }
}

impl TableSet for Table {
    const STORE: &'static str = "charla";
    const ALL: &'static [Self] = &Table::ALL;

    fn name(self) -> &'static str {
        Table::name(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table's prefix is its place in `ALL`; data on disk stays readable only while that is
    /// the enum's order, which new tables extend at the end.
    #[test]
    fn every_table_keeps_the_prefix_of_its_place() {
        for (place, table) in Table::ALL.iter().enumerate() {
            assert_eq!(
                *table as usize, place,
                "{table:?} is out of place in Table::ALL"
            );
        }
        assert_eq!(Table::ALL[0], Table::Global);
        assert_eq!(Table::ALL[7], Table::Events);
        assert_eq!(Table::ALL[42], Table::PushGateway);
    }
}
