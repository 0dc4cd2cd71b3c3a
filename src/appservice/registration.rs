//! Loading and checking registration files, and compiling their namespaces.

use std::{collections::HashSet, path::Path};

use regex::Regex;
use ruma::{OwnedUserId, ServerName, UserId, api::appservice::Registration};

/// A loaded registration with its namespaces compiled.
#[derive(Debug)]
pub struct AppService {
    pub registration: Registration,
    /// `@<sender_localpart>:<server>`: the appservice's own user.
    pub sender: OwnedUserId,
    pub receive_ephemeral: bool,
    users: Vec<Namespace>,
    aliases: Vec<Namespace>,
    rooms: Vec<Namespace>,
}

#[derive(Debug)]
struct Namespace {
    regex: Regex,
    exclusive: bool,
}

/// The fields ruma's type does not know: MSC2409's unstable name for `receive_ephemeral`.
#[derive(serde::Deserialize)]
struct Extra {
    #[serde(rename = "de.sorunome.msc2409.push_ephemeral", default)]
    push_ephemeral: bool,
}

impl AppService {
    /// Reads and checks one registration file.
    pub fn load(path: &Path, server: &ServerName) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read appservice registration {}: {e}",
                path.display()
            )
        })?;
        Self::parse(&text, server).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(yaml: &str, server: &ServerName) -> Result<Self, String> {
        let registration: Registration =
            serde_norway::from_str(yaml).map_err(|e| format!("invalid registration: {e}"))?;
        let extra: Extra =
            serde_norway::from_str(yaml).map_err(|e| format!("invalid registration: {e}"))?;
        for (name, value) in [
            ("id", &registration.id),
            ("as_token", &registration.as_token),
            ("hs_token", &registration.hs_token),
            ("sender_localpart", &registration.sender_localpart),
        ] {
            if value.trim().is_empty() {
                return Err(format!("`{name}` must not be empty"));
            }
        }
        let sender = UserId::parse(format!("@{}:{server}", registration.sender_localpart))
            .map_err(|e| format!("invalid sender_localpart: {e}"))?;
        let compile = |list: &[ruma::api::appservice::Namespace], kind: &str| {
            list.iter()
                .map(|ns| {
                    // Anchored at the start like Synapse's `re.match`, so `@wa_.*` cannot match
                    // `@evil:@wa_`.
                    Regex::new(&format!("^(?:{})", ns.regex))
                        .map(|regex| Namespace {
                            regex,
                            exclusive: ns.exclusive,
                        })
                        .map_err(|e| format!("invalid {kind} namespace regex {:?}: {e}", ns.regex))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(AppService {
            users: compile(&registration.namespaces.users, "users")?,
            aliases: compile(&registration.namespaces.aliases, "aliases")?,
            rooms: compile(&registration.namespaces.rooms, "rooms")?,
            receive_ephemeral: registration.receive_ephemeral || extra.push_ephemeral,
            sender,
            registration,
        })
    }

    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// Whether the appservice may act as `user`: its sender or a user in its namespaces.
    pub fn owns_user(&self, user: &UserId) -> bool {
        user == self.sender || matches(&self.users, user.as_str(), false)
    }

    pub fn owns_user_exclusively(&self, user: &UserId) -> bool {
        user == self.sender || matches(&self.users, user.as_str(), true)
    }

    pub fn owns_alias(&self, alias: &str) -> bool {
        matches(&self.aliases, alias, false)
    }

    pub fn owns_alias_exclusively(&self, alias: &str) -> bool {
        matches(&self.aliases, alias, true)
    }

    pub fn owns_room(&self, room_id: &str) -> bool {
        matches(&self.rooms, room_id, false)
    }
}

fn matches(list: &[Namespace], s: &str, exclusive_only: bool) -> bool {
    list.iter()
        .any(|ns| (ns.exclusive || !exclusive_only) && ns.regex.is_match(s))
}

/// Refuses registrations that would be ambiguous together.
pub fn check_unique(list: &[AppService]) -> Result<(), String> {
    let mut ids = HashSet::new();
    let mut tokens = HashSet::new();
    for asv in list {
        if !ids.insert(asv.id()) {
            return Err(format!("duplicate appservice id {:?}", asv.id()));
        }
        if !tokens.insert(asv.registration.as_token.as_str()) {
            return Err(format!(
                "appservice {:?} reuses another registration's as_token",
                asv.id()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
id: whatsapp
url: http://localhost:29318
as_token: as-secret
hs_token: hs-secret
sender_localpart: whatsappbot
namespaces:
  users:
    - exclusive: true
      regex: '@whatsapp_.*:localhost'
  aliases:
    - exclusive: false
      regex: '#whatsapp_.*:localhost'
  rooms: []
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
"#;

    fn server() -> &'static ServerName {
        ruma::server_name!("localhost")
    }

    #[test]
    fn parses_and_matches_namespaces_anchored() {
        let asv = AppService::parse(YAML, server()).unwrap();
        assert_eq!(asv.sender, "@whatsappbot:localhost");
        assert!(asv.receive_ephemeral);
        let puppet = UserId::parse("@whatsapp_34600:localhost").unwrap();
        assert!(asv.owns_user(&puppet) && asv.owns_user_exclusively(&puppet));
        assert!(asv.owns_user(&asv.sender));
        assert!(!asv.owns_user(&UserId::parse("@x_whatsapp_1:localhost").unwrap()));
        assert!(asv.owns_alias("#whatsapp_1:localhost"));
        assert!(!asv.owns_alias_exclusively("#whatsapp_1:localhost"));
    }

    #[test]
    fn refuses_bad_files() {
        let bad_regex = YAML.replace("'@whatsapp_.*:localhost'", "'@whatsapp_(:localhost'");
        assert!(
            AppService::parse(&bad_regex, server())
                .unwrap_err()
                .contains("regex")
        );
        let no_token = YAML.replace("as_token: as-secret", "as_token: ''");
        assert!(
            AppService::parse(&no_token, server())
                .unwrap_err()
                .contains("as_token")
        );
        assert!(AppService::parse("id: [", server()).is_err());
        let a = AppService::parse(YAML, server()).unwrap();
        let b = AppService::parse(&YAML.replace("id: whatsapp", "id: other"), server()).unwrap();
        assert!(check_unique(&[a, b]).unwrap_err().contains("as_token"));
    }
}
