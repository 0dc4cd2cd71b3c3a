//! One customer's work in an inbox round (a lane), and the retry state of the customers whose
//! messages the homeserver refused (`Waiting`).
//!
//! A lane goes through its held items (when due) and then the round's new ones, in order, and
//! stops at the first refusal: that item and everything after it stay held (the new ones are
//! added to the held table by the round's write), so a customer's messages reach the portal in
//! the order they were written, or not yet. A refusal of what the homeserver can never accept
//! counts attempts instead, and after [`DEAD_LETTER_AFTER`] sets the item aside and goes on.

use std::collections::HashMap;
use std::time::Duration;

use appservice::HandlerError;
use tokio::time::Instant;

use crate::backlog::{Backlog, DEAD_LETTER_AFTER};
use crate::bridge::Bridge;
use crate::cloud::{Customer, InboundMessage};
use crate::failure::{Failure, hint};
use crate::notices::Notice;
use crate::store::{DeadLetter, HeldItem, HeldKey, Portal};

/// One customer's work in a round.
pub(crate) struct Lane {
    pub key: String,
    /// The customer as the latest of their messages names them (for the portal's name).
    customer: Option<Customer>,
    /// Held items to try again, with their keys in the held table.
    held: Vec<(HeldKey, HeldItem)>,
    /// The round's new items.
    fresh: Vec<HeldItem>,
    /// Failed attempts so far at the first held item.
    attempts: u32,
    /// More items are held than were taken: the new ones wait behind them, untried.
    more_held: bool,
    /// The customer's held items are not due yet: the new ones queue behind, untried.
    pub waits: bool,
}

impl Lane {
    pub fn new(key: String) -> Self {
        Self {
            key,
            customer: None,
            held: Vec::new(),
            fresh: Vec::new(),
            attempts: 0,
            more_held: false,
            waits: false,
        }
    }

    pub fn push(&mut self, customer: Customer, message: InboundMessage) {
        self.name(&customer);
        self.fresh.push(HeldItem::Message {
            customer,
            message: Box::new(message),
        });
    }

    /// Takes the customer's held items, which go before the round's new ones.
    pub fn take_held(&mut self, held: Vec<(HeldKey, HeldItem)>, more: bool, attempts: u32) {
        let newer = self.customer.take();
        for (_, item) in &held {
            if let HeldItem::Message { customer, .. } = item {
                self.name(customer);
            }
        }
        if let Some(newer) = newer {
            self.name(&newer);
        }
        self.held = held;
        self.more_held = more;
        self.attempts = attempts;
        self.waits = false;
    }

    fn name(&mut self, customer: &Customer) {
        if self.customer.is_none() || !customer.name.is_empty() {
            self.customer = Some(customer.clone());
        }
    }
}

/// What a lane's round did, for the round's write and the retry state.
pub(crate) struct LaneReport {
    pub key: String,
    /// Held items that went in (or were set aside): deleted from the held table.
    pub released: Vec<HeldKey>,
    /// New items to add to the held table, in order.
    pub hold: Vec<HeldItem>,
    pub dead: Vec<DeadLetter>,
    /// The refusal the lane stopped at, if it did.
    pub stopped: Option<Stopped>,
    /// The lane was not tried: its customer waits for their pause.
    pub waited: bool,
    /// The lane went through what it took, and more is held: it is due again at once.
    pub more: bool,
}

/// A refusal that stopped a lane.
pub(crate) struct Stopped {
    pub error: String,
    pub fix: &'static str,
    /// Failed attempts at the item it stopped at.
    pub attempts: u32,
}

impl LaneReport {
    pub fn new(key: String) -> Self {
        Self {
            key,
            released: Vec::new(),
            hold: Vec::new(),
            dead: Vec::new(),
            stopped: None,
            waited: false,
            more: false,
        }
    }

    /// A new item the homeserver refused outside the lane's run (a status update): held
    /// behind whatever the lane holds.
    pub fn refused(&mut self, item: HeldItem, error: &HandlerError) {
        self.hold.push(item);
        if self.stopped.is_none() && !self.waited {
            self.stopped = Some(Stopped {
                error: error.to_string(),
                fix: hint(error),
                attempts: 1,
            });
        }
    }
}

impl Bridge {
    /// Brings a lane's items into Matrix in order, until a refusal; an error is one that
    /// blocks everyone (the round is retried).
    pub(crate) async fn run_lane(&self, lane: Lane) -> Result<LaneReport, HandlerError> {
        let mut report = LaneReport::new(lane.key);
        if lane.waits {
            report.hold = lane.fresh;
            report.waited = true;
            return Ok(report);
        }
        let mut attempts = lane.attempts;
        let mut portal: Option<Portal> = None;
        let fresh = if lane.more_held {
            report.hold = lane.fresh;
            report.more = true;
            Vec::new()
        } else {
            lane.fresh
        };
        let mut items = lane
            .held
            .into_iter()
            .map(|(key, item)| (Some(key), item))
            .chain(fresh.into_iter().map(|item| (None, item)));
        while let Some((key, item)) = items.next() {
            let error = match self
                .bridge_item(&mut portal, lane.customer.as_ref(), &item)
                .await
            {
                Ok(()) => {
                    report.released.extend(key);
                    attempts = 0;
                    continue;
                }
                Err(error) => error,
            };
            let failure = Failure::of(&error);
            if failure.blocks_everyone() {
                return Err(error);
            }
            attempts += 1;
            if failure == Failure::Unacceptable && attempts >= DEAD_LETTER_AFTER {
                self.tell_set_aside(portal.as_ref(), &item, &error).await;
                report.dead.push(DeadLetter {
                    portal: report.key.clone(),
                    item,
                    error: error.to_string(),
                    attempts,
                    ts: crate::now_ms(),
                });
                report.released.extend(key);
                attempts = 0;
                continue;
            }
            // This item and every one after it stay, in order (before any new ones a longer
            // backlog put aside above).
            let unheld: Vec<HeldItem> = key
                .is_none()
                .then_some(item)
                .into_iter()
                .chain(items.filter_map(|(key, item)| key.is_none().then_some(item)))
                .collect();
            report.hold.splice(0..0, unheld);
            report.stopped = Some(Stopped {
                error: error.to_string(),
                fix: hint(&error),
                attempts,
            });
            break;
        }
        Ok(report)
    }

