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
    let mut registration = if path.exists() {
        Registration::from_file(path)?
    } else {
        let escaped = server_name.as_str().replace('.', "\\.");
        let namespaces = Namespaces {
            users: vec![Namespace::new(
                format!("@{PUPPET_PREFIX}.*:{escaped}"),
                true,
            )],
            aliases: vec![Namespace::new(
                format!("#{PUPPET_PREFIX}.*:{escaped}"),
                true,
            )],
            ..Namespaces::default()
        };
        Registration::generate(ID, None, bot_localpart, namespaces)
    };
    if registration.url.as_deref() != Some(url) || !path.exists() {
        registration.url = Some(url.to_owned());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| RegistrationError::Io(format!("{}: {e}", parent.display())))?;
        }
        registration.write_file(path)?;
    }
    Ok(registration)
}
