//! The `messages` webhook: `entry[].changes[].value` with `metadata`, `contacts[]`,
//! `messages[]`, `statuses[]` and `errors[]`. Parsing is lenient: every list may be missing,
//! unknown fields are ignored, and a message of an unknown type still parses (its `type` says
//! what it was).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{CloudError, lenient_string};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Change {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub value: ChangeValue,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChangeValue {
    #[serde(default)]
    pub messaging_product: String,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<InboundMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Status>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<CloudError>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub display_phone_number: String,
    #[serde(default)]
    pub phone_number_id: String,
}

/// A customer. `wa_id` is the phone number; `user_id` the business-scoped user id (BSUID),
/// which newer payloads may carry alone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Contact {
    #[serde(default)]
    pub profile: Profile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// One message from a customer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InboundMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_user_id: Option<String>,
    pub id: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub timestamp: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<MessageContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<MediaRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<MediaRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<MediaRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<MediaRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticker: Option<MediaRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<SharedContact>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<Interactive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<Button>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<Reaction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<CloudError>,
}

impl InboundMessage {
    /// Seconds since the epoch, 0 if absent.
    pub fn timestamp_secs(&self) -> u64 {
        self.timestamp.parse().unwrap_or(0)
    }
}

/// `context`: the message this one replies to (`id`) and its author (`from`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessageContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default)]
    pub id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Text {
    pub body: String,
}

/// A media object of a webhook: the id to fetch it with, and what WhatsApp tells about it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MediaRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Audio recorded as a voice note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub animated: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A contact card shared by the customer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SharedContact {
    #[serde(default)]
    pub name: ContactName,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<ContactPhone>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<ContactEmail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<ContactOrg>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContactName {
    #[serde(default)]
    pub formatted_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContactPhone {
    #[serde(default)]
    pub phone: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContactEmail {
    #[serde(default)]
    pub email: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContactOrg {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A reply to an interactive message: a button or a list row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Interactive {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button_reply: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_reply: Option<Reply>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A quick-reply button of a template pressed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Button {
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub text: String,
}

/// A reaction; an empty (or absent) `emoji` removes the customer's reaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reaction {
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct System {
    #[serde(default)]
    pub body: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
}

/// The state of a message the business sent: `sent`, `delivered`, `read` or `failed`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub status: String,
    #[serde(default, deserialize_with = "lenient_string")]
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<CloudError>,
}

impl Envelope {
    /// Every change value of the `messages` field, in order.
    pub fn values(&self) -> impl Iterator<Item = &ChangeValue> {
        self.entry
            .iter()
            .flat_map(|e| e.changes.iter())
            .filter(|c| c.field == "messages" || c.field.is_empty())
            .map(|c| &c.value)
    }
}

/// A customer as a webhook names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// Phone number, without `+`.
    pub wa_id: Option<String>,
    /// Business-scoped user id.
    pub user_id: Option<String>,
    pub name: String,
}

impl Customer {
    /// The customer who sent a message: the `contacts[]` entry that matches its `from` (or
    /// `from_user_id`), else what the message itself says.
    pub fn of_message(
        value: &ChangeValue,
        from: Option<&str>,
        from_user_id: Option<&str>,
    ) -> Option<Self> {
        let contact = value
            .contacts
            .iter()
            .find(|c| {
                (from.is_some() && c.wa_id.as_deref() == from)
                    || (from_user_id.is_some() && c.user_id.as_deref() == from_user_id)
            })
            .or(
                if value.contacts.len() == 1 && from.is_none() && from_user_id.is_none() {
                    value.contacts.first()
                } else {
                    None
                },
            );
        let wa_id = from
            .map(str::to_owned)
            .or_else(|| contact.and_then(|c| c.wa_id.clone()));
        let user_id = from_user_id
            .map(str::to_owned)
            .or_else(|| contact.and_then(|c| c.user_id.clone()));
        if wa_id.is_none() && user_id.is_none() {
            return None;
        }
        let name = contact.map(|c| c.profile.name.clone()).unwrap_or_default();
        Some(Self {
            wa_id,
            user_id,
            name,
        })
    }

    /// The name to show: the profile name, else the phone number, else the user id.
    pub fn display_name(&self) -> String {
        if !self.name.trim().is_empty() {
            self.name.clone()
        } else if let Some(wa_id) = &self.wa_id {
            format!("+{wa_id}")
        } else {
            self.user_id.clone().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metas_text_example() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"0","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"16505551111","phone_number_id":"123456123"},"contacts":[{"profile":{"name":"test user name"},"wa_id":"16315551181"}],"messages":[{"from":"16315551181","id":"ABGGFlA5Fpa","timestamp":"1504902988","type":"text","text":{"body":"this is a text message"}}]}}]}]}"#;
        let env: Envelope = serde_json::from_str(body).unwrap();
        let value = env.values().next().unwrap();
        assert_eq!(value.metadata.phone_number_id, "123456123");
        assert_eq!(value.contacts[0].wa_id.as_deref(), Some("16315551181"));
        assert_eq!(value.contacts[0].profile.name, "test user name");
        let m = &value.messages[0];
        assert_eq!(m.kind, "text");
        assert_eq!(m.text.as_ref().unwrap().body, "this is a text message");
        assert_eq!(m.timestamp_secs(), 1504902988);
    }

    #[test]
    fn parses_a_failed_status_with_numeric_timestamp() {
        let body = r#"{"id":"wamid.X","status":"failed","timestamp":1750857384,"recipient_id":"1","errors":[{"code":131047,"title":"Re-engagement message","message":"Re-engagement message","error_data":{"details":"Message failed to send because more than 24 hours have passed since the customer last replied to this number."}}]}"#;
        let s: Status = serde_json::from_str(body).unwrap();
        assert_eq!(s.timestamp, "1750857384");
        assert_eq!(s.errors[0].code, 131047);
        assert!(s.errors[0].reason().starts_with("Message failed to send"));
    }
}
