//! One SMTP conversation: the state machine of RFC 5321 §4.1.4 over a plain or TLS stream.
//!
//! Replies are queued and written when the session is about to wait for input, so a pipelining
//! client (RFC 2920) gets one packet per group of commands; every wait is bounded by the idle
//! timeout, and a session that keeps erring is closed.

use std::{io, mem, net::IpAddr, sync::Arc, time::SystemTime};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::watch,
};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::{
    Envelope, MailSink, Refusal, Settings,
    command::{self, Command, ParseError},
    data::{self, DataEnd, MAX_LINE, Piece},
};

/// The stream a session speaks over: plain TCP, or TLS after STARTTLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Failed commands allowed before the session is ended: enough for any honest client, few enough
/// that a directory-harvesting or fuzzing client is cut off.
const MAX_ERRORS: usize = 100;
/// How long a closing session waits for the client to stop sending, so the kernel closes with a
/// FIN (and the last reply is read) rather than a reset over unread input.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// The longest text of a sink's refusal quoted in a reply.
const MAX_REASON: usize = 400;

/// The mail transaction between MAIL FROM and the end of DATA (or RSET).
struct Transaction {
    from: String,
    recipients: Vec<String>,
    smtputf8: bool,
}

/// What the command loop does after a command.
enum Flow {
    Continue,
    StartTls,
    /// Send what is queued, then close.
    Close,
    /// The client said QUIT: send the 221 and close, without waiting on it.
    Quit,
    /// The connection is gone: nothing more can be sent.
    Gone,
}

/// The state of one connection: its stream, where the client is in the conversation, and how
/// often it has erred.
pub(super) struct Session<S> {
    io: BufReader<Box<dyn Io>>,
    /// Replies not yet written.
    out: Vec<u8>,
    settings: Arc<Settings>,
    sink: Arc<S>,
    shutdown: watch::Receiver<bool>,
    peer: IpAddr,
    /// The client's EHLO/HELO domain, and whether it said EHLO.
    helo: Option<(String, bool)>,
    tls: bool,
    transaction: Option<Transaction>,
    errors: usize,
}

impl<S: MailSink> Session<S> {
    pub(super) fn new(
        stream: TcpStream,
        peer: IpAddr,
        settings: Arc<Settings>,
        sink: Arc<S>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Session {
            io: BufReader::new(Box::new(stream)),
            out: Vec::new(),
            settings,
            sink,
            shutdown,
            peer,
            helo: None,
            tls: false,
            transaction: None,
            errors: 0,
        }
    }

    /// Greets the client and serves its commands until it quits, errs too often, times out, the
    /// listener shuts down, or the connection fails.
    pub(super) async fn run(mut self) {
        debug!("session opened");
        let host = self.settings.hostname.clone();
        self.reply(format!("220 {host} ESMTP Charla"));
        let result = self.command_loop().await;
        match result {
            Ok(Flow::Gone) => debug!("session ended by the client"),
            Ok(flow) => {
                self.close(matches!(flow, Flow::Close)).await;
                debug!("session closed");
            }
            Err(e) => debug!(error = %e, "session failed"),
        }
    }

