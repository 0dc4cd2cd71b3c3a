//! What the bridge bot tells agents, in the room's language: the one its support-desk
//! conversation (`io.charla.conversation`) names (`!language es`), when the bridge has notices
//! in it, else the bridge's `language`. Every notice carries `"io.charla.internal": true`: it
//! is for agents and never reaches the customer.

use appservice::HandlerError;
use ruma::RoomId;
use serde_json::{Value, json};

use crate::bridge::Bridge;

/// The support desk's state event of a conversation; its `language` is the room's.
pub const CONVERSATION_EVENT: &str = "io.charla.conversation";

/// Languages the notices are written in.
const LANGUAGES: &[&str] = &["en", "es"];

impl Bridge {
    /// The language of notices in `room`.
    pub(crate) fn language_of(&self, room: &RoomId) -> String {
        self.store
            .portal_by_room(room)
            .ok()
            .flatten()
            .and_then(|portal| notice_language(portal.language.as_deref()?))
            .unwrap_or_else(|| self.config.language.clone())
    }

    /// Keeps the language of a portal's conversation when its state changes.
    pub(crate) async fn conversation_changed(
        &self,
        room_id: &RoomId,
        content: &Value,
    ) -> Result<(), HandlerError> {
        let Some(mut portal) = self.store.portal_by_room(room_id)? else {
            return Ok(());
        };
        let language = content["language"].as_str().map(str::to_owned);
        if portal.language != language {
            portal.language = language;
            self.store.save_portal(&portal)?;
            self.store.flush().await?;
        }
        Ok(())
    }
}

/// The notices' language for a tag (`es-MX` → `es`), if they are written in it.
fn notice_language(tag: &str) -> Option<String> {
    let primary = tag.split('-').next()?.to_ascii_lowercase();
    LANGUAGES.contains(&primary.as_str()).then_some(primary)
}

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
    /// A message of the customer the homeserver would not take, kept aside for an operator.
    SetAside { reason: String },
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
            Self::SetAside { reason } if es => format!(
                "Un mensaje del cliente no se puede mostrar aquí (el servidor lo rechaza: {reason}). Queda guardado para un administrador en los mensajes apartados del puente."
            ),
            Self::SetAside { reason } => format!(
                "A message from the customer cannot be shown here (the homeserver refuses it: {reason}). It is kept for an administrator in the bridge's dead letters."
            ),
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
