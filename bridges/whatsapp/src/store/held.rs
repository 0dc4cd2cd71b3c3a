//! What the inbox could not bring into Matrix yet: a customer's held items (`held`), by portal
//! key and arrival number, and the dead letters set aside for an operator (`dead_letters`).
//! The inbox's `backlog` module says when they are retried and set aside.

use std::collections::HashMap;

use charla_storage::{Batch, Slice};
use serde::{Deserialize, Serialize};

use super::{Result, Seq, Store, Table, json};
use crate::cloud::{Customer, InboundMessage, Status};

/// Where a held item is, to release it once it went in ([`Store::release_held`]).
#[derive(Debug, Clone)]
pub struct HeldKey(Slice);

/// One thing held for a customer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeldItem {
    /// A customer's message, with the customer as its webhook named them.
    Message {
        customer: Customer,
        message: Box<InboundMessage>,
    },
    /// Statuses of one agent message in the customer's portal.
    Statuses { statuses: Vec<Status> },
}

impl HeldItem {
    /// The WhatsApp message id it is about.
    pub fn wamid(&self) -> &str {
        match self {
            HeldItem::Message { message, .. } => &message.id,
            HeldItem::Statuses { statuses } => statuses.first().map_or("", |s| &s.id),
        }
    }
}

/// A message set aside: what it was, for whom, and why the homeserver would not take it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The portal key of the customer.
    pub portal: String,
    pub item: HeldItem,
    /// The homeserver's last answer.
    pub error: String,
    pub attempts: u32,
    /// Milliseconds since the epoch when it was set aside.
    pub ts: u64,
}

/// The key of a held item: its portal key, a separator no portal key contains, its number.
fn held_key(lane: &str, seq: &Seq) -> Vec<u8> {
    let mut key = held_prefix(lane);
    key.extend_from_slice(seq);
    key
}

fn held_prefix(lane: &str) -> Vec<u8> {
    let mut key = lane.as_bytes().to_vec();
    key.push(0);
    key
}

impl Store {
    /// Adds `item` at the end of `lane`'s held items, in `batch`.
    pub(crate) fn hold(&self, batch: &mut Batch<Table>, lane: &str, item: &HeldItem) -> Result<()> {
        batch.put(Table::Held, held_key(lane, &self.next_seq()?), json(item)?);
        Ok(())
    }

    /// Up to `limit` of `lane`'s held items, oldest first, with their keys, and whether more
    /// are held.
    pub(crate) fn held_items(
        &self,
        lane: &str,
        limit: usize,
    ) -> Result<(Vec<(HeldKey, HeldItem)>, bool)> {
        let mut items = Vec::new();
        for entry in self.db.scan_prefix(Table::Held, &held_prefix(lane)) {
            if items.len() == limit {
                return Ok((items, true));
            }
            let (key, value) = entry?;
            items.push((HeldKey(key), serde_json::from_slice(&value)?));
        }
        Ok((items, false))
    }

    /// How many items each customer has held (read once, at start).
    pub(crate) fn held_lanes(&self) -> Result<HashMap<String, usize>> {
        let mut lanes: HashMap<String, usize> = HashMap::new();
        for entry in self.db.scan_prefix(Table::Held, b"") {
            let (key, _) = entry?;
            let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
            *lanes
                .entry(String::from_utf8_lossy(&key[..end]).into_owned())
                .or_default() += 1;
        }
        Ok(lanes)
    }

    /// Sets `letter` aside, in `batch`.
    pub(crate) fn dead_letter(&self, batch: &mut Batch<Table>, letter: &DeadLetter) -> Result<()> {
        batch.put(Table::DeadLetters, self.next_seq()?, json(letter)?);
        Ok(())
    }

    /// Every message set aside, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let mut letters = Vec::new();
        for entry in self.db.scan_prefix(Table::DeadLetters, b"") {
            let (_, value) = entry?;
            letters.push(serde_json::from_slice(&value)?);
        }
        Ok(letters)
    }

    /// Adds to `batch` the removal of a held item that went in (or was set aside).
    pub(crate) fn release_held(&self, batch: &mut Batch<Table>, key: &HeldKey) {
        batch.delete(Table::Held, &*key.0);
    }

    pub(crate) fn dead_letter_count(&self) -> u64 {
        self.db.scan_prefix(Table::DeadLetters, b"").count() as u64
    }
}