    /// Reads and answers commands until one ends the session; says how it ended.
    async fn command_loop(&mut self) -> io::Result<Flow> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let flow = match self.next_line(&mut line).await? {
                Some(Piece::Line) => self.handle_line(&line).await?,
                Some(Piece::Partial) => {
                    self.reply("500 5.5.2 Line too long");
                    Flow::Close
                }
                Some(Piece::Eof) => Flow::Gone,
                None => Flow::Close,
            };
            match flow {
                Flow::Continue if self.errors >= MAX_ERRORS => {
                    self.reply("421 4.7.0 Too many errors, closing connection");
                    return Ok(Flow::Close);
                }
                Flow::Continue => {}
                Flow::StartTls => self.start_tls().await?,
                Flow::Close | Flow::Quit | Flow::Gone => return Ok(flow),
            }
        }
    }

    /// Waits for the next command line, first writing the queued replies unless a whole command
    /// is already buffered (the client is pipelining: answer the group at once). `None` when the
    /// wait ended on the idle timeout or the shutdown, with the 421 queued.
    async fn next_line(&mut self, line: &mut Vec<u8>) -> io::Result<Option<Piece>> {
        let mut shutdown = self.shutdown.clone();
        let idle = self.settings.command_timeout;
        let read = async {
            if !self.io.buffer().contains(&b'\n') {
                self.flush().await?;
            }
            data::read_piece(&mut self.io, line, MAX_LINE).await
        };
        let outcome = tokio::select! {
            read = tokio::time::timeout(idle, read) => Some(read),
            () = super::signalled(&mut shutdown) => None,
        };
        let host = &self.settings.hostname;
        let reply = match outcome {
            Some(Ok(piece)) => return piece.map(Some),
            Some(Err(_)) => {
                debug!("idle timeout");
                format!("421 4.4.2 {host} Timeout")
            }
            None => format!("421 4.3.2 {host} Service shutting down"),
        };
        self.reply(reply);
        Ok(None)
    }

    /// Decodes and parses one line, and answers it.
    async fn handle_line(&mut self, line: &[u8]) -> io::Result<Flow> {
        if *self.shutdown.borrow() {
            let host = &self.settings.hostname;
            self.reply(format!("421 4.3.2 {host} Service shutting down"));
            return Ok(Flow::Close);
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Control characters (a bare CR above all) have no place in a command, and would pass
        // from an argument into a reply or the envelope.
        let text = std::str::from_utf8(line).ok();
        let Some(text) = text.filter(|t| !t.chars().any(|c| c.is_control() && c != '\t')) else {
            self.reply("500 5.5.2 Invalid characters in command");
            return Ok(Flow::Continue);
        };
        match command::parse(text) {
            Ok(command) => self.handle(command).await,
            Err(error) => {
                self.reply(match error {
                    ParseError::Unknown => "500 5.5.1 Command unrecognized".to_owned(),
                    ParseError::NotImplemented => "502 5.5.1 Command not implemented".to_owned(),
                    ParseError::Syntax(hint) => format!("501 5.5.4 {hint}"),
                    ParseError::Parameter(what) => format!("555 5.5.4 {what}"),
                });
                Ok(Flow::Continue)
            }
        }
    }

    /// Answers one command according to where the conversation is.
    async fn handle(&mut self, command: Command) -> io::Result<Flow> {
        match command {
            Command::Hello { domain, extended } => self.hello(domain, extended),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => return self.data().await,
            Command::Rset => {
                self.transaction = None;
                self.reply("250 2.0.0 OK");
            }
            Command::Noop => self.reply("250 2.0.0 OK"),
            Command::Vrfy => self
                .reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"),
            Command::Help => self.reply(
                "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS",
            ),
            Command::Quit => {
                let host = &self.settings.hostname;
                self.reply(format!("221 2.0.0 {host} closing connection"));
                return Ok(Flow::Quit);
            }
            Command::StartTls if self.settings.tls.is_none() => {
                self.reply("502 5.5.1 STARTTLS not offered");
            }
            Command::StartTls if self.tls => self.reply("503 5.5.1 Already in TLS"),
            Command::StartTls => {
                self.reply("220 2.0.0 Ready to start TLS");
                return Ok(Flow::StartTls);
            }
        }
        Ok(Flow::Continue)
    }

    /// EHLO/HELO: (re)starts the session, dropping any transaction (RFC 5321 §4.1.4).
    fn hello(&mut self, domain: String, extended: bool) {
        debug!(helo = %domain, extended, "hello");
        self.transaction = None;
        self.helo = Some((domain, extended));
        let host = &self.settings.hostname;
        if !extended {
            self.reply(format!("250 {host}"));
            return;
        }
        let mut lines = vec![
            host.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.settings.max_message_bytes),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "SMTPUTF8".to_owned(),
        ];
        if self.settings.tls.is_some() && !self.tls {
            lines.push("STARTTLS".to_owned());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let separator = if i == last { ' ' } else { '-' };
            self.out
                .extend_from_slice(format!("250{separator}{line}\r\n").as_bytes());
        }
    }

    /// MAIL FROM: opens a transaction once the declared size fits and the sink lets the sender
    /// (and its rate) through.
    fn mail(&mut self, from: String, params: command::MailParams) {
        if self.helo.is_none() {
            return self.reply("503 5.5.1 Send EHLO or HELO first");
        }
        if self.transaction.is_some() {
            return self.reply("503 5.5.1 Sender already specified");
        }
        if !from.is_ascii() && !params.smtputf8 {
            return self.reply("553 5.6.7 Non-ASCII address requires SMTPUTF8");
        }
        let limit = u64::try_from(self.settings.max_message_bytes).unwrap_or(u64::MAX);
        if params.size.is_some_and(|size| size > limit) {
            return self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
        }
        match self.sink.check_sender(&from, self.peer) {
            Ok(()) => {
                self.transaction = Some(Transaction {
                    from,
                    recipients: Vec::new(),
                    smtputf8: params.smtputf8,
                });
                self.reply("250 2.1.0 Sender OK");
            }
            Err(Refusal::Temporary(reason)) => self.reply(format!("450 4.7.1 {}", line(&reason))),
            Err(Refusal::Permanent(reason)) => self.reply(format!("550 5.7.1 {}", line(&reason))),
        }
    }

    /// RCPT TO: adds a recipient the sink takes, up to the limit per message.
    fn rcpt(&mut self, to: String) {
        let Some(transaction) = &mut self.transaction else {
            return self.reply("503 5.5.1 Need MAIL before RCPT");
        };
        if !to.is_ascii() && !transaction.smtputf8 {
            return self.reply("553 5.6.7 Non-ASCII address requires SMTPUTF8");
        }
        if transaction.recipients.len() >= self.settings.max_recipients {
            return self.reply("452 4.5.3 Too many recipients");
        }
        if !self.sink.accepts_recipient(&to) {
            return self.reply(format!("550 5.1.1 <{to}>: no such recipient here"));
        }
        if !transaction.recipients.contains(&to) {
            transaction.recipients.push(to);
        }
        self.reply("250 2.1.5 Recipient OK");
    }

    /// DATA: reads the message and hands it to the sink, answering 250 only once the sink has
    /// it durably. The transaction ends whatever the outcome, as RSET would.
    async fn data(&mut self) -> io::Result<Flow> {
        let Some(transaction) = &self.transaction else {
            self.reply("503 5.5.1 Need MAIL before DATA");
            return Ok(Flow::Continue);
        };
        if transaction.recipients.is_empty() {
            self.reply("554 5.5.1 No valid recipients");
            return Ok(Flow::Continue);
        }
        let (helo, extended) = self.helo.clone().unwrap_or_default();
        let protocol = match (self.tls, extended) {
            (true, _) => "ESMTPS",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        };
        let host = self.settings.hostname.clone();
        let header = data::received_header(&helo, self.peer, &host, protocol, SystemTime::now());
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        self.flush().await?;
        let (max, idle) = (
            self.settings.max_message_bytes,
            self.settings.command_timeout,
        );
        let end = data::read_data(&mut self.io, header, max, idle).await?;
        let Some(transaction) = self.transaction.take() else {
            return Ok(Flow::Continue);
        };
        let message = match end {
            DataEnd::Message(message) => message,
            DataEnd::TooBig | DataEnd::Abandoned => {
                debug!("message over the size limit refused");
                self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
                let abandoned = matches!(end, DataEnd::Abandoned);
                return Ok(if abandoned {
                    Flow::Close
                } else {
                    Flow::Continue
                });
            }
            DataEnd::Eof => return Ok(Flow::Gone),
            DataEnd::Timeout => {
                self.reply(format!("421 4.4.2 {host} Timeout"));
                return Ok(Flow::Close);
            }
        };
        let (size, recipients) = (message.len(), transaction.recipients.len());
        let envelope = Envelope {
            mail_from: transaction.from,
            recipients: transaction.recipients,
            peer: self.peer,
            helo,
            tls: self.tls,
        };
        match self.sink.deliver(envelope, message).await {
            Ok(()) => {
                debug!(size, recipients, "message queued");
                self.reply("250 2.0.0 OK queued");
            }
            Err(Refusal::Temporary(reason)) => {
                debug!(reason = %reason, "delivery deferred");
                self.reply(format!("451 4.3.0 {}", line(&reason)));
            }
            Err(Refusal::Permanent(reason)) => {
                debug!(reason = %reason, "delivery refused");
                self.reply(format!("554 5.6.0 {}", line(&reason)));
            }
        }
        Ok(Flow::Continue)
    }

    /// STARTTLS after its 220: the handshake, then a fresh session (RFC 3207 §4.2). Input the
    /// client sent after STARTTLS, still plaintext in the buffer, is dropped unread: an attacker
    /// on the path could have appended it, and it must not pass for commands inside TLS.
    async fn start_tls(&mut self) -> io::Result<()> {
        let Some(config) = self.settings.tls.clone() else {
            return Ok(());
        };
        self.flush().await?;
        let placeholder: Box<dyn Io> = Box::new(tokio::io::empty());
        let plain = mem::replace(&mut self.io, BufReader::new(placeholder));
        if !plain.buffer().is_empty() {
            let dropped = plain.buffer().len();
            debug!(dropped, "discarding input pipelined after STARTTLS");
        }
        let accept = TlsAcceptor::from(config).accept(plain.into_inner());
        let stream = tokio::time::timeout(self.settings.command_timeout, accept)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        debug!("TLS established");
        self.io = BufReader::new(Box::new(stream));
        self.tls = true;
        self.helo = None;
        self.transaction = None;
        Ok(())
    }

    /// Queues one reply line. Every 5xx counts toward the errors that end the session.
    fn reply(&mut self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if text.starts_with('5') {
            self.errors += 1;
        }
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes the queued replies, within the idle timeout (a client that does not read must not
    /// hold the session forever).
    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = mem::take(&mut self.out);
        let write = async {
            self.io.write_all(&out).await?;
            self.io.flush().await
        };
        tokio::time::timeout(self.settings.command_timeout, write)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))?
    }

    /// Sends the last replies and closes with a FIN (TLS close_notify first). When the session
    /// ends on the client's fault, `linger` waits a short, bounded time reading what it still
    /// sends: unread input would turn the close into a reset, which can destroy the last reply
    /// before the client reads it.
    async fn close(&mut self, linger: bool) {
        if self.flush().await.is_err() {
            return;
        }
        let finish = async {
            self.io.shutdown().await?;
            if linger {
                let mut sink = tokio::io::sink();
                tokio::io::copy(&mut (&mut self.io).take(MAX_LINE as u64 * 4), &mut sink).await?;
            }
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(LINGER, finish).await;
    }
}

/// A sink's refusal as one short line of reply text: a CR or LF in it would end the reply early
/// and make the rest read as further replies.
fn line(reason: &str) -> String {
    let text: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    if text.trim().is_empty() {
        "No reason given".to_owned()
    } else {
        text
    }
}
