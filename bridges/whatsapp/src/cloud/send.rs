//! Bodies of `POST /{phone_number_id}/messages` and their answers.
//!
//! A message serializes as Meta documents it:
//! `{"messaging_product":"whatsapp","recipient_type":"individual","to":"…","type":"text",
//! "text":{"preview_url":false,"body":"…"}}`, with `context.message_id` for replies. Marking a
//! customer's message read is a body of its own ([`MarkRead`]).

use serde::{Deserialize, Serialize};

/// One message to a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    pub messaging_product: String,
    pub recipient_type: String,
    /// The customer's phone number (wa_id); wins over `recipient` when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The business-scoped user id, for customers whose phone number is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ReplyContext>,
    #[serde(flatten)]
    pub body: MessageBody,
}

impl OutgoingMessage {
    pub fn new(to: Option<String>, recipient: Option<String>, body: MessageBody) -> Self {
        Self {
            messaging_product: "whatsapp".into(),
            recipient_type: "individual".into(),
            recipient: if to.is_some() { None } else { recipient },
            to,
            context: None,
            body,
        }
    }

    pub fn replying_to(mut self, message_id: Option<String>) -> Self {
        self.context = message_id.map(|message_id| ReplyContext { message_id });
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyContext {
    pub message_id: String,
}

/// `type` plus the object of that name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageBody {
    Text { text: TextBody },
    Image { image: MediaBody },
    Video { video: MediaBody },
    Audio { audio: MediaBody },
    Document { document: MediaBody },
    Sticker { sticker: MediaBody },
    Location { location: LocationBody },
    Reaction { reaction: ReactionBody },
    Template { template: TemplateBody },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextBody {
    pub preview_url: bool,
    pub body: String,
}

/// Media sent by the id `POST /{phone_number_id}/media` returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaBody {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Documents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationBody {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A reaction to `message_id`; an empty `emoji` removes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReactionBody {
    pub message_id: String,
    pub emoji: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateBody {
    pub name: String,
    pub language: TemplateLanguage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<TemplateComponent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateLanguage {
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateComponent {
    #[serde(rename = "type")]
    pub kind: String,
    pub parameters: Vec<TemplateParameter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateParameter {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

impl TemplateBody {
    /// A template whose body placeholders `{{1}}…` take `params` in order.
    pub fn with_text_params(name: &str, language: &str, params: &[String]) -> Self {
        let components = if params.is_empty() {
            Vec::new()
        } else {
            vec![TemplateComponent {
                kind: "body".into(),
                parameters: params
                    .iter()
                    .map(|p| TemplateParameter {
                        kind: "text".into(),
                        text: p.clone(),
                    })
                    .collect(),
            }]
        };
        Self {
            name: name.into(),
            language: TemplateLanguage {
                code: language.into(),
            },
            components,
        }
    }
}

/// `{"messaging_product":"whatsapp","status":"read","message_id":"wamid…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkRead {
    pub messaging_product: String,
    pub status: String,
    pub message_id: String,
}

impl MarkRead {
    pub fn new(message_id: &str) -> Self {
        Self {
            messaging_product: "whatsapp".into(),
            status: "read".into(),
            message_id: message_id.into(),
        }
    }
}

/// The answer to a sent message: `{"messaging_product","contacts":[{"input","wa_id"}],
/// "messages":[{"id"}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResponse {
    #[serde(default)]
    pub messaging_product: String,
    #[serde(default)]
    pub contacts: Vec<SentContact>,
    #[serde(default)]
    pub messages: Vec<SentMessage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentContact {
    #[serde(default)]
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    pub id: String,
}

/// `GET /{media-id}`: where to download a customer's media, and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    #[serde(default)]
    pub messaging_product: String,
    pub url: String,
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub sha256: String,
    #[serde(default, deserialize_with = "super::error::lenient_string")]
    pub file_size: String,
    #[serde(default)]
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_text_reply_serializes_as_meta_documents_it() {
        let msg = OutgoingMessage::new(
            Some("34600111222".into()),
            None,
            MessageBody::Text {
                text: TextBody {
                    preview_url: false,
                    body: "Hola".into(),
                },
            },
        )
        .replying_to(Some("wamid.A".into()));
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({
                "messaging_product": "whatsapp", "recipient_type": "individual",
                "to": "34600111222", "context": {"message_id": "wamid.A"},
                "type": "text", "text": {"preview_url": false, "body": "Hola"}
            })
        );
    }

    #[test]
    fn a_template_carries_its_parameters() {
        let t = TemplateBody::with_text_params("order_update", "es", &["María".into()]);
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"name": "order_update", "language": {"code": "es"},
                   "components": [{"type": "body", "parameters": [{"type": "text", "text": "María"}]}]})
        );
    }
}
