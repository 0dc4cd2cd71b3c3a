//! `email`: the email channel's figures (issue #24), both ways, nothing lost or doubled.
//!
//! It brings its own system, in this process and a temporary data folder (`--homeserver` is
//! ignored): a Charla running the email bridge (`authenticate = false`: no DNS; per-sender
//! limits out of the way; `max_message_bytes` 36 MiB, since a 25 MB attachment is ~34 MB once
//! base64-encoded and the SMTP `SIZE` limit counts the encoded mail), an agent invited to every
//! conversation, and a recording SMTP relay on loopback (`email::smtp::serve`) the answers go
//! out through. Customers write with lettre, as a real MTA would.
//!
//! 1. **Inbound**: `--messages` mails in threads of [`PER_THREAD`] (one customer address per
//!    thread; a thread's first mail opens its conversation, the others reply to it with
//!    `In-Reply-To`/`References` and a quoted history to trim), each thread's mails one after
//!    the other, `--clients` threads at a time over pooled SMTP connections. Figures: the
//!    SMTP accept rate (`250`s a second), the rate into conversations (until the last mail is
//!    an `m.room.message` in its room, seen in the server's event stream) and each mail's delay
//!    from its `250` to its event. Then the agent joins every conversation and reads it with
//!    `/messages`: every mail exactly once, in its thread's room, in order.
//! 2. **Outbound**: `--messages` answers from the agent spread over the conversations (each
//!    conversation's one after the other, `--clients` conversations at a time), until the relay
//!    has them all and every delivery is `sent`: answers a second, each one's delay from its
//!    send to the relay; no Message-ID or answer twice, each conversation's in order, each to
//!    its customer.
//! 3. **Attachments**: a 25 MB (25,000,000 bytes) attachment mailed in, until its `m.file` is
//!    in the room (downloaded and compared by length and SHA-256); and 25 MB uploaded by the
//!    agent and sent as an `m.file`, until the relay has it (the attachment decoded from the
//!    relayed mail and compared).
//!
//! The figures (≥ 500 mails a second in, ≥ 200 a second out) are named in the rows,
//! not asserted: the bench reports. Everything shares the process (server, bridge, customers'
//! SMTP clients, relay), so the CPU row is all of it.
//!
//! Reading the SMTP rates: lettre (the customers' client here, and the bridge's own towards
//! the relay) writes a mail's content and its final `.` in two writes on a socket without
//! `TCP_NODELAY`, so every mail waits for the server's delayed ACK (~40 ms on Linux loopback):
//! one connection carries at most ~20 mails a second whatever the server does, and the rates
//! grow with `--clients` (and the bridge's `send_concurrency`) while the CPU stays half idle.

mod attachments;
mod inbound;
mod mails;
mod outbound;
mod relay;
mod rig;
mod watch;

use std::{path::Path, time::Duration};

use crate::bench::{BenchArgs, client::BoxError, report::Report, setup::progress};

use attachments::{attachment_in, attachment_out};
use inbound::inbound;
use outbound::outbound;
use relay::Relay;
use rig::Rig;
use watch::Watcher;

/// The desk's address.
const DESK: &str = "support@desk.example";
/// Mails per thread: the first opens the conversation, the rest reply.
const PER_THREAD: usize = 10;
/// The attachments' size each way (the "25 MB").
const ATTACHMENT_BYTES: usize = 25 * 1000 * 1000;
/// The bridge's (and so the listener's SIZE) limit for the bench: 36 MiB, room for 25 MB in
/// base64 (~34.2 MB with line ends) and the mail around it.
const MAX_MESSAGE_BYTES: usize = 36 * 1024 * 1024;
/// Relayed mails larger than this are kept whole (the attachment's); smaller ones only counted.
const BIG_MAIL: usize = 1 << 20;
/// Joins and history reads in flight.
const SETUP_IN_FLIGHT: usize = 16;
/// How long a phase may go without progress before the bench stops waiting for it.
const STALL: Duration = Duration::from_secs(30);

pub async fn run(args: &BenchArgs) -> Result<Report, BoxError> {
    let n = args.messages.max(1);
    let clients = args.clients.max(1);
    let threads = n.div_ceil(PER_THREAD);
    let dir =
        std::env::temp_dir().join(format!("charla-bench-email-{:08x}", rand::random::<u32>()));
    let mut r = Report::new(
        "email",
        format!(
            "{n} mails in ({threads} threads of up to {PER_THREAD}) over {clients} SMTP \
             connections, {n} answers out, 25 MB each way; bridge in process, relay on loopback, \
             max_message_bytes 36 MiB"
        ),
    );
    std::fs::create_dir_all(&dir)?;
    let outcome = measure(&dir, n, clients, &mut r).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        r.problem(format!("stopped early: {e}"));
    }
    Ok(r)
}

async fn measure(dir: &Path, n: usize, clients: usize, r: &mut Report) -> Result<(), BoxError> {
    progress("email: starting Charla with the email bridge and a relay");
    let relay = Relay::start().await?;
    let rig = Rig::start(dir, relay.port, clients).await?;
    let watcher = Watcher::start(&rig.server);
    let result = phases(&rig, &relay, &watcher, n, clients, r).await;
    watcher.stop();
    rig.server.stop().await;
    relay.stop();
    result
}

async fn phases(
    rig: &Rig,
    relay: &Relay,
    watcher: &Watcher,
    n: usize,
    clients: usize,
    r: &mut Report,
) -> Result<(), BoxError> {
    let rooms = inbound(rig, watcher, n, clients, r).await?;
    outbound(rig, relay, &rooms, n, clients, r).await?;
    let room = attachment_in(rig, watcher, r).await?;
    attachment_out(rig, relay, &room, r).await
}
