//! Response-time metrics over the conversations created in a time range.
//!
//! Read from the conversation records (created-time range scan), never from room timelines:
//! the times that matter (first customer message, first agent answer, resolution) are in the
//! conversation state, and message counts in the record.

use std::collections::BTreeMap;

use ruma::OwnedUserId;
use serde::Serialize;

use super::index::ConversationRecord;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Stats {
    pub(crate) conversations: u64,
    /// Conversations with a first agent answer after a customer message.
    pub(crate) responded: u64,
    pub(crate) avg_first_response_ms: Option<u64>,
    pub(crate) resolved: u64,
    pub(crate) avg_resolution_ms: Option<u64>,
    pub(crate) messages: u64,
    pub(crate) avg_messages_per_conversation: Option<f64>,
    #[serde(skip)]
    first_response_sum: u64,
    #[serde(skip)]
    resolution_sum: u64,
}

impl Stats {
    fn add(&mut self, r: &ConversationRecord) {
        let c = &r.content;
        self.conversations += 1;
        self.messages += r.messages;
        if let (Some(customer), Some(agent)) =
            (c.first_customer_message_ts, c.first_agent_response_ts)
            && agent >= customer
        {
            self.responded += 1;
            self.first_response_sum += agent - customer;
        }
        if let Some(resolved) = c.resolved_ts {
            let start = c.first_customer_message_ts.unwrap_or(r.created_ts);
            if resolved >= start {
                self.resolved += 1;
                self.resolution_sum += resolved - start;
            }
        }
    }

    fn finish(&mut self) {
        self.avg_first_response_ms =
            (self.responded > 0).then(|| self.first_response_sum / self.responded);
        self.avg_resolution_ms = (self.resolved > 0).then(|| self.resolution_sum / self.resolved);
        self.avg_messages_per_conversation =
            (self.conversations > 0).then(|| self.messages as f64 / self.conversations as f64);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Metrics {
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) overall: Stats,
    /// By assignee; unassigned conversations count only overall.
    pub(crate) per_agent: BTreeMap<OwnedUserId, Stats>,
    /// Conversations created per UTC day (`YYYY-MM-DD`).
    pub(crate) conversations_per_day: BTreeMap<String, u64>,
}

/// Metrics of the conversations created in `[from, to)`.
pub(crate) fn compute(from: u64, to: u64, records: &[ConversationRecord]) -> Metrics {
    let mut m = Metrics {
        from,
        to,
        ..Default::default()
    };
    for r in records {
        m.overall.add(r);
        if let Some(a) = &r.content.assignee {
            m.per_agent.entry(a.clone()).or_default().add(r);
        }
        *m.conversations_per_day
            .entry(utc_date(r.created_ts))
            .or_default() += 1;
    }
    m.overall.finish();
    m.per_agent.values_mut().for_each(Stats::finish);
    m
}

/// `YYYY-MM-DD` of a Unix time in ms (proleptic Gregorian, UTC).
pub(crate) fn utc_date(ms: u64) -> String {
    let (y, mo, d) = civil_from_days((ms / 86_400_000) as i64);
    format!("{y:04}-{mo:02}-{d:02}")
}

/// Howard Hinnant's days-to-civil algorithm.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use ruma::{UserId, owned_room_id, user_id};

    use super::*;
    use crate::support::Conversation;

    #[test]
    fn dates_and_averages() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_763_856_000_000), "2025-11-23");
        let rec = |assignee: &str, customer, agent, resolved, messages| {
            let mut r = ConversationRecord::new(owned_room_id!("!a:x"), 1_000);
            r.messages = messages;
            r.content = Conversation {
                assignee: Some(UserId::parse(assignee).unwrap()),
                first_customer_message_ts: Some(customer),
                first_agent_response_ts: agent,
                resolved_ts: resolved,
                ..Default::default()
            };
            r
        };
        let m = compute(
            0,
            10_000,
            &[
                rec("@a:x", 1_000, Some(3_000), Some(11_000), 4),
                rec("@a:x", 2_000, Some(6_000), None, 3),
                rec("@b:x", 1_000, None, None, 1),
            ],
        );
        assert_eq!(m.overall.conversations, 3);
        assert_eq!(m.overall.avg_first_response_ms, Some(3_000));
        assert_eq!(m.overall.avg_resolution_ms, Some(10_000));
        assert_eq!(m.overall.messages, 8);
        assert_eq!(m.per_agent[user_id!("@a:x")].responded, 2);
        assert_eq!(m.per_agent[user_id!("@b:x")].avg_first_response_ms, None);
        assert_eq!(m.conversations_per_day["1970-01-01"], 3);
    }
}
