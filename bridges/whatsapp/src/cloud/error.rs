//! Error bodies: the Graph API's `{"error": {...}}` answer and the `errors[]` objects of
//! webhooks (statuses, messages and the change itself).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"error": {"message", "type", "code", "error_data", "error_subcode", "fbtrace_id"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphErrorBody {
    pub error: GraphError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphError {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<ErrorData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub fbtrace_id: String,
}

/// `error_data` of both shapes: `details` is what explains the error to a human.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    #[serde(default)]
    pub details: String,
}

/// One `errors[]` entry of a webhook: `{"code", "title", "message", "error_data": {"details"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudError {
    pub code: i64,
    #[serde(default)]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<ErrorData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

impl CloudError {
    /// The most helpful text: the details, else the message, else the title.
    pub fn reason(&self) -> String {
        self.error_data
            .as_ref()
            .map(|d| d.details.clone())
            .filter(|d| !d.is_empty())
            .or_else(|| self.message.clone().filter(|m| !m.is_empty()))
            .unwrap_or_else(|| self.title.clone())
    }
}

impl GraphError {
    /// The most helpful text: the details, else the message.
    pub fn reason(&self) -> String {
        self.error_data
            .as_ref()
            .map(|d| d.details.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.message.clone())
    }
}

/// What the bridge does about a failed Graph call, by error code (Meta's error code reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The API may answer next time: keep the message queued and retry.
    Transient,
    /// Throughput or rate limit (`130429`, `80007`, `131056`, `4`): wait longer, then retry.
    RateLimited,
    /// Outside the 24-hour customer service window (`131047`): needs a template.
    ReEngagement,
    /// Anything else: report, do not retry.
    Permanent,
}

/// Classifies a Graph error code.
pub fn classify(code: i64) -> ErrorClass {
    match code {
        // API Unknown, API Service (temporarily unavailable), generic "Something went wrong",
        // "Service unavailable".
        1 | 2 | 131000 | 131016 => ErrorClass::Transient,
        4 | 80007 | 130429 | 131056 => ErrorClass::RateLimited,
        131047 => ErrorClass::ReEngagement,
        _ => ErrorClass::Permanent,
    }
}

/// A value that Meta documents as a string but sometimes sends as a number (`file_size`,
/// timestamps): accepted as either.
pub fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}
