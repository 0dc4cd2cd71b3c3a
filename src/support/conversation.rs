//! The `io.charla.conversation` state event: what a room is as a support conversation.
//!
//! Parsing is lenient (missing keys take defaults, unknown keys are kept and written back) so
//! that the bridge, the bot and any client that edits the event by hand can all share it.

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The state event type (state key `""`).
pub(crate) const CONVERSATION_EVENT: &str = "io.charla.conversation";
/// The ticket mirror state event type (state key: the ticket number).
pub(crate) const TICKET_EVENT: &str = "io.charla.ticket";
/// The prefix of every state type that is the desk's: only the desk may set it.
pub(crate) const DESK_STATE_PREFIX: &str = "io.charla.";

/// Most labels a conversation keeps: each is an index key, so the count is what one state
/// event may cost the index.
pub(crate) const MAX_LABELS: usize = 20;
/// Longest product, order or organisation reference kept (each is an index key too).
pub(crate) const MAX_REFERENCE_CHARS: usize = 128;
/// Longest contact field kept.
const MAX_CONTACT_CHARS: usize = 255;

/// An enum of the desk's stored and query values, each written as a fixed string: serde's
/// names, `as_str`, `parse` and `NAMES` (for error messages) from one list.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident default $default:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        string_enum!($(#[$m])* $name { $($variant = $text),* });

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }
    };
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub(crate) enum $name {
            $(#[serde(rename = $text)] $variant),*
        }

        impl $name {
            /// Every value's name, in order.
            pub(crate) const NAMES: &'static [&'static str] = &[$($text),*];

            pub(crate) fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub(crate) fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// Where a conversation stands.
    Status default Open { Open = "open", Pending = "pending", Closed = "closed" }
);
string_enum!(
    /// How urgent a conversation is.
    Priority default Medium { Low = "low", Medium = "medium", High = "high", Urgent = "urgent" }
);
string_enum!(
    /// Where the customer writes from.
    Channel default Matrix { Whatsapp = "whatsapp", Web = "web", Email = "email", Matrix = "matrix" }
);

/// Who the customer is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Contact {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) phone: Option<String>,
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) organisation: Option<String>,
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

/// The content of `io.charla.conversation`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Conversation {
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) status: Status,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) priority: Priority,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) labels: Vec<String>,
    /// Who handles it; `None` while it waits in the queue. Anything but a user id in the event
    /// reads as `None`.
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) assignee: Option<OwnedUserId>,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) channel: Channel,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) contact: Contact,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) product_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) order_id: Option<String>,
    /// The language agents work in here (a tag such as `es` or `pt-BR`): bridges write their
    /// notices in it. Absent: each bridge's configured language.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) language: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) first_customer_message_ts: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) first_agent_response_ts: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub(crate) resolved_ts: Option<u64>,
    /// Keys this server does not know, kept when the event is rewritten.
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

/// A value of the wrong shape counts as missing rather than making the whole event unreadable.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).unwrap_or_default())
}

impl Conversation {
    /// Parses any JSON object; never fails (a non-object is an empty conversation).
    pub(crate) fn from_json(v: &Value) -> Self {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    pub(crate) fn from_str_lenient(s: &str) -> Self {
        serde_json::from_str::<Value>(s)
            .map(|v| Self::from_json(&v))
            .unwrap_or_default()
    }

    /// The content as sent: every key of the contract present, `null` where unknown.
    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("conversation serializes")
    }

