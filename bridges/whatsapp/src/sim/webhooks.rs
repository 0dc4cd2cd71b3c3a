//! Signed webhooks from the simulator to the business: customer messages and statuses, in the
//! envelope Meta sends, signed with the app secret as `X-Hub-Signature-256`.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::Inner;
use crate::cloud::CloudError;

/// A webhook as it was sent: the exact body, its signature and the answer's status.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    pub body: String,
    pub signature: String,
    /// HTTP status of the webhook's answer; 0 if the webhook could not be delivered.
    pub status: u16,
}

impl Inner {
    /// The envelope around one change value.
    pub(crate) fn envelope(&self, value: Value) -> Value {
        let mut value = value;
        value["messaging_product"] = json!("whatsapp");
        value["metadata"] = json!({
            "display_phone_number": self.config.display_phone_number,
            "phone_number_id": self.config.phone_number_id,
        });
        json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": "102290129340398",
                "changes": [{"value": value, "field": "messages"}],
            }],
        })
    }

    /// POSTs a signed webhook once.
    pub(crate) async fn post_webhook(&self, envelope: &Value) -> Delivered {
        let body = envelope.to_string();
        let signature = crate::signature::sign(&self.config.app_secret, body.as_bytes());
        let url = self
            .webhook_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let status = match self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", &signature)
            .body(body.clone())
            .send()
            .await
        {
            Ok(response) => response.status().as_u16(),
            Err(error) => {
                tracing::debug!(%error, "webhook not delivered");
                0
            }
        };
        Delivered {
            body,
            signature,
            status,
        }
    }

    /// POSTs a webhook, retrying like Meta does (here: a few times, quickly) until a 200.
    pub(crate) async fn post_webhook_retrying(&self, envelope: &Value) {
        for attempt in 0..8u32 {
            if self.post_webhook(envelope).await.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
        }
        tracing::warn!("webhook given up after retries");
    }

    /// A status webhook for a message the business sent.
    pub(crate) fn status_envelope(
        &self,
        wamid: &str,
        status: &str,
        recipient: &str,
        errors: Vec<CloudError>,
    ) -> Value {
        let mut entry = json!({
            "id": wamid,
            "status": status,
            "timestamp": (super::now_ms() / 1000).to_string(),
            "recipient_id": recipient,
        });
        if status != "failed" {
            entry["conversation"] = json!({
                "id": "a75d17ad06104c51166f948319b03c6a",
                "origin": {"type": "service"},
            });
            entry["pricing"] =
                json!({"billable": true, "pricing_model": "PMP", "category": "service"});
        }
        if !errors.is_empty() {
            entry["errors"] = serde_json::to_value(errors).unwrap_or_default();
        }
        self.envelope(json!({"statuses": [entry]}))
    }
}
