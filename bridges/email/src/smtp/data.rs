//! Reading input within bounds: command lines of at most 64 KiB, and the DATA section, undone of
//! its dot-stuffing and held to the size limit; plus the `Received:` line the listener adds.
//!
//! Nothing here buffers more than it has to: a line is read in pieces of at most 64 KiB, and a
//! message stops being kept the moment it would pass the limit (the rest is only counted, so the
//! client still gets its 552 at the final dot rather than a reset connection).

use std::{
    io,
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest command line, and the largest piece of a DATA line read at once. RFC 5321 says
/// 512 octets for commands; clients with long addresses and parameters exceed it, so be lenient.
pub(super) const MAX_LINE: usize = 64 * 1024;

/// Past this many times the size limit, a message already refused is not read to its end: the
/// client is clearly not going to stop, and reading forever is unbounded work for it.
const DISCARD_FACTOR: usize = 4;

/// How a bounded read ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Piece {
    /// A whole line, its LF included.
    Line,
    /// `cap` bytes without an LF: the line goes on.
    Partial,
    /// The peer closed the connection (what was read of an unfinished line is in `out`).
    Eof,
}

/// Appends to `out` the input up to and including the next LF, but no more than `cap` bytes in
/// all, so a client that never sends an LF cannot make the listener buffer without end.
pub(super) async fn read_piece<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Piece> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Piece::Eof);
        }
        let window = &available[..available.len().min(cap.saturating_sub(out.len()))];
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&window[..=i]);
            reader.consume(i + 1);
            return Ok(Piece::Line);
        }
        let taken = window.len();
        out.extend_from_slice(window);
        reader.consume(taken);
        if out.len() >= cap {
            return Ok(Piece::Partial);
        }
    }
}

/// How the DATA section ended.
#[derive(Debug)]
pub(super) enum DataEnd {
    /// The final dot came: the whole message, after the header it was started with.
    Message(Vec<u8>),
    /// The final dot came, but the message was over the limit and was not kept.
    TooBig,
    /// The client sent far more than the limit and is still going: give up on it.
    Abandoned,
    /// The connection closed before the final dot: the message is incomplete.
    Eof,
    /// No input for the idle timeout.
    Timeout,
}

/// Reads the DATA section up to the line `.`, after `message` (the `Received:` header): undoes
/// the dot-stuffing, ends every line with CRLF (bare LF is accepted), and keeps at most
/// `max_bytes` of the client's bytes. `idle` bounds each wait for input.
pub(super) async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    mut message: Vec<u8>,
    max_bytes: usize,
    idle: Duration,
) -> io::Result<DataEnd> {
    let header = message.len();
    let discard_limit = max_bytes.saturating_mul(DISCARD_FACTOR).max(MAX_LINE);
    let mut piece = Vec::new();
    let (mut at_line_start, mut too_big, mut seen) = (true, false, 0usize);
    loop {
        piece.clear();
        let Ok(read) = tokio::time::timeout(idle, read_piece(reader, &mut piece, MAX_LINE)).await
        else {
            return Ok(DataEnd::Timeout);
        };
        let complete = match read? {
            Piece::Eof => return Ok(DataEnd::Eof),
            Piece::Line => true,
            Piece::Partial => false,
        };
        if at_line_start && complete && (piece == b".\r\n" || piece == b".\n") {
            return Ok(if too_big {
                DataEnd::TooBig
            } else {
                DataEnd::Message(message)
            });
        }
        seen = seen.saturating_add(piece.len());
        if !too_big
            && !append(
                &mut message,
                &piece,
                at_line_start,
                complete,
                header,
                max_bytes,
            )
        {
            too_big = true;
            message = Vec::new();
        }
        if too_big && seen > discard_limit {
            return Ok(DataEnd::Abandoned);
        }
        at_line_start = complete;
    }
}

/// Adds one piece of a DATA line to `message`, unstuffed and with a CRLF ending, unless that
/// would take the client's part of it (after `header` bytes) past `max_bytes`: then false.
fn append(
    message: &mut Vec<u8>,
    piece: &[u8],
    at_line_start: bool,
    complete: bool,
    header: usize,
    max_bytes: usize,
) -> bool {
    let mut body = piece;
    if at_line_start && let Some(rest) = body.strip_prefix(b".") {
        body = rest;
    }
    let mut ending: &[u8] = b"";
    if complete {
        body = body.strip_suffix(b"\n").unwrap_or(body);
        body = body.strip_suffix(b"\r").unwrap_or(body);
        // A CRLF split across two pieces: the CR is already kept, only the LF is missing.
        ending = if piece == b"\n" && !at_line_start && message.last() == Some(&b'\r') {
            b"\n"
        } else {
            b"\r\n"
        };
    }
    if message.len() - header + body.len() + ending.len() > max_bytes {
        return false;
    }
    message.extend_from_slice(body);
    message.extend_from_slice(ending);
    true
}

/// The trace header RFC 5321 §4.4 asks every SMTP server to prepend, folded onto three lines:
/// who the client said it was, the address it really connected from, and when.
pub(super) fn received_header(
    helo: &str,
    peer: IpAddr,
    hostname: &str,
    protocol: &str,
    now: SystemTime,
) -> Vec<u8> {
    let literal = match peer {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    format!(
        "Received: from {helo} ({literal})\r\n\tby {hostname} with {protocol};\r\n\t{}\r\n",
        rfc2822_date(now)
    )
    .into_bytes()
}

/// `now` as an RFC 5322 date in UTC, e.g. `Tue, 14 Nov 2023 22:13:20 +0000`.
pub(super) fn rfc2822_date(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, time) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days, for days since 1970-01-01 (a Thursday).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 2 } else { mp - 10 };
    let year = yoe + era * 400 + u64::from(month < 2);
    format!(
        "{}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize],
        time / 3_600,
        time / 60 % 60,
        time % 60
    )
}
