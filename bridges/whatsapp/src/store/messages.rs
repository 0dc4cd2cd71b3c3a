//! WhatsApp messages and their Matrix events: the links both ways (`messages`, `events`), each
//! portal's latest customer message (`last_inbound`), the delivery state of agents' messages
//! (`deliveries`), the statuses that came before their message was linked
//! (`early_statuses`), and reactions (`reactions`).

use charla_storage::{Batch, Slice};
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};

use super::{Result, Store, Table, json};
use crate::cloud::Status;

/// The key prefix of a message's early statuses: the wamid and a separator no wamid contains.
fn early_prefix(wamid: &str) -> Vec<u8> {
    let mut key = wamid.as_bytes().to_vec();
    key.push(0);
    key
}

/// Where statuses kept for a message are, to delete them once applied
/// ([`Store::statuses_applied`]).
#[derive(Debug, Clone)]
pub struct EarlyStatusKey(Slice);

/// A WhatsApp message and the Matrix event it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageLink {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    /// From the customer (true) or from an agent (false).
    pub inbound: bool,
    pub portal: String,
}

/// The delivery state of an agent's message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub wamid: Option<String>,
    /// `queued`, `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    /// Milliseconds since the epoch of the last change.
    pub updated_ts: u64,
    /// WhatsApp's error code and reason, for `failed`.
    pub error_code: Option<i64>,
    pub error: Option<String>,
}

impl Delivery {
    /// An agent's message not sent (or not known to be sent) yet.
    pub(crate) fn queued(room_id: &RoomId, event_id: &EventId, wamid: Option<&str>) -> Self {
        Self {
            room_id: room_id.to_owned(),
            event_id: event_id.to_owned(),
            wamid: wamid.map(str::to_owned),
            status: "queued".into(),
            updated_ts: crate::now_ms(),
            error_code: None,
            error: None,
        }
    }
}

impl Store {
    pub fn message(&self, wamid: &str) -> Result<Option<MessageLink>> {
        self.get(Table::Messages, wamid)
    }

    pub(crate) fn wamid_of(&self, event_id: &EventId) -> Result<Option<String>> {
        self.get_string(Table::Events, event_id.as_str())
    }

    /// Links a customer's message to its event. Not waited for: the inbox removal of the
    /// webhook comes after it in the log, so a crash loses the link only with the removal, and
    /// the replay posts the same events again (wamid-derived txnIds) and links them.
    pub(crate) fn link_message(&self, wamid: &str, link: &MessageLink) -> Result<()> {
        let mut batch = Batch::new();
        Self::link_into(&mut batch, wamid, link)?;
        let _ = self.db.write(batch)?;
        Ok(())
    }

    pub(crate) fn link_into(
        batch: &mut Batch<Table>,
        wamid: &str,
        link: &MessageLink,
    ) -> Result<()> {
        batch.put(Table::Messages, wamid.as_bytes(), json(link)?);
        batch.put(Table::Events, link.event_id.as_bytes(), wamid.as_bytes());
        if link.inbound {
            batch.put(Table::LastInbound, link.portal.as_bytes(), wamid.as_bytes());
        }
        Ok(())
    }

    /// The customer's latest message in a portal.
    pub(crate) fn last_inbound(&self, portal: &str) -> Result<Option<String>> {
        self.get_string(Table::LastInbound, portal)
    }

    // --- deliveries ------------------------------------------------------------------------

    pub(crate) fn delivery(&self, event_id: &EventId) -> Result<Option<Delivery>> {
        self.get(Table::Deliveries, event_id.as_str())
    }

    pub(crate) fn delivery_into(batch: &mut Batch<Table>, delivery: &Delivery) -> Result<()> {
        batch.put(
            Table::Deliveries,
            delivery.event_id.as_str(),
            json(delivery)?,
        );
        Ok(())
    }

    /// Keeps statuses of one message that is not linked yet, under a key of their own: a
    /// concurrent reader applying the ones kept before deletes only those it read.
    pub(crate) fn keep_early_statuses(&self, statuses: &[Status]) -> Result<()> {
        let Some(wamid) = statuses.first().map(|s| s.id.as_str()) else {
            return Ok(());
        };
        let mut key = early_prefix(wamid);
        key.extend_from_slice(&self.next_seq()?);
        self.put(Table::EarlyStatuses, key, &statuses)
    }

    /// The statuses kept for `wamid`, oldest first, with the keys to delete once applied
    /// ([`Store::statuses_applied`]). Also reads the one list per wamid of older versions.
    pub(crate) fn early_statuses(&self, wamid: &str) -> Result<(Vec<EarlyStatusKey>, Vec<Status>)> {
        let (mut keys, mut statuses) = (Vec::new(), Vec::new());
        if let Some(list) = self.db.get(Table::EarlyStatuses, wamid.as_bytes())? {
            statuses.extend(serde_json::from_slice::<Vec<Status>>(&list)?);
            keys.push(EarlyStatusKey(Slice::from(wamid.as_bytes())));
        }
        for item in self
            .db
            .scan_prefix(Table::EarlyStatuses, &early_prefix(wamid))
        {
            let (key, list) = item?;
            statuses.extend(serde_json::from_slice::<Vec<Status>>(&list)?);
            keys.push(EarlyStatusKey(key));
        }
        Ok((keys, statuses))
    }

    /// Saves the state statuses led to (if it changed) and deletes the early statuses among
    /// them, in one write: a crash in between cannot lose statuses that were not applied.
    pub(crate) fn statuses_applied(
        &self,
        delivery: Option<&Delivery>,
        early: &[EarlyStatusKey],
    ) -> Result<()> {
        let mut batch = Batch::new();
        if let Some(delivery) = delivery {
            Self::delivery_into(&mut batch, delivery)?;
        }
        for key in early {
            batch.delete(Table::EarlyStatuses, &*key.0);
        }
        if !batch.is_empty() {
            let _ = self.db.write(batch)?;
        }
        Ok(())
    }

    // --- reactions -------------------------------------------------------------------------

    /// The Matrix reaction event of a customer's reaction to `target` (a wamid).
    pub(crate) fn customer_reaction(
        &self,
        portal: &str,
        target: &str,
    ) -> Result<Option<OwnedEventId>> {
        self.get(Table::Reactions, format!("in\0{portal}\0{target}"))
    }

    pub(crate) fn set_customer_reaction(
        &self,
        portal: &str,
        target: &str,
        event: Option<&OwnedEventId>,
    ) -> Result<()> {
        let key = format!("in\0{portal}\0{target}");
        match event {
            Some(event) => self.put(Table::Reactions, key, event),
            None => {
                let mut batch = Batch::new();
                batch.delete(Table::Reactions, key);
                let _ = self.db.write(batch)?;
                Ok(())
            }
        }
    }

    /// The wamid an agent's reaction event reacted to.
    pub(crate) fn agent_reaction_target(&self, reaction_event: &EventId) -> Result<Option<String>> {
        self.get(Table::Reactions, format!("out\0{reaction_event}"))
    }

    pub(crate) fn set_agent_reaction_target(
        &self,
        reaction_event: &EventId,
        target: &str,
    ) -> Result<()> {
        self.put(Table::Reactions, format!("out\0{reaction_event}"), &target)
    }
}
