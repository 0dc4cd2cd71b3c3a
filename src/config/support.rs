//! `[support]`: the support desk's roles, the bot's texts, FAQ, canned templates and hours.
//!
//! The roles here are the desk's bootstrap: an operator sees who is an agent in one file.
//! Roles set at runtime (`charla admin user set-role`) are kept in the store and override these
//! for their user (`support::roster`).

use ruma::OwnedUserId;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupportConfig {
    /// Runs the support bot. Without it nothing becomes a conversation on its own.
    pub enabled: bool,
    /// Localpart of the bot's own user (`@support:<server_name>`).
    pub bot_localpart: String,
    /// Display name of the bot's user.
    pub bot_displayname: String,
    /// Users who may read every conversation, use every command and the audit log.
    pub admins: Vec<OwnedUserId>,
    /// Agents, with how many open conversations each may hold at once.
    pub agents: Vec<AgentConfig>,
    /// Whether agents see (and may take) the unassigned queue, besides their own conversations.
    pub agents_see_queue: bool,
    /// First message of the bot in a new conversation. Empty: no greeting.
    pub greeting: String,
    /// Frequent questions the bot answers on its own.
    pub faq: Vec<FaqEntry>,
    /// How close (0..1) a customer message must be to a FAQ question for the bot to answer.
    pub faq_threshold: f64,
    /// Canned responses for `!template NAME`.
    pub templates: Vec<TemplateConfig>,
    /// When the desk is staffed; absent: always.
    pub business_hours: Option<BusinessHours>,
    /// Sent at most once per conversation and day when a customer writes outside the hours.
    pub out_of_office: String,
    /// Tell the customer (through their channel) when one of their tickets is resolved.
    pub notify_customer_on_resolve: bool,
    /// The first ticket number handed out.
    pub first_ticket_number: u64,
    /// Appservices (by registration id) that open conversations for the desk, such as the
    /// WhatsApp bridge: the desk's state their own user (`sender_localpart`) sets counts as the
    /// desk's. Their other users (puppets) are customers.
    pub desk_appservices: Vec<String>,
    /// Conversations a customer may open per hour (through the API or by inviting the bot into
    /// a room it cannot run), after a burst of `customer_conversation_burst`.
    pub customer_conversations_per_hour: u32,
    pub customer_conversation_burst: u32,
}

impl Default for SupportConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bot_localpart: "support".into(),
            bot_displayname: "Support".into(),
            admins: Vec::new(),
            agents: Vec::new(),
            agents_see_queue: true,
            greeting: "Hello! Thanks for writing to us; an agent will be with you shortly.".into(),
            faq: Vec::new(),
            faq_threshold: 0.6,
            templates: Vec::new(),
            business_hours: None,
            out_of_office: "We are closed right now; we will answer as soon as we are back.".into(),
            notify_customer_on_resolve: true,
            first_ticket_number: 1,
            desk_appservices: vec!["whatsapp".into(), "email".into()],
            customer_conversations_per_hour: 20,
            customer_conversation_burst: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub user: OwnedUserId,
    /// Open (and pending) conversations the agent may hold at once.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
}

/// An agent's capacity when none is given (here or in `user set-role`).
pub(crate) fn default_capacity() -> u32 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaqEntry {
    /// Phrasings of the question (any language); matched accent- and case-insensitively.
    pub questions: Vec<String>,
    /// Words that, when present, point to this answer even if phrased differently.
    #[serde(default)]
    pub keywords: Vec<String>,
    pub answer: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub name: String,
    /// Text with `{contact.name}`, `{agent.name}` and `{ticket}` placeholders.
    pub text: String,
}

/// Opening hours in a named time zone, so summer time moves them with the local clock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// An IANA time zone name ("Europe/Madrid", "America/Bogota"; "UTC" by default), read
    /// from the system's zoneinfo, or from the copy of the tz database built into the binary
    /// where the system has none (containers).
    #[serde(default = "utc", deserialize_with = "time_zone")]
    pub time_zone: jiff::tz::TimeZone,
    /// Open days, ISO numbering: 1 = Monday … 7 = Sunday.
    #[serde(default = "weekdays")]
    pub days: Vec<u8>,
    /// Local opening time, "HH:MM".
    pub open: String,
    /// Local closing time, "HH:MM".
    pub close: String,
}

fn utc() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::UTC
}

fn time_zone<'de, D: serde::Deserializer<'de>>(d: D) -> Result<jiff::tz::TimeZone, D::Error> {
    let name = String::deserialize(d)?;
    jiff::tz::TimeZone::get(&name).map_err(|e| {
        serde::de::Error::custom(format!(
            "unknown time zone {name:?} (an IANA name like \"Europe/Madrid\"): {e}"
        ))
    })
}

fn weekdays() -> Vec<u8> {
    vec![1, 2, 3, 4, 5]
}

impl SupportConfig {
    /// What the config must satisfy beyond its shape.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.faq_threshold) {
            return Err("support.faq_threshold must be between 0 and 1".into());
        }
        if let Some(h) = &self.business_hours {
            parse_hhmm(&h.open).ok_or("support.business_hours.open must be HH:MM")?;
            parse_hhmm(&h.close).ok_or("support.business_hours.close must be HH:MM")?;
            if h.days.iter().any(|d| !(1..=7).contains(d)) {
                return Err("support.business_hours.days are 1 (Monday) to 7 (Sunday)".into());
            }
        }
        for t in &self.templates {
            if t.name.is_empty() || t.name.contains(char::is_whitespace) {
                return Err(format!("support.templates: bad name {:?}", t.name));
            }
        }
        if self.customer_conversations_per_hour == 0 || self.customer_conversation_burst == 0 {
            return Err(
                "support.customer_conversations_per_hour and customer_conversation_burst must be \
                 positive"
                    .into(),
            );
        }
        for f in &self.faq {
            if f.questions.is_empty() && f.keywords.is_empty() {
                return Err("support.faq entries need questions or keywords".into());
            }
        }
        Ok(())
    }
}

/// Minutes after midnight of "HH:MM".
pub(crate) fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}
