//! The support desk: conversations, their index, tickets, notes, roles, the audit log and
//! metrics.
//!
//! Conversations are rooms carrying `io.charla.conversation`; this module keeps what the server
//! needs to find and measure them without scanning rooms. Changes to a conversation are always
//! state events sent by the support bot's user (see [`actions`]), whether an agent asked in the
//! room or through `/api/support/v1/`, so every client sees them and the room's history shows
//! who changed what. Only the desk's own changes count ([`trust`]): power in a room is no say
//! on the desk. Rooms the desk opens itself are desk-owned ([`desk`]); private notes live in a
//! staff-only room beside the conversation ([`notes`]), never in it.

pub mod access;
pub mod actions;
pub mod audit;
pub mod changes;
pub mod conversation;
pub mod deliveries;
pub mod desk;
pub mod escalation;
pub mod index;
pub mod metrics;
pub mod notes;
pub mod policy;
pub mod tickets;
pub mod trust;

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use ruma::{OwnedUserId, ServerName, UserId};

use crate::{config::SupportConfig, error::Result, ratelimit::RateLimiter, storage::Store};

pub use audit::{AuditEntry, AuditLog};
pub use conversation::{CONVERSATION_EVENT, Conversation, TICKET_EVENT};
pub use deliveries::{Deliveries, DeliveryStates};
pub use index::{ConversationIndex, ConversationRecord};
pub use tickets::{Ticket, TicketStore};

/// What a user may do on the desk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Agent,
    /// Customers and everyone else.
    None,
}

pub struct SupportService {
    pub config: SupportConfig,
    pub bot: OwnedUserId,
    pub index: ConversationIndex,
    pub tickets: TicketStore,
    pub audit: AuditLog,
    /// Delivery states of agents' messages, kept by a bridge in this process.
    pub deliveries: Deliveries,
    /// Serializes read-modify-write of conversation state and records: two agents adding a
    /// label at once must both be kept.
    pub changes: changes::Changes,
    /// Conversations each customer opens (per user), through the API or an invite of the bot.
    pub customer_creations: RateLimiter,
    /// When each agent was last given a conversation: round-robin order.
    last_assigned: Mutex<HashMap<OwnedUserId, u64>>,
}

impl SupportService {
    pub fn new(store: Store, config: SupportConfig, server_name: &ServerName) -> Result<Self> {
        let bot = UserId::parse(format!("@{}:{server_name}", config.bot_localpart))
            .map_err(|e| crate::error::Error::internal(format!("support.bot_localpart: {e}")))?;
        Ok(SupportService {
            index: ConversationIndex::new(store.clone()),
            tickets: TicketStore::new(store.clone(), config.first_ticket_number),
            audit: AuditLog::new(store),
            deliveries: Deliveries::default(),
            customer_creations: RateLimiter::new(
                f64::from(config.customer_conversations_per_hour) / 3600.0,
                config.customer_conversation_burst,
            ),
            bot,
            config,
            changes: changes::Changes::default(),
            last_assigned: Mutex::default(),
        })
    }

    pub fn role(&self, user: &UserId) -> Role {
        if self.config.admins.iter().any(|a| a == user) {
            Role::Admin
        } else if self.config.agents.iter().any(|a| a.user == user) {
            Role::Agent
        } else {
            Role::None
        }
    }

    /// Agents and admins: who may use commands and the agent API.
    pub fn is_staff(&self, user: &UserId) -> bool {
        self.role(user) != Role::None
    }

    /// An agent's capacity; `None` for users who are not agents.
    pub fn capacity(&self, user: &UserId) -> Option<u32> {
        self.config
            .agents
            .iter()
            .find(|a| a.user == user)
            .map(|a| a.capacity)
    }

    /// The agents in round-robin order: least recently assigned first, then config order.
    pub fn agents_in_turn(&self) -> Vec<OwnedUserId> {
        let last = self.last_assigned.lock();
        let mut agents: Vec<(usize, &OwnedUserId)> = self
            .config
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| (i, &a.user))
            .collect();
        agents.sort_by_key(|(i, u)| (last.get(*u).copied().unwrap_or(0), *i));
        agents.into_iter().map(|(_, u)| u.clone()).collect()
    }

    /// Records that `agent` was just given a conversation.
    pub fn mark_assigned(&self, agent: &UserId) {
        let mut last = self.last_assigned.lock();
        let next = last.values().max().copied().unwrap_or(0) + 1;
        last.insert(agent.to_owned(), next);
    }
}

impl SupportService {
    /// The power levels of a room created with the bot among its invitees: the bot gets
    /// moderator power (50) so it can keep `io.charla.conversation` and invite agents. A
    /// trusted private chat already gives invitees 100; an explicit level for the bot is kept.
    pub fn bot_power_override(
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
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
