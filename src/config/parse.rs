//! Parsing the file's text, naming the key at fault: `server.listen: invalid socket address
//! syntax (line 3, column 10)`, on one line. toml's own errors show the line but not the key
//! path (`toml::de::Error` keeps it private), so `serde_path_to_error` tracks where the
//! deserializer was when it failed.

use serde::de::DeserializeOwned;

/// Why the text is not a config.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}{}", key_prefix(key), line_suffix(*at))]
pub struct ParseError {
    /// The dotted key at fault (`server.listen`), when the text parsed as TOML.
    pub key: Option<String>,
    pub message: String,
    /// Line and column (from 1) of the value at fault, when known.
    pub at: Option<(usize, usize)>,
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map_or_else(String::new, |k| format!("{k}: "))
}

fn line_suffix(at: Option<(usize, usize)>) -> String {
    at.map_or_else(String::new, |(l, c)| format!(" (line {l}, column {c})"))
}

/// Parses `text` into `T`.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let de = toml::Deserializer::parse(text).map_err(|e| error(text, None, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        error(text, (path != ".").then_some(path), e.inner())
    })
}

fn error(text: &str, path: Option<String>, e: &toml::de::Error) -> ParseError {
    let message = e.message().replace(['\n', '\r'], " ");
    // serde reports an unknown key at the table that holds it, or (in a nested table) at the
    // key itself: name the key once either way.
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let key = match (path, unknown) {
        (Some(path), Some(name)) if path == name || path.ends_with(&format!(".{name}")) => {
            Some(path)
        }
        (Some(path), Some(name)) => Some(format!("{path}.{name}")),
        (None, Some(name)) => Some(name),
        (path, None) => path,
    };
    ParseError {
        key,
        message,
        at: e.span().map(|span| line_column(text, span.start)),
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn fails(text: &str) -> ParseError {
        match parse::<Config>(text) {
            Ok(_) => panic!("parsed: {text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_key_at_fault_is_named() {
        let e = fails("server_name = \"a\"\n[server]\nlisten = \"nope\"\n");
        assert_eq!(e.key.as_deref(), Some("server.listen"));
        assert_eq!(e.at, Some((3, 10)));
        assert!(e.to_string().starts_with("server.listen: "), "{e}");
        assert!(!e.to_string().contains('\n'));
        let e = fails(
            "server_name = \"a\"\n[media]\nthumbnail_sizes = [{ width = 1, height = 1, method = \"zoom\" }]\n",
        );
        assert_eq!(e.key.as_deref(), Some("media.thumbnail_sizes[0].method"));
        let e = fails("server_name = \"a\"\n[storage]\npath = \"x\"\nbogus = 1\n");
        assert_eq!(e.key.as_deref(), Some("storage.bogus"));
        let e = fails("server_name = \"a\"\nbogus = 1\n");
        assert_eq!(e.key.as_deref(), Some("bogus"));
        let e = fails("server_name = \"a\"\n[server\n");
        assert_eq!((e.key, e.at.map(|a| a.0)), (None, Some(2)));
        let e = fails("[server]\n");
        assert!(e.to_string().contains("server_name"), "{e}");
    }
}
