//! What the bridge bot tells agents, in the bridge's language (`language`: `en` or `es`).
//! Every notice carries `"io.charla.internal": true`: it is for agents and never reaches the
//! customer.

use serde_json::{Value, json};

/// A notice the bridge posts in a portal.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// WhatsApp is unreachable; the message waits in the queue.
    Pending,
    /// The queued messages went out after all.
    Resumed,
    /// Outside the 24-hour customer service window.
    NeedsTemplate { reason: String },
    /// WhatsApp refused the message for good.
    Failed { code: Option<i64>, reason: String },
    /// The agent's message has nothing WhatsApp can carry (e.g. an edit, an unknown type).
    Unsupported { what: String },
}

impl Notice {
    pub fn text(&self, language: &str) -> String {
        let es = language == "es";
        match self {
            Self::Pending if es => "WhatsApp no responde: el mensaje queda en cola y se enviará en cuanto vuelva.".into(),
            Self::Pending => "WhatsApp is not answering: the message is queued and will be sent as soon as it is back.".into(),
            Self::Resumed if es => "WhatsApp vuelve a responder: los mensajes en cola se han enviado.".into(),
            Self::Resumed => "WhatsApp is answering again: the queued messages have been sent.".into(),
            Self::NeedsTemplate { reason } if es => format!(
                "No enviado: han pasado más de 24 horas desde el último mensaje del cliente, así que WhatsApp solo admite una plantilla aprobada. Usa !template NOMBRE [parámetros…]. ({reason})"
            ),
            Self::NeedsTemplate { reason } => format!(
                "Not sent: more than 24 hours have passed since the customer last wrote, so WhatsApp only accepts an approved template. Re-engage them with !template NAME [params…]. ({reason})"
            ),
            Self::Failed { code, reason } if es => {
                format!("WhatsApp no entregó el mensaje{}: {reason}", code_suffix(*code))
            }
            Self::Failed { code, reason } => {
                format!("WhatsApp did not deliver the message{}: {reason}", code_suffix(*code))
            }
            Self::Unsupported { what } if es => {
                format!("No se puede enviar a WhatsApp: {what}.")
            }
            Self::Unsupported { what } => format!("Cannot be sent to WhatsApp: {what}."),
        }
    }

    /// The `m.notice` content.
    pub fn content(&self, language: &str) -> Value {
        json!({
            "msgtype": "m.notice",
            "body": self.text(language),
            "io.charla.internal": true,
        })
    }
}

fn code_suffix(code: Option<i64>) -> String {
    code.map(|c| format!(" (error {c})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_speak_the_configured_language() {
        let n = Notice::Failed {
            code: Some(131026),
            reason: "Message undeliverable".into(),
        };
        assert_eq!(
            n.text("en"),
            "WhatsApp did not deliver the message (error 131026): Message undeliverable"
        );
        assert_eq!(
            n.text("es"),
            "WhatsApp no entregó el mensaje (error 131026): Message undeliverable"
        );
        assert_eq!(n.content("en")["io.charla.internal"], true);
    }
}
