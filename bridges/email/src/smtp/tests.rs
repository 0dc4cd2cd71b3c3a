//! The listener's tests: real sessions on loopback, with lettre and with raw sockets.

use std::{
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    address::Envelope as LettreEnvelope,
    transport::smtp::{
        Error as SmtpError,
        client::{AsyncSmtpConnection, Tls, TlsParameters},
        extension::ClientId,
    },
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
    time::timeout,
};

use super::{
    command::{Command, MailParams, ParseError, parse},
    data::{self, received_header, rfc2822_date},
    *,
};

const WAIT: Duration = Duration::from_secs(10);

/// Records deliveries; takes the two support addresses; rate-limits one sender; can be told
/// that its storage is down.
#[derive(Default)]
struct TestSink {
    delivered: Mutex<Vec<(Envelope, Vec<u8>)>>,
    failing: AtomicBool,
}

impl MailSink for TestSink {
    fn accepts_recipient(&self, address: &str) -> bool {
        matches!(address, "support@example.com" | "support+tag@example.com")
    }

    fn check_sender(&self, from: &str, _peer: IpAddr) -> Result<(), Refusal> {
        if from == "limited@example.com" {
            return Err(Refusal::Temporary("Rate limit exceeded, try later".into()));
        }
        Ok(())
    }

    async fn deliver(&self, envelope: Envelope, message: Vec<u8>) -> Result<(), Refusal> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Refusal::Temporary("Storage unavailable".into()));
        }
        self.delivered.lock().unwrap().push((envelope, message));
        Ok(())
    }
}

impl TestSink {
    fn deliveries(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.delivered.lock().unwrap().clone()
    }
}

fn settings() -> Settings {
    Settings {
        hostname: "mx.test".into(),
        max_message_bytes: 10_000,
        max_connections: 8,
        max_recipients: 50,
        tls: None,
        command_timeout: Duration::from_secs(10),
    }
}

struct Server {
    address: SocketAddr,
    sink: Arc<TestSink>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(settings: Settings) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let sink = Arc::new(TestSink::default());
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(serve(
        listener,
        Arc::new(settings),
        Arc::clone(&sink),
        shutdown,
    ));
    Server {
        address,
        sink,
        stop,
        task,
    }
}

fn lettre_client(server: &Server) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.address.port())
        .timeout(Some(WAIT))
        .build()
}

fn envelope(from: &str, to: &str) -> LettreEnvelope {
    LettreEnvelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap()
}

fn code(error: &SmtpError) -> String {
    error.status().map(|c| c.to_string()).unwrap_or_default()
}

/// The message after the listener's `Received:` header, which it checks is first and folded.
fn split_received(message: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(message);
    assert!(text.starts_with("Received: from "), "{text}");
    // The header ends at the first line that is not a continuation.
    let mut end = 0;
    for (i, line) in text.split_inclusive("\r\n").enumerate() {
        if i > 0 && !line.starts_with('\t') {
            break;
        }
        end += line.len();
    }
    (text[..end].to_owned(), message[end..].to_vec())
}

/// A raw SMTP client: lines out, whole (multi-line) replies in.
struct Raw<T> {
    io: BufReader<T>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Raw<T> {
    async fn send(&mut self, text: &str) {
        self.io.get_mut().write_all(text.as_bytes()).await.unwrap();
    }

    /// The next reply, its lines joined with '\n' (empty at EOF).
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let n = timeout(WAIT, self.io.read_line(&mut line))
                .await
                .expect("reply timed out")
                .unwrap_or(0);
            if n == 0 {
                return reply;
            }
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            reply.push_str(line.trim_end());
            if line.as_bytes().get(3) == Some(&b' ') {
                return reply;
            }
            reply.push('\n');
        }
    }

    async fn command(&mut self, text: &str) -> String {
        self.send(&format!("{text}\r\n")).await;
        self.reply().await
    }

    /// Whether the server closed the connection (EOF or reset) without saying more.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match timeout(WAIT, self.io.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }
}

