//! The email channel end to end: a real Charla running the email bridge in process (talking
//! to it only through the Application Service API), customers writing with a real SMTP client
//! library (lettre) into its SMTP listener, and a recording SMTP server on loopback as the
//! relay agents' answers go out through.

mod auth;
mod inbound;
mod kill;
mod outbound;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use email::smtp::{Envelope, MailSink, Refusal, Settings};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;

use crate::common::{Client, TestServer, V3, enc};

pub const DESK: &str = "support@desk.test";

/// How the test relay answers `DATA`.
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    Accept,
    /// `451`: the bridge must retry.
    Later,
    /// `554`: the bridge must give up and say why.
    Refuse,
}

/// What the relay was given.
#[derive(Default)]
pub struct Recorded {
    pub mails: Mutex<Vec<(Envelope, String)>>,
    pub mode: Mutex<Option<Mode>>,
}

impl MailSink for Recorded {
    fn accepts_recipient(&self, _: &str) -> bool {
        true
    }

    fn check_sender(&self, _: &str, _: std::net::IpAddr) -> Result<(), Refusal> {
        Ok(())
    }

    async fn deliver(&self, envelope: Envelope, message: Vec<u8>) -> Result<(), Refusal> {
        match self.mode.lock().unwrap_or(Mode::Accept) {
            Mode::Accept => {}
            Mode::Later => return Err(Refusal::Temporary("try later".into())),
            Mode::Refuse => {
                return Err(Refusal::Permanent(
                    "5.7.1 relaying denied for this recipient".into(),
                ));
            }
        }
        let text = String::from_utf8_lossy(&message).into_owned();
        self.mails.lock().push((envelope, text));
        Ok(())
    }
}

/// The test relay: an SMTP server on a fixed loopback port that records every mail; it can be
/// stopped (the port refuses connections) and started again on the same port.
pub struct Relay {
    pub port: u16,
    pub recorded: Arc<Recorded>,
    stop: Option<watch::Sender<bool>>,
}

impl Relay {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut relay = Relay {
            port,
            recorded: Arc::new(Recorded::default()),
            stop: None,
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = watch::channel(false);
        let settings = Arc::new(Settings {
            hostname: "relay.test".into(),
            max_message_bytes: 64 << 20,
            max_connections: 64,
            max_recipients: 10,
            tls: None,
            command_timeout: Duration::from_secs(30),
        });
        tokio::spawn(email::smtp::serve(
            listener,
            settings,
            self.recorded.clone(),
            stopped,
        ));
        self.stop = Some(stop);
    }

    pub fn down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }

    pub async fn up(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(error) if tries < 100 => {
                    tries += 1;
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("relay port {}: {error}", self.port),
            }
        };
        self.serve(listener);
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.recorded.mode.lock() = Some(mode);
    }

    /// Waits for the relay to hold `count` mails; returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<(Envelope, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let mails = self.recorded.mails.lock();
                if mails.len() >= count {
                    return mails.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the relay got {} mails, not {count}",
                self.recorded.mails.lock().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn count(&self) -> usize {
        self.recorded.mails.lock().len()
    }
}

/// A Charla with the email bridge, an agent invited to every conversation, and the relay.
pub struct Rig {
    pub s: TestServer,
    pub agent: Client,
    pub relay: Relay,
}

impl Rig {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// `extra` goes into `[bridges.email]`.
    pub async fn start_with(extra: &str) -> Self {
        Self::start_greeting(extra, "").await
    }

    /// With the support bot's `greeting` (empty: it greets nobody). `support.desk_appservices`
    /// names only WhatsApp, as a config written before the email bridge was enabled: the
    /// server adds the bridge it runs.
    pub async fn start_greeting(extra: &str, greeting: &str) -> Self {
        let relay = Relay::start().await;
        let config = format!(
            "[bridges.email]\nenabled = true\naddress = \"{DESK}\"\n\
             smtp_listen = \"127.0.0.1:0\"\nsmtp_relay = \"smtp+plain://127.0.0.1:{}\"\n\
             invite = [\"@agent:localhost\", \"@support:localhost\"]\n{auth}\
             max_retry_secs = 1\n{extra}\n\
             [support]\ngreeting = {greeting:?}\nadmins = [\"@agent:localhost\"]\n\
             desk_appservices = [\"whatsapp\"]\n\
             [metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
            relay.port,
            // No DNS in tests but the auth test's own.
            auth = if extra.contains("authenticate") {
                ""
            } else {
                "authenticate = false\n"
            },
        );
        let s = TestServer::start_with(&config).await;
        let agent = s.user("agent").await;
        let (status, _) = agent
            .put(
                &format!("{V3}/profile/{}/displayname", enc("@agent:localhost")),
                serde_json::json!({"displayname": "Ana"}),
            )
            .await;
        assert_eq!(status, 200);
        Rig { s, agent, relay }
    }

