//! Delivery states of agents' messages, shown the way Matrix clients understand:
//!
//! - accepted by the Cloud API: `com.beeper.message_send_status` `SUCCESS`, only if WhatsApp's
//!   `sent` has not come within `acceptance_wait_ms` (it normally follows within a second and
//!   says more, so the acceptance would cost the homeserver a write, and the bridge a
//!   transaction event, for nothing);
//! - `sent`: a read receipt of the bridge bot on the message (it left the bridge);
//! - `delivered`: `com.beeper.message_send_status` `SUCCESS` with the puppet in
//!   `delivered_to_users`;
//! - `read`: a read receipt of the customer's puppet;
//! - `failed`: `FAIL_PERMANENT` with WhatsApp's reason, plus a notice to the agents.
//!
//! Each state is also stored per message ([`crate::store::Delivery`]). States never go back
//! (`delivered` after `read` changes nothing) and a repeated status has no second effect. The
//! statuses of one message that arrive in the same inbox round show only the state they end
//! in: under load WhatsApp's `sent` and `delivered` come together, and the receipt for `sent`
//! would be outdated before a client saw it.

use std::sync::Arc;

use appservice::{HandlerError, SendOptions};
use ruma::{EventId, RoomId};
use serde_json::{Value, json};

use crate::bridge::Bridge;
use crate::cloud::Status;
use crate::notices::Notice;
use crate::store::{Delivery, EarlyStatusKey, MessageLink};

/// Order of the states; `failed` is handled apart.
fn rank(status: &str) -> u8 {
    match status {
        "queued" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        _ => 4,
    }
}

/// Whether state `new` comes after `old`: states only move forward, and `failed` is final.
fn supersedes(new: &str, old: &str) -> bool {
    old != "failed" && (new == "failed" || rank(new) > rank(old))
}

/// Moves `delivery` to `status`'s state if that comes after its own.
fn advance(delivery: &mut Delivery, status: &Status) {
    if !supersedes(&status.status, &delivery.status) {
        return;
    }
    delivery.status = status.status.clone();
    delivery.updated_ts = crate::now_ms();
    if let Some(error) = status.errors.first() {
        delivery.error_code = Some(error.code);
        delivery.error = Some(error.reason());
    }
}

impl Bridge {
    /// Applies one message's statuses of an inbox round, in order, as one change: the record
    /// is saved once and only the state they end in is shown. A later state says the earlier
    /// ones too (a `delivered` message was sent), so showing each would cost the homeserver a
    /// write and the bridge a transaction event for nothing.
    pub(crate) async fn apply_statuses(&self, statuses: &[Status]) -> Result<(), HandlerError> {
        let Some(wamid) = statuses.first().map(|s| s.id.as_str()) else {
            return Ok(());
        };
        let Some(link) = self.store.message(wamid)? else {
            // The send that produced this wamid is not recorded yet (the webhook overtook the
            // API's answer): applied when it is. Checked again after keeping them, in case the
            // link was written in between (then nobody else would pick them up).
            self.store.keep_early_statuses(statuses)?;
            if self.store.message(wamid)?.is_some() {
                return self.apply_early_statuses(wamid).await;
            }
            return Ok(());
        };
        self.apply_linked(&link, statuses, &[]).await
    }

    /// Applies the statuses kept for `wamid` before its send was recorded. They are deleted
    /// only in the write that saves what they led to, and only those read here (more may be
    /// kept meanwhile), so neither a crash nor a concurrent round can lose one.
    pub(crate) async fn apply_early_statuses(&self, wamid: &str) -> Result<(), HandlerError> {
        let (keys, statuses) = self.store.early_statuses(wamid)?;
        if keys.is_empty() {
            return Ok(());
        }
        let Some(link) = self.store.message(wamid)? else {
            return Ok(());
        };
        self.apply_linked(&link, &statuses, &keys).await
    }

