//! The support desk: conversations, their index, tickets, notes, roles, the audit log and
//! metrics.
//!
//! Conversations are rooms carrying `io.charla.conversation`; this module keeps what the server
//! needs to find and measure them without scanning rooms. Changes to a conversation are always
//! state events sent by the support bot's user (see [`actions`]), whether an agent asked in the
//! room or through `/api/support/v1/`, so every client sees them and the room's history shows
//! who changed what. Only the desk's own changes count ([`trust`]): power in a room is no say
//! on the desk. Rooms the desk opens itself are desk-owned ([`owned_rooms`]); private notes live
//! in a staff-only room beside the conversation ([`notes`]), never in it.
//!
//! The desk's code reaches the rest of the server through a [`Desk`]: the services it uses and
//! nothing else, built by `Services::desk`.

pub(crate) mod access;
pub(crate) mod actions;
pub(crate) mod actor;
pub(crate) mod agents;
pub(crate) mod audit;
pub(crate) mod changes;
pub(crate) mod conversation;
pub(crate) mod deliveries;
pub(crate) mod escalation;
pub(crate) mod export;
pub(crate) mod filter;
pub(crate) mod index;
pub(crate) mod metrics;
pub(crate) mod notes;
pub(crate) mod owned_rooms;
pub(crate) mod policy;
pub(crate) mod queries;
pub(crate) mod roster;
pub(crate) mod say;
pub(crate) mod tickets;
pub(crate) mod trust;

use std::time::{SystemTime, UNIX_EPOCH};

use ruma::{OwnedUserId, ServerName, UserId};

use crate::{
    appservice::AppServices, config::SupportConfig, ephemeral::PresenceService, error::Result,
    ratelimit::RateLimiter, rooms::RoomService, storage::Store, users::UserService,
};

pub(crate) use conversation::{CONVERSATION_EVENT, Conversation, TICKET_EVENT};
pub(crate) use deliveries::{Deliveries, DeliveryStates};
pub(crate) use index::{ConversationIndex, ConversationRecord};
pub(crate) use tickets::{Ticket, TicketStore};

/// What the desk uses of the server: its own service and the few others it reads or acts
/// through. Built per use by `Services::desk` (a handful of references, nothing allocated),
/// so no code of the desk sees the whole server.
#[derive(Clone, Copy)]
pub(crate) struct Desk<'a> {
    pub(crate) support: &'a SupportService,
    /// The bot's sends, rooms the desk creates, state and timelines it reads.
    pub(crate) rooms: &'a RoomService,
    /// Display names, server admins ([`trust`]), the bot's own account.
    pub(crate) users: &'a UserService,
    /// Who is online, for assignment.
    pub(crate) presence: &'a PresenceService,
    /// The bridges whose bot counts as the desk ([`trust`]).
    pub(crate) appservices: &'a AppServices,
    /// The desk's durable writes: audit entries, ids of rooms it is about to create.
    pub(crate) store: &'a Store,
}

impl<'a> Desk<'a> {
    pub(crate) fn config(&self) -> &'a SupportConfig {
        &self.support.config
    }

    /// The support bot's user.
    pub(crate) fn bot(&self) -> &'a UserId {
        &self.support.bot
    }
}

/// What a user may do on the desk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Admin,
    Agent,
    /// Customers and everyone else.
    None,
}

pub struct SupportService {
    pub(crate) config: SupportConfig,
    pub(crate) bot: OwnedUserId,
    pub(crate) index: ConversationIndex,
    pub(crate) tickets: TicketStore,
    pub(crate) audit: audit::AuditLog,
    /// Delivery states of agents' messages, kept by a bridge in this process.
    pub(crate) deliveries: Deliveries,
    /// Serializes read-modify-write of conversation state and records: two agents adding a
    /// label at once must both be kept.
    pub(crate) changes: changes::Changes,
    /// Conversations each customer opens (per user), through the API or an invite of the bot.
    pub(crate) customer_creations: RateLimiter,
    /// The agents' turns for automatic assignment.
    pub(crate) turns: agents::RoundRobin,
    /// Who is an admin or an agent: the config's roles and those set at runtime.
    pub(crate) roster: roster::Roster,
}

impl SupportService {
    pub(crate) fn new(
        store: Store,
        config: SupportConfig,
        server_name: &ServerName,
    ) -> Result<Self> {
        let bot = UserId::parse(format!("@{}:{server_name}", config.bot_localpart))
            .map_err(|e| crate::error::Error::internal(format!("support.bot_localpart: {e}")))?;
        Ok(SupportService {
            roster: roster::Roster::open(store.clone(), &config)?,
            index: ConversationIndex::new(store.clone()),
            tickets: TicketStore::new(store.clone(), config.first_ticket_number),
            audit: audit::AuditLog::new(store),
            deliveries: Deliveries::default(),
            customer_creations: RateLimiter::new(
                f64::from(config.customer_conversations_per_hour) / 3600.0,
                config.customer_conversation_burst,
            ),
            bot,
            config,
            changes: changes::Changes::default(),
            turns: agents::RoundRobin::default(),
        })
    }

    /// The user's role on the desk now ([`roster`]).
    pub(crate) fn role(&self, user: &UserId) -> Role {
        self.roster.staff().role(user)
    }

    /// Agents and admins: who may use commands and the agent API.
    pub(crate) fn is_staff(&self, user: &UserId) -> bool {
        self.role(user) != Role::None
    }

    /// An agent's capacity; `None` for users who are not agents.
    pub(crate) fn capacity(&self, user: &UserId) -> Option<u32> {
        self.roster.staff().capacity(user)
    }

    /// The power levels of a room created with the bot among its invitees: the bot gets
    /// moderator power (50) so it can keep `io.charla.conversation` and invite agents. A
    /// trusted private chat already gives invitees 100; an explicit level for the bot is kept.
    pub(crate) fn bot_power_override(
        &self,
        creator: &UserId,
        invite: &[OwnedUserId],
        trusted: bool,
        requested: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        if !self.config.enabled || trusted || !invite.contains(&self.bot) {
            return requested;
        }
        let mut content = requested.unwrap_or_default();
        let users = content
            .entry("users")
            .or_insert_with(|| serde_json::json!({ creator.as_str(): 100 }));
        if let Some(users) = users.as_object_mut() {
            users
                .entry(self.bot.as_str())
                .or_insert(serde_json::json!(50));
        }
        Some(content)
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
