//! The grammar of SMTP command lines (RFC 5321 §4.1), apart from the session so it can be read
//! and tested on its own.
//!
//! Parsing is strict where a mistake would reach the bridge (an address must be in angle
//! brackets, free of control characters and spaces outside quotes, so a `Received:` line or a
//! reply that quotes it cannot be split) and lenient where real clients differ harmlessly (verbs in
//! any case, a space after `FROM:`).

/// One command the session understands, with its arguments checked.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command {
    /// EHLO (extended session) or HELO, with the client's domain.
    Hello {
        domain: String,
        extended: bool,
    },
    /// MAIL FROM: the reverse path ("" for the null sender) and its parameters.
    Mail {
        from: String,
        params: MailParams,
    },
    /// RCPT TO: the forward path.
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
}

/// The MAIL parameters of the extensions the listener advertises.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MailParams {
    /// RFC 1870's declared size, so a message too big is refused before it is sent.
    pub size: Option<u64>,
    /// RFC 6531: the addresses of this transaction may be UTF-8.
    pub smtputf8: bool,
}

/// Why a line is not a command the session can act on; each maps to one reply.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ParseError {
    /// Not an SMTP verb: 500 5.5.1.
    Unknown,
    /// A verb the listener knows but does not implement (EXPN, TURN...): 502 5.5.1.
    NotImplemented,
    /// A known verb with malformed arguments: 501 5.5.4 and the hint.
    Syntax(&'static str),
    /// A MAIL or RCPT parameter of an extension not advertised: 555 5.5.4.
    Parameter(String),
}

/// The longest path RFC 5321 §4.5.3.1.3 allows, which also keeps quoted addresses short.
const MAX_PATH: usize = 256;
/// The longest domain (RFC 5321 §4.5.3.1.2): the EHLO argument goes into the `Received:` line.
const MAX_DOMAIN: usize = 255;

/// Parses one command line, without its line ending.
pub(super) fn parse(line: &str) -> Result<Command, ParseError> {
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, rest) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i..].trim_start_matches([' ', '\t'])),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => hello(rest, true),
        "HELO" => hello(rest, false),
        "MAIL" => mail(rest),
        "RCPT" => rcpt(rest),
        "DATA" => bare(rest, Command::Data, "Syntax: DATA"),
        "RSET" => bare(rest, Command::Rset, "Syntax: RSET"),
        "QUIT" => bare(rest, Command::Quit, "Syntax: QUIT"),
        "STARTTLS" => bare(rest, Command::StartTls, "Syntax: STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if rest.is_empty() => Err(ParseError::Syntax("Syntax: VRFY <address>")),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" | "TURN" | "ETRN" | "ATRN" | "BDAT" | "AUTH" => Err(ParseError::NotImplemented),
        _ => Err(ParseError::Unknown),
    }
}

/// A command that takes no argument.
fn bare(rest: &str, command: Command, hint: &'static str) -> Result<Command, ParseError> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::Syntax(hint))
    }
}

/// EHLO/HELO: the first word is the domain; some clients add more words, which are ignored.
fn hello(rest: &str, extended: bool) -> Result<Command, ParseError> {
    let hint = if extended {
        "Syntax: EHLO domain"
    } else {
        "Syntax: HELO domain"
    };
    let domain = rest.split([' ', '\t']).next().unwrap_or_default();
    if domain.is_empty() || domain.len() > MAX_DOMAIN || domain.chars().any(char::is_control) {
        return Err(ParseError::Syntax(hint));
    }
    Ok(Command::Hello {
        domain: domain.to_owned(),
        extended,
    })
}

/// MAIL FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8].
fn mail(rest: &str) -> Result<Command, ParseError> {
    const HINT: &str = "Syntax: MAIL FROM:<address>";
    let after = strip_keyword(rest, "FROM:").ok_or(ParseError::Syntax(HINT))?;
    let (from, params) = path(after).ok_or(ParseError::Syntax(HINT))?;
    let mut parsed = MailParams::default();
    for param in params.split_ascii_whitespace() {
        let (key, value) = param
            .split_once('=')
            .map_or((param, None), |(k, v)| (k, Some(v)));
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                // A number too long for u64 is surely over the limit.
                parsed.size = Some(n.parse().unwrap_or(u64::MAX));
            }
            ("SIZE", _) => return Err(ParseError::Syntax("Syntax: SIZE=<number>")),
            ("BODY", Some(body))
                if body.eq_ignore_ascii_case("7BIT") || body.eq_ignore_ascii_case("8BITMIME") => {}
            ("SMTPUTF8", None) => parsed.smtputf8 = true,
            _ => {
                return Err(ParseError::Parameter(format!(
                    "Unsupported parameter {key}"
                )));
            }
        }
    }
    Ok(Command::Mail {
        from,
        params: parsed,
    })
}

/// RCPT TO:<path>: no RCPT parameter is advertised (no DSN), so any is refused.
fn rcpt(rest: &str) -> Result<Command, ParseError> {
    const HINT: &str = "Syntax: RCPT TO:<address>";
    let after = strip_keyword(rest, "TO:").ok_or(ParseError::Syntax(HINT))?;
    let (to, params) = path(after).ok_or(ParseError::Syntax(HINT))?;
    if to.is_empty() {
        return Err(ParseError::Syntax(HINT));
    }
    if let Some(param) = params.split_ascii_whitespace().next() {
        let key = param.split('=').next().unwrap_or(param);
        return Err(ParseError::Parameter(format!(
            "Unsupported parameter {key}"
        )));
    }
    Ok(Command::Rcpt { to })
}

/// `FROM:`/`TO:` in any case, and what follows it less leading spaces (which RFC 5321 forbids but
/// many clients send).
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| rest[keyword.len()..].trim_start_matches(' '))
}

/// `<address>` and the text after it: the address without brackets and without a source route
/// (`<@relay:user@host>`, which RFC 5321 §C says to accept and ignore). `None` when the brackets
/// are missing, the path is too long, or it holds control characters or unquoted spaces.
fn path(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix('<')?;
    let (mut quoted, mut escaped, mut end) = (false, false, None);
    for (i, c) in inner.char_indices() {
        match c {
            _ if c.is_control() => return None,
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' if !quoted => return None,
            '>' if !quoted => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end?;
    let (address, after) = (&inner[..end], &inner[end + 1..]);
    if address.len() + 2 > MAX_PATH || !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    let address = match address.strip_prefix('@') {
        Some(routed) => routed.split_once(':')?.1,
        None => address,
    };
    Some((address.to_owned(), after))
}