async fn connect(server: &Server) -> Raw<TcpStream> {
    let stream = TcpStream::connect(server.address).await.unwrap();
    let mut raw = Raw {
        io: BufReader::new(stream),
    };
    assert_eq!(raw.reply().await, "220 mx.test ESMTP Charla");
    raw
}

/// A self-signed certificate for "localhost", as the server's config and the client's root.
fn tls_pair() -> (Arc<rustls::ServerConfig>, rustls::RootCertStore) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    (Arc::new(config), roots)
}

#[tokio::test]
async fn plain_message_is_delivered_once_with_envelope_and_received_first() {
    let server = start(settings()).await;
    let message = Message::builder()
        .from("Customer <customer@example.org>".parse().unwrap())
        .to("support@example.com".parse().unwrap())
        .subject("Help, please")
        .body("My order has not arrived.\r\nThanks!\r\n".to_owned())
        .unwrap();
    let response = lettre_client(&server).send(message.clone()).await.unwrap();
    assert_eq!(response.code().to_string(), "250");

    let deliveries = server.sink.deliveries();
    assert_eq!(deliveries.len(), 1);
    let (envelope, stored) = &deliveries[0];
    assert_eq!(envelope.mail_from, "customer@example.org");
    assert_eq!(envelope.recipients, vec!["support@example.com".to_owned()]);
    assert_eq!(envelope.peer, IpAddr::from([127, 0, 0, 1]));
    assert!(!envelope.helo.is_empty());
    assert!(!envelope.tls);
    let (received, body) = split_received(stored);
    let expected = format!(
        "Received: from {} ([127.0.0.1])\r\n\tby mx.test with ESMTP;\r\n\t",
        envelope.helo
    );
    assert!(received.starts_with(&expected), "{received}");
    assert!(received.ends_with(" +0000\r\n"), "{received}");
    // lettre ends the data with CRLF.CRLF after the message: one more empty line.
    assert_eq!(body, [message.formatted(), b"\r\n".to_vec()].concat());
}

#[tokio::test]
async fn dot_stuffing_is_undone() {
    let server = start(settings()).await;
    let raw =
        b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n. \r\nend";
    lettre_client(&server)
        .send_raw(&envelope("a@example.org", "support@example.com"), raw)
        .await
        .unwrap();
    let deliveries = server.sink.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        split_received(&deliveries[0].1).1,
        [&raw[..], b"\r\n"].concat()
    );
}

#[tokio::test]
async fn bare_lf_lines_are_stored_with_crlf() {
    let server = start(settings()).await;
    let mut raw = connect(&server).await;
    assert!(
        raw.command("EHLO client.test")
            .await
            .starts_with("250-mx.test")
    );
    assert!(
        raw.command("MAIL FROM:<a@example.org>")
            .await
            .starts_with("250")
    );
    assert!(
        raw.command("RCPT TO:<support@example.com>")
            .await
            .starts_with("250")
    );
    assert!(raw.command("DATA").await.starts_with("354"));
    raw.send("Subject: lf\n\nline\n..dot\n.\n").await;
    assert_eq!(raw.reply().await, "250 2.0.0 OK queued");
    let deliveries = server.sink.deliveries();
    assert_eq!(
        split_received(&deliveries[0].1).1,
        b"Subject: lf\r\n\r\nline\r\n.dot\r\n".to_vec()
    );
    assert_eq!(deliveries[0].0.helo, "client.test");
}

