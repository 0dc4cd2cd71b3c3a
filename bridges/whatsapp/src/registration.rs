//! The bridge's appservice registration: generated once (fresh tokens), kept in a file, and
//! given the current URL at every start (the in-process bridge's URL follows the listener).

use std::path::Path;

use appservice::{Namespace, Namespaces, Registration, RegistrationError};
use ruma::ServerName;

use crate::config::PUPPET_PREFIX;

/// The registration's id.
pub const ID: &str = "whatsapp";

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
        let namespaces = Namespaces {
            users: vec![Namespace::new(
                format!("@{PUPPET_PREFIX}.*:{escaped}"),
                true,
            )],
            ..Namespaces::default()
        };
        let mut r = Registration::generate(ID, None, bot_localpart, namespaces);
        // Agents' read receipts arrive as EDUs.
        r.set_receive_ephemeral(true);
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_generated_once_and_the_url_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        let server = ruma::server_name!("example.org");
        let first =
            load_or_generate(&path, "http://a/bridges/whatsapp", server, "whatsappbot").unwrap();
        let second =
            load_or_generate(&path, "http://b/bridges/whatsapp", server, "whatsappbot").unwrap();
        assert_eq!(first.as_token, second.as_token);
        assert_eq!(first.hs_token, second.hs_token);
        assert_eq!(second.url.as_deref(), Some("http://b/bridges/whatsapp"));
        assert_eq!(
            second.namespaces.users[0].regex,
            "@whatsapp_.*:example\\.org"
        );
        assert!(second.namespaces.users[0].exclusive);
        assert!(second.receives_ephemeral());
        assert!(!second.is_rate_limited());
        let on_disk = Registration::from_file(&path).unwrap();
        assert_eq!(on_disk.url.as_deref(), Some("http://b/bridges/whatsapp"));
    }
}