    /// Moves a linked message's delivery on by `statuses` and shows where it ends; `early` are
    /// the kept statuses among them, deleted with the save.
    async fn apply_linked(
        &self,
        link: &MessageLink,
        statuses: &[Status],
        early: &[EarlyStatusKey],
    ) -> Result<(), HandlerError> {
        if link.inbound {
            self.store.statuses_applied(None, early)?;
            return Ok(());
        }
        let wamid = statuses.first().map(|s| s.id.as_str());
        let mut delivery = self
            .store
            .delivery(&link.event_id)?
            .unwrap_or_else(|| Delivery::queued(&link.room_id, &link.event_id, wamid));
        let before = delivery.status.clone();
        for status in statuses {
            advance(&mut delivery, status);
        }
        if delivery.status == before {
            self.store.statuses_applied(None, early)?;
            return Ok(());
        }
        // Saved once shown: a failure (the round is retried, or the statuses held) must find
        // the old state, or the retry would show nothing.
        self.show_status(link, &delivery).await?;
        // Another round may have moved the record on while this one was shown (a `read` in
        // the round after the one that brought `sent` and `delivered`): never move it back.
        let stored = self.store.delivery(&link.event_id)?;
        let moved_on = stored.is_none_or(|stored| supersedes(&delivery.status, &stored.status));
        self.store
            .statuses_applied(moved_on.then_some(&delivery), early)?;
        Ok(())
    }

