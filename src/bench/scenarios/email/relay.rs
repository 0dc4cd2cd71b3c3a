//! The recording SMTP relay the bridge's answers go out through, and reading its mails back.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::BIG_MAIL;
use crate::bench::client::BoxError;

/// One mail the relay took: summarised, not kept (but for the big one).
pub(super) struct Relayed {
    pub(super) at: Instant,
    pub(super) to: String,
    pub(super) message_id: Option<String>,
    /// The bench's answer in it: (conversation, number).
    pub(super) tag: Option<(usize, usize)>,
}

/// The relay's record.
#[derive(Default)]
pub(super) struct Sink {
    pub(super) mails: Mutex<Vec<Relayed>>,
    /// The last mail over [`BIG_MAIL`], whole, and when it came.
    pub(super) big: Mutex<Option<(Instant, Vec<u8>)>>,
}

impl email::smtp::MailSink for Sink {
    fn accepts_recipient(&self, _: &str) -> bool {
        true
    }

    fn check_sender(&self, _: &str, _: std::net::IpAddr) -> Result<(), email::smtp::Refusal> {
        Ok(())
    }

    async fn deliver(
        &self,
        envelope: email::smtp::Envelope,
        message: Vec<u8>,
    ) -> Result<(), email::smtp::Refusal> {
        let at = Instant::now();
        let to = envelope.recipients.first().cloned().unwrap_or_default();
        if message.len() > BIG_MAIL {
            let message_id = header(&message, "Message-ID");
            self.mails.lock().push(Relayed {
                at,
                to,
                message_id,
                tag: None,
            });
            *self.big.lock() = Some((at, message));
        } else {
            let relayed = Relayed {
                at,
                to,
                message_id: header(&message, "Message-ID"),
                tag: answer_tag(&message),
            };
            self.mails.lock().push(relayed);
        }
        Ok(())
    }
}

/// A recording SMTP server on loopback, as the bridge's relay.
pub(super) struct Relay {
    pub(super) port: u16,
    pub(super) sink: Arc<Sink>,
    stop: watch::Sender<bool>,
}

impl Relay {
    pub(super) async fn start() -> Result<Relay, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let settings = Arc::new(email::smtp::Settings {
            hostname: "relay.bench".into(),
            max_message_bytes: 64 << 20,
            max_connections: 1024,
            max_recipients: 10,
            tls: None,
            command_timeout: Duration::from_secs(120),
        });
        let sink = Arc::new(Sink::default());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(email::smtp::serve(
            listener,
            settings,
            sink.clone(),
            stopped,
        ));
        Ok(Relay { port, sink, stop })
    }

    pub(super) fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// The value of a header of a raw mail (first occurrence, first line).
fn header(mail: &[u8], name: &str) -> Option<String> {
    let end = mail
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(mail.len());
    let head = String::from_utf8_lossy(&mail[..end]);
    head.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// The text of the `i`th answer into conversation `r`.
pub(super) fn answer_text(r: usize, i: usize) -> String {
    format!("Respuesta {r}/{i} del agente.")
}

/// `(r, i)` of the answer a relayed mail carries.
fn answer_tag(mail: &[u8]) -> Option<(usize, usize)> {
    let text = String::from_utf8_lossy(mail);
    let rest = &text[text.find("Respuesta ")? + "Respuesta ".len()..];
    let (r, rest) = rest.split_once('/')?;
    let i: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((r.parse().ok()?, i.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_answers_are_read_back() {
        let mail = format!(
            "Message-ID: <x@desk>\r\nSubject: Re\r\n\r\n--B\r\n\
             Content-Type: text/plain\r\n\r\n{}\r\n--B\r\n\
             Content-Disposition: attachment; filename=\"f.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAw==\r\n--B--\r\n",
            answer_text(12, 345)
        );
        assert_eq!(header(mail.as_bytes(), "message-id").unwrap(), "<x@desk>");
        assert_eq!(answer_tag(mail.as_bytes()), Some((12, 345)));
    }
}