#[tokio::test]
async fn two_messages_on_one_connection() {
    let server = start(settings()).await;
    let hello = ClientId::Domain("client.test".into());
    let mut connection =
        AsyncSmtpConnection::connect_tokio1(server.address, Some(WAIT), &hello, None, None)
            .await
            .unwrap();
    connection
        .send(
            &envelope("a@example.org", "support@example.com"),
            b"Subject: one\r\n\r\n1",
        )
        .await
        .unwrap();
    connection
        .send(
            &envelope("b@example.org", "support+tag@example.com"),
            b"Subject: two\r\n\r\n2",
        )
        .await
        .unwrap();
    connection.quit().await.unwrap();
    let deliveries = server.sink.deliveries();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].0.mail_from, "a@example.org");
    assert_eq!(deliveries[1].0.mail_from, "b@example.org");
    assert_eq!(
        deliveries[1].0.recipients,
        vec!["support+tag@example.com".to_owned()]
    );
    assert_eq!(
        split_received(&deliveries[1].1).1,
        b"Subject: two\r\n\r\n2\r\n".to_vec()
    );
}

#[tokio::test]
async fn unknown_recipient_is_refused_with_550() {
    let server = start(settings()).await;
    let error = lettre_client(&server)
        .send_raw(
            &envelope("a@example.org", "nobody@example.com"),
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(code(&error), "550");
    assert!(error.to_string().contains("nobody@example.com"), "{error}");
    assert!(server.sink.deliveries().is_empty());
}

#[tokio::test]
async fn too_big_message_is_refused_with_552_and_nothing_delivered() {
    let server = start(settings()).await;
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..300 {
        big.extend_from_slice(&[b'x'; 78]);
        big.extend_from_slice(b"\r\n");
    }
    let client = lettre_client(&server);
    let error = client
        .send_raw(&envelope("a@example.org", "support@example.com"), &big)
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(code(&error), "552");
    assert!(server.sink.deliveries().is_empty());
    // A message within the limit still goes through.
    client
        .send_raw(
            &envelope("a@example.org", "support@example.com"),
            b"Subject: small\r\n\r\nok\r\n",
        )
        .await
        .unwrap();
    assert_eq!(server.sink.deliveries().len(), 1);
}

#[tokio::test]
async fn rate_limited_sender_gets_transient_450() {
    let server = start(settings()).await;
    let error = lettre_client(&server)
        .send_raw(
            &envelope("limited@example.com", "support@example.com"),
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(code(&error), "450");
    assert!(server.sink.deliveries().is_empty());
}

#[tokio::test]
async fn failing_delivery_gets_transient_451_and_nothing_recorded() {
    let server = start(settings()).await;
    server.sink.failing.store(true, Ordering::SeqCst);
    let error = lettre_client(&server)
        .send_raw(
            &envelope("a@example.org", "support@example.com"),
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(code(&error), "451");
    assert!(server.sink.deliveries().is_empty());
}

#[tokio::test]
async fn ehlo_advertises_size_and_pipelining() {
    let server = start(settings()).await;
    let mut raw = connect(&server).await;
    let reply = raw.command("ehlo client.test").await;
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines[0], "250-mx.test");
    for keyword in [
        "PIPELINING",
        "SIZE 10000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
    ] {
        assert!(
            lines[1..].iter().any(|l| l[4..] == *keyword),
            "{keyword} in {reply}"
        );
    }
    assert!(!reply.contains("STARTTLS"), "{reply}");
    assert!(lines.last().unwrap().starts_with("250 "));
    assert_eq!(raw.command("HELO client.test").await, "250 mx.test");
    assert!(raw.command("HELP").await.starts_with("214 "));
    assert!(raw.command("VRFY support").await.starts_with("252 "));
    assert_eq!(raw.command("NOOP").await, "250 2.0.0 OK");
    assert_eq!(
        raw.command("STARTTLS").await,
        "502 5.5.1 STARTTLS not offered"
    );
    assert!(raw.command("QUIT").await.starts_with("221 2.0.0"));
    assert!(raw.closed().await);
}

#[tokio::test]
async fn sequence_and_syntax_errors() {
    let server = start(settings()).await;
    let mut raw = connect(&server).await;
    assert!(
        raw.command("MAIL FROM:<a@example.org>")
            .await
            .starts_with("503 5.5.1")
    );
    assert!(raw.command("DATA").await.starts_with("503 5.5.1"));
    assert!(raw.command("EHLO client.test").await.starts_with("250"));
    assert!(
        raw.command("RCPT TO:<support@example.com>")
            .await
            .starts_with("503 5.5.1")
    );
    assert!(raw.command("FOO bar").await.starts_with("500 5.5.1"));
    assert!(
        raw.command("MAIL FROM:a@example.org")
            .await
            .starts_with("501 5.5.4")
    );
    assert!(
        raw.command("MAIL FROM:<a@example.org> FOO=1")
            .await
            .starts_with("555 5.5.4")
    );
    assert_eq!(
        raw.command("MAIL FROM:<a@example.org> SIZE=10001").await,
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    assert_eq!(
        raw.command("mail from:<> SIZE=10000 BODY=8BITMIME").await,
        "250 2.1.0 Sender OK"
    );
    assert!(
        raw.command("MAIL FROM:<a@example.org>")
            .await
            .starts_with("503 5.5.1")
    );
    // DATA before any accepted recipient.
    assert_eq!(raw.command("DATA").await, "554 5.5.1 No valid recipients");
    assert_eq!(
        raw.command("RCPT TO:<nobody@example.com>").await,
        "550 5.1.1 <nobody@example.com>: no such recipient here"
    );
    assert!(
        raw.command("RCPT TO:<support@example.com> NOTIFY=NEVER")
            .await
            .starts_with("555")
    );
    assert_eq!(
        raw.command("RCPT TO:<support@example.com> X\rY").await,
        "500 5.5.2 Invalid characters in command"
    );
    assert_eq!(raw.command("RSET").await, "250 2.0.0 OK");
    assert!(
        raw.command("RCPT TO:<support@example.com>")
            .await
            .starts_with("503")
    );
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let server = start(Settings {
        max_recipients: 1,
        ..settings()
    })
    .await;
    let mut raw = connect(&server).await;
    raw.command("EHLO client.test").await;
    raw.command("MAIL FROM:<a@example.org>").await;
    assert_eq!(
        raw.command("RCPT TO:<support@example.com>").await,
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(
        raw.command("RCPT TO:<support+tag@example.com>").await,
        "452 4.5.3 Too many recipients"
    );
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let server = start(settings()).await;
    let mut raw = connect(&server).await;
    raw.command("EHLO client.test").await;
    raw.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n").await;
    assert_eq!(raw.reply().await, "250 2.1.0 Sender OK");
    assert!(raw.reply().await.starts_with("550 5.1.1"));
    assert_eq!(raw.reply().await, "250 2.1.5 Recipient OK");
    assert!(raw.reply().await.starts_with("354 "));
    raw.send("Subject: p\r\n\r\nhi\r\n.\r\nQUIT\r\n").await;
    assert_eq!(raw.reply().await, "250 2.0.0 OK queued");
    assert!(raw.reply().await.starts_with("221 "));
    assert_eq!(
        server.sink.deliveries()[0].0.recipients,
        vec!["support@example.com".to_owned()]
    );
}

#[tokio::test]
async fn overlong_command_line_gets_500_and_close() {
    let server = start(settings()).await;
    let mut raw = connect(&server).await;
    let line = format!("NOOP {}\r\n", "x".repeat(70 * 1024));
    raw.send(&line).await;
    assert_eq!(raw.reply().await, "500 5.5.2 Line too long");
    assert!(raw.closed().await);
}

#[tokio::test]
async fn idle_client_gets_421_timeout() {
    let server = start(Settings {
        command_timeout: Duration::from_millis(200),
        ..settings()
    })
    .await;
    let mut raw = connect(&server).await;
    assert_eq!(raw.reply().await, "421 4.4.2 mx.test Timeout");
    assert!(raw.closed().await);
}

#[tokio::test]
async fn connections_over_the_limit_get_421() {
    let server = start(Settings {
        max_connections: 1,
        ..settings()
    })
    .await;
    let mut first = connect(&server).await;
    let stream = TcpStream::connect(server.address).await.unwrap();
    let mut second = Raw {
        io: BufReader::new(stream),
    };
    assert_eq!(second.reply().await, "421 4.7.0 Too many connections");
    assert!(second.closed().await);
    // The slot comes back when the first session ends.
    first.command("QUIT").await;
    assert!(first.closed().await);
    drop(first);
    let mut third = None;
    for _ in 0..50 {
        let stream = TcpStream::connect(server.address).await.unwrap();
        let mut raw = Raw {
            io: BufReader::new(stream),
        };
        if raw.reply().await.starts_with("220") {
            third = Some(raw);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(third.is_some());
}

#[tokio::test]
async fn too_many_errors_end_the_session() {
    let server = start(settings()).await;
    let mut raw = connect(&server).await;
    for _ in 0..99 {
        assert!(raw.command("BOGUS").await.starts_with("500"));
    }
    // The hundredth still gets its answer, then the session ends.
    assert_eq!(raw.command("BOGUS").await, "500 5.5.1 Command unrecognized");
    assert_eq!(
        raw.reply().await,
        "421 4.7.0 Too many errors, closing connection"
    );
    assert!(raw.closed().await);
}

#[tokio::test]
async fn shutdown_ends_sessions_with_421_and_serve_returns() {
    let server = start(settings()).await;
    let mut raw = connect(&server).await;
    raw.command("EHLO client.test").await;
    server.stop.send(true).unwrap();
    assert_eq!(raw.reply().await, "421 4.3.2 mx.test Service shutting down");
    assert!(raw.closed().await);
    drop(raw);
    timeout(WAIT, server.task).await.unwrap().unwrap();
    assert!(TcpStream::connect(server.address).await.is_err());
}

#[tokio::test]
async fn starttls_with_lettre_delivers_with_tls_flag() {
    let (config, _) = tls_pair();
    let server = start(Settings {
        tls: Some(config),
        ..settings()
    })
    .await;
    let parameters = TlsParameters::builder("localhost".to_owned())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    let client = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.address.port())
        .timeout(Some(WAIT))
        .tls(Tls::Required(parameters))
        .build();
    client
        .send_raw(
            &envelope("a@example.org", "support@example.com"),
            b"Subject: tls\r\n\r\nsecret",
        )
        .await
        .unwrap();
    let deliveries = server.sink.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert!(deliveries[0].0.tls);
    let (received, body) = split_received(&deliveries[0].1);
    assert!(received.contains("by mx.test with ESMTPS;"), "{received}");
    assert_eq!(body, b"Subject: tls\r\n\r\nsecret\r\n".to_vec());
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let (config, roots) = tls_pair();
    let server = start(Settings {
        tls: Some(config),
        ..settings()
    })
    .await;
    let mut raw = connect(&server).await;
    let ehlo = raw.command("EHLO client.test").await;
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"),
        "{ehlo}"
    );
    // The injection: a command in the same packet as STARTTLS, in plaintext.
    raw.send("STARTTLS\r\nRSET\r\n").await;
    assert_eq!(raw.reply().await, "220 2.0.0 Ready to start TLS");
    assert!(raw.io.buffer().is_empty(), "plaintext after the 220");
    let mut byte = [0u8; 1];
    let early = timeout(Duration::from_millis(300), raw.io.get_mut().peek(&mut byte)).await;
    assert!(early.is_err(), "the server answered RSET in plaintext");

    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = raw.io.into_inner();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    let mut secure = Raw {
        io: BufReader::new(tls),
    };
    // The first reply inside TLS answers our EHLO, not the injected RSET; the session
    // starts over, and STARTTLS is neither offered nor allowed again.
    let reply = secure.command("EHLO client.test").await;
    assert!(reply.starts_with("250-mx.test"), "{reply}");
    assert!(!reply.contains("STARTTLS"), "{reply}");
    assert_eq!(secure.command("STARTTLS").await, "503 5.5.1 Already in TLS");
    assert!(
        secure
            .command("MAIL FROM:<a@example.org>")
            .await
            .starts_with("250")
    );
    assert!(
        secure
            .command("RCPT TO:<support@example.com>")
            .await
            .starts_with("250")
    );
    assert!(secure.command("DATA").await.starts_with("354"));
    assert_eq!(
        secure.command("Subject: s\r\n\r\nx\r\n.").await,
        "250 2.0.0 OK queued"
    );
    assert!(server.sink.deliveries()[0].0.tls);
}

#[tokio::test]
async fn starttls_resets_the_session() {
    let (config, roots) = tls_pair();
    let server = start(Settings {
        tls: Some(config),
        ..settings()
    })
    .await;
    let mut raw = connect(&server).await;
    raw.command("EHLO client.test").await;
    raw.command("MAIL FROM:<a@example.org>").await;
    assert_eq!(
        raw.command("STARTTLS").await,
        "220 2.0.0 Ready to start TLS"
    );
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(
            ServerName::try_from("localhost").unwrap(),
            raw.io.into_inner(),
        )
        .await
        .unwrap();
    let mut secure = Raw {
        io: BufReader::new(tls),
    };
    // Before EHLO again, MAIL is out of sequence: the transaction and the EHLO are gone.
    assert!(
        secure
            .command("RCPT TO:<support@example.com>")
            .await
            .starts_with("503")
    );
    assert!(
        secure
            .command("MAIL FROM:<a@example.org>")
            .await
            .starts_with("503")
    );
}

#[tokio::test]
async fn data_is_read_within_bounds() {
    let idle = Duration::from_secs(1);
    // A CRLF split between two pieces of a long line stays one CRLF.
    let mut input = vec![b'a'; data::MAX_LINE - 1];
    input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
    let mut reader = &input[..];
    let end = data::read_data(&mut reader, b"H\r\n".to_vec(), 100_000, idle).await;
    let Ok(data::DataEnd::Message(message)) = end else {
        panic!("{end:?}");
    };
    assert_eq!(message.len(), 3 + data::MAX_LINE + 1);
    assert!(message.ends_with(b"aa\r\n"));
    assert_eq!(
        reader, b"NOOP\r\n",
        "input after the final dot is left unread"
    );

    // Over the limit: read to the dot, keep nothing.
    let mut reader = &b"0123456789\r\nabc\r\n.\r\nNOOP\r\n"[..];
    let end = data::read_data(&mut reader, Vec::new(), 10, idle).await;
    assert!(matches!(end, Ok(data::DataEnd::TooBig)), "{end:?}");
    assert_eq!(reader, b"NOOP\r\n");
    // Exactly at the limit (CRLF counted) is fine.
    let mut reader = &b"01234567\r\n.\r\n"[..];
    let end = data::read_data(&mut reader, Vec::new(), 10, idle).await;
    assert!(matches!(end, Ok(data::DataEnd::Message(m)) if m == b"01234567\r\n"));

    // Far over the limit with no end in sight: given up on.
    let endless = vec![b'x'; 10 * data::MAX_LINE];
    let end = data::read_data(&mut &endless[..], Vec::new(), 10, idle).await;
    assert!(matches!(end, Ok(data::DataEnd::Abandoned)), "{end:?}");

    // The connection closing before the dot: no message.
    let end = data::read_data(&mut &b"Subject: x\r\n"[..], Vec::new(), 100, idle).await;
    assert!(matches!(end, Ok(data::DataEnd::Eof)), "{end:?}");
}

#[tokio::test]
async fn oversized_data_with_long_lines_gets_552_and_session_goes_on() {
    let server = start(settings()).await;
    let mut raw = connect(&server).await;
    raw.command("EHLO client.test").await;
    raw.command("MAIL FROM:<a@example.org>").await;
    raw.command("RCPT TO:<support@example.com>").await;
    assert!(raw.command("DATA").await.starts_with("354"));
    raw.send(&format!(
        "Subject: long\r\n\r\n{}\r\n.\r\n",
        "y".repeat(30_000)
    ))
    .await;
    assert_eq!(
        raw.reply().await,
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    // The transaction is over; the session is not.
    assert!(
        raw.command("RCPT TO:<support@example.com>")
            .await
            .starts_with("503")
    );
    raw.command("MAIL FROM:<a@example.org>").await;
    raw.command("RCPT TO:<support@example.com>").await;
    raw.command("DATA").await;
    assert_eq!(
        raw.command("Subject: ok\r\n\r\nfine\r\n.").await,
        "250 2.0.0 OK queued"
    );
    assert_eq!(server.sink.deliveries().len(), 1);
}

#[test]
fn parses_commands() {
    assert_eq!(
        parse("ehlo  client.test extra"),
        Ok(Command::Hello {
            domain: "client.test".into(),
            extended: true
        })
    );
    assert_eq!(
        parse("MAIL FROM: <@relay.example:user@example.org> SIZE=42 smtputf8"),
        Ok(Command::Mail {
            from: "user@example.org".into(),
            params: MailParams {
                size: Some(42),
                smtputf8: true
            }
        })
    );
    assert_eq!(
        parse("MAIL FROM:<> SIZE=99999999999999999999999"),
        Ok(Command::Mail {
            from: String::new(),
            params: MailParams {
                size: Some(u64::MAX),
                smtputf8: false
            }
        })
    );
    assert_eq!(
        parse(r#"rcpt to:<"john doe>"@example.com>"#),
        Ok(Command::Rcpt {
            to: r#""john doe>"@example.com"#.into()
        })
    );
    assert_eq!(
        parse("RCPT TO:<Postmaster>"),
        Ok(Command::Rcpt {
            to: "Postmaster".into()
        })
    );
    assert!(matches!(parse("RCPT TO:<>"), Err(ParseError::Syntax(_))));
    assert!(matches!(
        parse("RCPT TO:<a b@example.com>"),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(
        parse("RCPT TO:<a@example.com"),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(
        parse("RCPT TO:<a@example.com>x"),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(
        parse("MAIL FROM:<a\u{1}@example.com>"),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(
        parse("MAIL FROM:<a@b> SIZE=x"),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(
        parse("MAIL FROM:<a@b> BODY=BINARYMIME"),
        Err(ParseError::Parameter(_))
    ));
    assert!(matches!(parse("EHLO"), Err(ParseError::Syntax(_))));
    assert!(matches!(parse("DATA now"), Err(ParseError::Syntax(_))));
    assert_eq!(parse("EXPN staff"), Err(ParseError::NotImplemented));
    assert_eq!(parse(""), Err(ParseError::Unknown));
    assert_eq!(parse("QuIt"), Ok(Command::Quit));
    assert_eq!(parse("StartTLS"), Ok(Command::StartTls));
}

#[test]
fn formats_dates_and_received_lines() {
    assert_eq!(rfc2822_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(rfc2822_date(at), "Tue, 14 Nov 2023 22:13:20 +0000");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(rfc2822_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    let header = received_header(
        "client.test",
        "2001:db8::1".parse().unwrap(),
        "mx.test",
        "ESMTPS",
        at,
    );
    assert_eq!(
        String::from_utf8(header).unwrap(),
        "Received: from client.test ([IPv6:2001:db8::1])\r\n\tby mx.test with ESMTPS;\r\n\tTue, 14 Nov 2023 22:13:20 +0000\r\n"
    );
    assert!(SystemTime::now() > at);
}
