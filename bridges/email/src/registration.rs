//! The bridge's appservice registration: generated once (fresh tokens), kept in a file, and
//! given the current URL at every start (the in-process bridge's URL follows the listener).
//!
//! Namespaces: the customers' puppets (`@email_…`) and the conversation rooms' aliases
//! (`#email_…`), both exclusive. The aliases make creating a conversation's room safe to repeat
//! after a crash (see `portal`); exclusive, so nobody else can take one first.

use std::path::Path;

use appservice::{Namespace, Namespaces, Registration, RegistrationError};
use ruma::ServerName;

use crate::config::PUPPET_PREFIX;

/// The registration's id (and `support.desk_appservices`' name for it).
pub const ID: &str = "email";

/// Loads the registration at `path` (creating it with fresh tokens if missing), points it at
/// `url` and writes it back when anything changed.
pub fn load_or_generate(
    path: &Path,
    url: &str,
    server_name: &ServerName,
    bot_localpart: &str,
) -> Result<Registration, RegistrationError> {
    Registration::load_or_generate(path, url, || {
        let escaped = server_name.as_str().replace('.', "\\.");
        let namespace =
            |sigil: char| Namespace::new(format!("{sigil}{PUPPET_PREFIX}.*:{escaped}"), true);
        let namespaces = Namespaces {
            users: vec![namespace('@')],
            aliases: vec![namespace('#')],
            ..Namespaces::default()
        };
        Registration::generate(ID, None, bot_localpart, namespaces)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puppets_and_room_aliases_are_the_bridges_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        let server = ruma::server_name!("example.org");
        let first = load_or_generate(&path, "http://a/bridges/email", server, "emailbot").unwrap();
        let second = load_or_generate(&path, "http://b/bridges/email", server, "emailbot").unwrap();
        assert_eq!(first.as_token, second.as_token);
        assert_eq!(second.url.as_deref(), Some("http://b/bridges/email"));
        assert_eq!(second.namespaces.users[0].regex, "@email_.*:example\\.org");
        assert_eq!(
            second.namespaces.aliases[0].regex,
            "#email_.*:example\\.org"
        );
        assert!(second.namespaces.users[0].exclusive && second.namespaces.aliases[0].exclusive);
    }
}