    /// The content as the desk keeps it, whoever wrote the event: at most [`MAX_LABELS`] valid,
    /// distinct labels; references and contact fields of bounded length; a language that is a
    /// tag (the assignee is a user id once parsed). What does not fit is dropped, so no state event can
    /// make the index write more than a handful of keys.
    pub(crate) fn bounded(mut self) -> Self {
        let mut labels: Vec<String> = Vec::new();
        for label in self.labels.iter().filter_map(|l| valid_label(l)) {
            if labels.len() == MAX_LABELS {
                break;
            }
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
        self.labels = labels;
        let fits = |v: &Option<String>, max: usize| {
            v.as_ref()
                .is_none_or(|v| !v.is_empty() && v.chars().count() <= max)
        };
        for reference in [
            &mut self.product_id,
            &mut self.order_id,
            &mut self.contact.organisation,
        ] {
            if !fits(reference, MAX_REFERENCE_CHARS) {
                *reference = None;
            }
        }
        let contact = &mut self.contact;
        for field in [&mut contact.name, &mut contact.phone, &mut contact.id] {
            if !fits(field, MAX_CONTACT_CHARS) {
                *field = None;
            }
        }
        self.language = self.language.as_deref().and_then(valid_language);
        self
    }

    /// Whether the conversation counts against its assignee's capacity.
    pub(crate) fn is_active(&self) -> bool {
        self.status != Status::Closed
    }
}

/// A language tag as stored: lowercase primary subtag of 2 or 3 letters, optionally a region
/// or script (`es`, `pt-BR`, `zh-Hant`).
pub(crate) fn valid_language(tag: &str) -> Option<String> {
    let tag = tag.trim();
    let (primary, rest) = match tag.split_once('-') {
        Some((primary, rest)) => (primary, Some(rest)),
        None => (tag, None),
    };
    let primary_ok =
        (2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_alphabetic());
    let rest_ok = rest.is_none_or(|rest| {
        (2..=4).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    let primary = primary.to_ascii_lowercase();
    (primary_ok && rest_ok).then(|| match rest {
        Some(rest) => format!("{primary}-{rest}"),
        None => primary,
    })
}

/// A list of labels as an agent gives it, checked: each valid, at most [`MAX_LABELS`] distinct.
pub(crate) fn valid_labels(list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for l in list {
        let l = valid_label(l).ok_or("labels are 1 to 64 printable characters")?;
        if !out.contains(&l) {
            out.push(l);
        }
    }
    if out.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    Ok(out)
}

/// A label as stored: trimmed and non-empty, at most 64 characters, no control characters.
pub(crate) fn valid_label(label: &str) -> Option<String> {
    let l = label.trim();
    (!l.is_empty() && l.chars().count() <= 64 && !l.chars().any(char::is_control))
        .then(|| l.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn language_tags_are_checked_and_normalized() {
        assert_eq!(valid_language(" ES "), Some("es".into()));
        assert_eq!(valid_language("pt-BR"), Some("pt-BR".into()));
        assert_eq!(valid_language("zh-Hant"), Some("zh-Hant".into()));
        assert_eq!(valid_language("ast"), Some("ast".into()));
        for bad in ["", "e", "español", "es-", "es-MX-x", "e1", "es_MX", "-es"] {
            assert_eq!(valid_language(bad), None, "{bad:?}");
        }
        let c = Conversation::from_json(&json!({"language": 5}));
        assert_eq!(c.language, None);
        assert!(c.to_json().get("language").is_none());
    }

    #[test]
    fn missing_keys_default_and_unknown_keys_survive() {
        let c = Conversation::from_json(&json!({
            "status": "pending", "labels": ["vip"], "x.custom": {"a": 1}, "priority": 7
        }));
        assert_eq!(c.status, Status::Pending);
        assert_eq!(c.priority, Priority::Medium);
        assert_eq!(c.channel, Channel::Matrix);
        let out = c.to_json();
        assert_eq!(out["x.custom"], json!({"a": 1}));
        assert_eq!(out["assignee"], Value::Null);
        assert_eq!(out["contact"]["organisation"], Value::Null);
        assert_eq!(out["status"], "pending");
        assert_eq!(out["first_customer_message_ts"], Value::Null);
    }

    #[test]
    fn content_is_bounded_whatever_the_event_says() {
        let labels: Vec<String> = (0..300).map(|i| format!("l{}", i % 30)).collect();
        let c = Conversation::from_json(&json!({
            "labels": labels, "assignee": "not a user", "product_id": "p".repeat(129),
            "order_id": "", "contact": {"organisation": "ACME", "name": "n".repeat(256)},
            "language": "klingon",
        }))
        .bounded();
        assert_eq!(c.labels.len(), MAX_LABELS);
        assert_eq!(c.labels[0], "l0");
        assert_eq!(c.assignee, None);
        assert_eq!((c.product_id, c.order_id), (None, None));
        assert_eq!(c.contact.organisation.as_deref(), Some("ACME"));
        assert_eq!(c.contact.name, None);
        assert_eq!(c.language, None);
        let ok =
            Conversation::from_json(&json!({"assignee": "@ana:x", "labels": [" vip ", "vip"]}));
        assert_eq!(ok.clone().bounded().labels, vec!["vip".to_owned()]);
        assert_eq!(
            ok.bounded().assignee.as_deref().map(|a| a.as_str()),
            Some("@ana:x")
        );
        // Read and written as the string it always was.
        assert_eq!(ok_json_assignee(), json!("@ana:x"));
        let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert!(valid_labels(&many).is_err());
        assert_eq!(valid_labels(&many[..20]).unwrap().len(), 20);
        assert!(valid_labels(&["".into()]).is_err());
    }

    fn ok_json_assignee() -> Value {
        Conversation::from_json(&json!({"assignee": "@ana:x"})).to_json()["assignee"].clone()
    }

    #[test]
    fn enums_round_trip_by_name() {
        for n in Status::NAMES {
            assert_eq!(Status::parse(n).unwrap().as_str(), *n);
        }
        for n in Priority::NAMES {
            assert_eq!(Priority::parse(n).unwrap().as_str(), *n);
        }
        for n in Channel::NAMES {
            assert_eq!(Channel::parse(n).unwrap().as_str(), *n);
        }
        assert_eq!(Status::parse("bogus"), None);
    }
}