    pub fn smtp(&self) -> SocketAddr {
        self.s.server.email.as_ref().unwrap().smtp_addr()
    }

    pub fn bridge(&self) -> &Arc<email::Bridge> {
        self.s.server.email.as_ref().unwrap().bridge()
    }

    /// Sends `raw` from `from` to the desk with lettre, as a customer's MTA would.
    pub async fn send_raw(
        &self,
        from: &str,
        raw: &[u8],
    ) -> Result<Response, lettre::transport::smtp::Error> {
        send_raw(self.smtp(), from, DESK, raw).await
    }

    /// Waits for an invite to a room the agent has not joined yet, joins it; its id.
    pub async fn next_conversation(&self, joined: &mut Vec<String>) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sync = self.agent.sync(None, 0).await;
            if let Some(invites) = sync["rooms"]["invite"].as_object() {
                for room in invites.keys() {
                    if !joined.contains(room) {
                        let (status, body) = self.agent.join(room).await;
                        assert_eq!(status, 200, "{body}");
                        joined.push(room.clone());
                        return room.clone();
                    }
                }
            }
            assert!(Instant::now() < deadline, "no new conversation");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The room's `m.room.message` events, oldest first.
    pub async fn messages(&self, room: &str) -> Vec<Value> {
        let (status, body) = self
            .agent
            .get(&format!(
                "{V3}/rooms/{}/messages?dir=b&limit=100",
                enc(room)
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        let mut events: Vec<Value> = body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .cloned()
            .collect();
        events.reverse();
        events
    }

    /// Waits until the room holds `count` messages from the customer (not the bridge bot).
    pub async fn wait_messages(&self, room: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages: Vec<Value> = self
                .messages(room)
                .await
                .into_iter()
                .filter(|m| m["sender"].as_str().unwrap_or("").starts_with("@email_"))
                .collect();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{room} has {} customer messages, not {count}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a message of the bridge bot in `room` that `matches`.
    pub async fn wait_bot_message(&self, room: &str, matches: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .messages(room)
                .await
                .iter()
                .any(|m| m["sender"] == "@emailbot:localhost" && matches(m));
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no such message of the bridge bot in {room}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the delivery state of an agent's message to be `status`.
    pub async fn delivery(&self, event_id: &str, status: &str) -> email::store::Delivery {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(delivery) = self.bridge().delivery(event_id)
                && delivery.status == status
            {
                return delivery;
            }
            assert!(
                Instant::now() < deadline,
                "delivery of {event_id}: {:?}, not {status}",
                self.bridge().delivery(event_id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends `raw` with lettre from `from` to `to` through the SMTP server at `at`.
pub async fn send_raw(
    at: SocketAddr,
    from: &str,
    to: &str,
    raw: &[u8],
) -> Result<Response, lettre::transport::smtp::Error> {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(at.ip().to_string())
        .port(at.port())
        .build();
    let envelope =
        lettre::address::Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()])
            .unwrap();
    transport.send_raw(&envelope, raw).await
}

/// A plain mail as raw RFC 5322 text (CRLF line ends).
pub fn plain_mail(
    from: &str,
    subject: &str,
    message_id: &str,
    headers: &str,
    body: &str,
) -> Vec<u8> {
    let mut mail = format!(
        "From: {from}\r\nTo: {DESK}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
         Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n{headers}\r\n"
    );
    mail.push_str(&body.replace('\n', "\r\n"));
    mail.push_str("\r\n");
    mail.into_bytes()
}

/// The value of a header in a raw mail (first occurrence, unfolded).
pub fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if let Some((key, value)) = line.split_once(':')
            && key.eq_ignore_ascii_case(name)
        {
            let mut value = value.trim().to_owned();
            while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
                value.push(' ');
                value.push_str(next.trim());
                lines.next();
            }
            return Some(value);
        }
    }
    None
}

/// Sends `raw` from the null sender (`MAIL FROM:<>`, as bounces come), speaking SMTP by hand:
/// lettre's envelope cannot be empty. Asserts every step's answer.
pub async fn send_from_null_sender(at: SocketAddr, raw: &[u8]) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(at).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut expect = async |code: &str| loop {
        let line = lines.next_line().await.unwrap().unwrap();
        assert!(line.starts_with(code), "{line}, not {code}");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    expect("220").await;
    for (command, code) in [
        ("EHLO mx.example.org", "250"),
        ("MAIL FROM:<>", "250"),
        (&*format!("RCPT TO:<{DESK}>"), "250"),
        ("DATA", "354"),
    ] {
        write
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        expect(code).await;
    }
    write.write_all(raw).await.unwrap();
    write.write_all(b".\r\n").await.unwrap();
    expect("250").await;
    write.write_all(b"QUIT\r\n").await.unwrap();
}
