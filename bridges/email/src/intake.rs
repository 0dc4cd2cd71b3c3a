//! What the SMTP listener asks of the bridge: the desk's addresses, the per-sender limit, and
//! the durable inbox a mail must be in before the listener answers `250`.

use std::net::IpAddr;

use crate::bridge::Bridge;
use crate::smtp::{Envelope, MailSink, Refusal};
use crate::store::InboxMeta;

impl MailSink for Bridge {
    fn accepts_recipient(&self, address: &str) -> bool {
        self.config.is_desk_address(address)
    }

    fn check_sender(&self, from: &str, peer: IpAddr) -> Result<(), Refusal> {
        // Bounces (the null sender) are limited per sending host: they name no sender.
        let key = if from.is_empty() {
            format!("<>@{peer}")
        } else {
            from.to_owned()
        };
        if self.limiter.allow(&key) {
            Ok(())
        } else {
            Err(Refusal::Temporary(format!(
                "{} sends too many mails; try again later",
                if from.is_empty() { "<>" } else { from }
            )))
        }
    }

    async fn deliver(&self, envelope: Envelope, message: Vec<u8>) -> Result<(), Refusal> {
        let meta = InboxMeta {
            envelope,
            received_ms: crate::now_ms(),
        };
        let kept = match self.store.add_mail(&meta, &message) {
            Ok(ticket) => self.store.durable(ticket).await,
            Err(error) => Err(error),
        };
        match kept {
            Ok(()) => {
                self.inbox_wake.notify_one();
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "cannot keep an inbound mail; the sender's MTA will retry");
                Err(Refusal::Temporary("cannot store the mail right now".into()))
            }
        }
    }
}