    async fn bridge_item(
        &self,
        portal: &mut Option<Portal>,
        customer: Option<&Customer>,
        item: &HeldItem,
    ) -> Result<(), HandlerError> {
        match item {
            HeldItem::Message {
                customer: own,
                message,
            } => {
                let portal = match portal {
                    Some(portal) => portal,
                    None => portal.insert(self.ensure_portal(customer.unwrap_or(own)).await?),
                };
                self.bridge_message(portal, message).await
            }
            HeldItem::Statuses { statuses } => self.apply_statuses(statuses).await,
        }
    }

    /// Tells the agents in the portal that a message of the customer was set aside (best
    /// effort: the homeserver refused it, and may refuse this too).
    async fn tell_set_aside(&self, portal: Option<&Portal>, item: &HeldItem, error: &HandlerError) {
        let (Some(portal), HeldItem::Message { .. }) = (portal, item) else {
            return;
        };
        let notice = Notice::SetAside {
            reason: error.to_string(),
        };
        if let Err(error) = self
            .notice(
                &portal.room_id,
                &notice,
                Some(&format!("{}-set-aside", item.wamid())),
            )
            .await
        {
            tracing::warn!(%error, "cannot tell the agents a message was set aside");
        }
    }
}

/// The retry state of the customers with held items; the inbox worker's own.
pub(crate) struct Waiting {
    lanes: HashMap<String, LaneState>,
}

struct LaneState {
    /// Items in the held table.
    items: usize,
    /// Failed attempts at the first one.
    attempts: u32,
    due: Instant,
}

impl Waiting {
    /// Every customer with held items, due at once (a restart is when an operator's fix
    /// usually lands).
    pub fn load(bridge: &Bridge) -> Self {
        let lanes = match bridge.store.held_lanes() {
            Ok(lanes) => lanes,
            Err(error) => {
                tracing::error!(%error, "cannot read the held messages; they wait for a restart");
                HashMap::new()
            }
        };
        let now = Instant::now();
        Self {
            lanes: lanes
                .into_iter()
                .map(|(key, items)| {
                    let state = LaneState {
                        items,
                        attempts: 0,
                        due: now,
                    };
                    (key, state)
                })
                .collect(),
        }
    }

    pub fn due(&self, now: Instant) -> Vec<String> {
        self.lanes
            .iter()
            .filter(|(_, lane)| lane.due <= now)
            .map(|(key, _)| key.clone())
            .collect()
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.lanes.values().map(|lane| lane.due).min()
    }

    pub fn is_waiting(&self, key: &str) -> bool {
        self.lanes.contains_key(key)
    }

    pub fn attempts(&self, key: &str) -> u32 {
        self.lanes.get(key).map_or(0, |lane| lane.attempts)
    }

    /// Follows a committed round: lanes that went through are gone, stopped ones wait for
    /// their next pause (a doubling one, at most `max`). Logs the stops, one line per reason.
    pub fn apply(&mut self, reports: &[LaneReport], max: Duration, backlog: &Backlog) {
        let now = Instant::now();
        let mut reasons: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
        for report in reports {
            let before = self.lanes.get(&report.key).map_or(0, |lane| lane.items);
            let items = before - report.released.len().min(before) + report.hold.len();
            if report.waited {
                if let Some(lane) = self.lanes.get_mut(&report.key) {
                    lane.items = items;
                }
                continue;
            }
            let Some(stopped) = &report.stopped else {
                if report.more {
                    let state = LaneState {
                        items,
                        attempts: 0,
                        due: now,
                    };
                    self.lanes.insert(report.key.clone(), state);
                } else {
                    self.lanes.remove(&report.key);
                }
                continue;
            };
            let pause = Duration::from_millis(250u64 << stopped.attempts.saturating_sub(1).min(10))
                .min(max);
            self.lanes.insert(
                report.key.clone(),
                LaneState {
                    items,
                    attempts: stopped.attempts,
                    due: now + pause,
                },
            );
            let counts = reasons
                .entry((stopped.error.as_str(), stopped.fix))
                .or_default();
            counts.0 += 1;
            counts.1 += items;
        }
        for ((error, fix), (customers, held)) in reasons {
            tracing::error!(
                error,
                fix,
                customers,
                held,
                "the homeserver refused WhatsApp messages; they are held and retried"
            );
            backlog.note(format!("{error} ({fix})"));
        }
        let held = self.lanes.values().map(|lane| lane.items as u64).sum();
        backlog.set_held(held, self.lanes.len() as u64);
    }
}