    async fn show_status(
        &self,
        link: &MessageLink,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let (room, event) = (&link.room_id, &link.event_id);
        match delivery.status.as_str() {
            "sent" => self.bot.send_read_receipt(room, event).await?,
            "delivered" => {
                let puppet = self.store.portal(&link.portal)?.map(|p| p.puppet);
                self.send_status_event(
                    room,
                    event,
                    "delivered",
                    json!({
                        "status": "SUCCESS",
                        "delivered_to_users": puppet.into_iter().collect::<Vec<_>>(),
                    }),
                )
                .await?;
            }
            "read" => {
                if let Some(portal) = self.store.portal(&link.portal)? {
                    self.puppet(&portal.puppet)
                        .send_read_receipt(room, event)
                        .await?;
                }
            }
            "failed" => {
                let reason = delivery.error.clone().unwrap_or_default();
                self.report_failure(room, event, delivery.error_code, &reason)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `FAIL_PERMANENT` on the message and a notice explaining why, in the room's language.
    pub(crate) async fn report_failure(
        &self,
        room: &RoomId,
        event: &EventId,
        code: Option<i64>,
        reason: &str,
    ) -> Result<(), HandlerError> {
        let error = match code {
            Some(code) => format!("({code}) {reason}"),
            None => reason.to_owned(),
        };
        let notice = if code == Some(131047) {
            Notice::NeedsTemplate {
                reason: reason.to_owned(),
            }
        } else {
            Notice::Failed {
                code,
                reason: reason.to_owned(),
            }
        };
        self.send_status_event(
            room,
            event,
            "failed",
            json!({
                "status": "FAIL_PERMANENT",
                "reason": "m.foreign_network_error",
                "error": error,
                "message": notice.text(&self.language_of(room)),
            }),
        )
        .await?;
        self.notice(room, &notice, Some(&format!("{event}-failed")))
            .await
    }

    /// Posts a notice from the bridge bot; `key` makes it idempotent.
    pub(crate) async fn notice(
        &self,
        room: &RoomId,
        notice: &Notice,
        key: Option<&str>,
    ) -> Result<(), HandlerError> {
        let options = SendOptions {
            txn_id: key.map(|k| crate::inbound::txn_id(k, 9)),
            ts: None,
        };
        self.bot
            .send_event(
                room,
                "m.room.message",
                &notice.content(&self.language_of(room)),
                options,
            )
            .await?;
        Ok(())
    }

    /// A `com.beeper.message_send_status` event about `event`; `what` keeps it idempotent.
    pub(crate) async fn send_status_event(
        &self,
        room: &RoomId,
        event: &EventId,
        what: &str,
        fields: Value,
    ) -> Result<(), HandlerError> {
        let mut content = json!({
            "network": "whatsapp",
            "m.relates_to": {"rel_type": "m.reference", "event_id": event},
        });
        if let (Some(content), Value::Object(fields)) = (content.as_object_mut(), fields) {
            content.extend(fields);
        }
        let options = SendOptions {
            txn_id: Some(crate::inbound::txn_id(&format!("{event}-{what}"), 8)),
            ts: None,
        };
        self.bot
            .send_event(room, "com.beeper.message_send_status", &content, options)
            .await?;
        Ok(())
    }

    /// Shows that WhatsApp accepted an agent's message as `wamid`: applies the statuses that
    /// arrived before, and shows the acceptance unless `sent` overtakes it.
    pub(crate) async fn accepted(
        self: &Arc<Self>,
        link: MessageLink,
        wamid: &str,
    ) -> Result<(), HandlerError> {
        // The link and the wamid were written with the job's removal (`Store::finish_job`), on
        // disk before this runs: statuses that come from now on find them.
        self.apply_early_statuses(wamid).await?;
        let wait = self.config.acceptance_wait();
        if wait.is_zero() {
            return self.show_acceptance_unless_overtaken(&link).await;
        }
        // A weak reference: a bridge stopped meanwhile (its store closed, maybe reopened by a
        // new bridge) shows nothing more.
        let bridge = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(bridge) = bridge.upgrade() else {
                return;
            };
            if let Err(error) = bridge.show_acceptance_unless_overtaken(&link).await {
                tracing::warn!(%error, "cannot show that WhatsApp accepted a message");
            }
        });
        Ok(())
    }

    /// `SUCCESS` for an accepted message that is still `queued`: no `sent`, `delivered`,
    /// `read` or `failed` came, each of which the room shows on its own.
    async fn show_acceptance_unless_overtaken(
        &self,
        link: &MessageLink,
    ) -> Result<(), HandlerError> {
        let overtaken = self
            .store
            .delivery(&link.event_id)?
            .is_some_and(|delivery| delivery.status != "queued");
        if overtaken {
            return Ok(());
        }
        self.send_status_event(
            &link.room_id,
            &link.event_id,
            "accepted",
            json!({"status": "SUCCESS"}),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state a record in `from` ends in after `states`, and its error code.
    fn end_state(from: &str, states: &[Value]) -> (String, Option<i64>) {
        let link = MessageLink {
            room_id: ruma::owned_room_id!("!r:x"),
            event_id: ruma::owned_event_id!("$e"),
            inbound: false,
            portal: "34600111222".into(),
        };
        let mut delivery = Delivery::queued(&link.room_id, &link.event_id, Some("wamid.1"));
        delivery.status = from.into();
        for state in states {
            let status: Status = serde_json::from_value(state.clone()).unwrap();
            advance(&mut delivery, &status);
        }
        (delivery.status, delivery.error_code)
    }

    fn plain(state: &str) -> Value {
        json!({"id": "wamid.1", "status": state})
    }

    #[test]
    fn states_only_move_forward_and_failed_is_final() {
        let sent_delivered = [plain("sent"), plain("delivered")];
        assert_eq!(end_state("queued", &sent_delivered).0, "delivered");
        let delivered_sent = [plain("delivered"), plain("sent")];
        assert_eq!(end_state("queued", &delivered_sent).0, "delivered");
        assert_eq!(end_state("read", &[plain("delivered")]).0, "read");
        assert_eq!(end_state("sent", &[plain("sent")]).0, "sent");
        assert!(supersedes("read", "delivered") && supersedes("failed", "read"));
        assert!(!supersedes("delivered", "read") && !supersedes("read", "failed"));
        let failed = json!({"id": "wamid.1", "status": "failed",
                            "errors": [{"code": 131026, "title": "Message undeliverable"}]});
        assert_eq!(
            end_state("sent", &[failed, plain("delivered")]),
            ("failed".into(), Some(131026))
        );
    }
}
