//! A loaded registration: the toolkit's `Registration` (parsing, validation, namespace
//! matching are shared with the bridges that write these files) plus what the homeserver
//! derives from it.

use std::path::{Path, PathBuf};

use appservice::{NamespaceMatcher, Registration};
use ruma::{OwnedUserId, ServerName, UserId};

/// Where a registration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A file `[appservice] registrations` lists: it changes with the config.
    Config,
    /// Added at runtime through the admin API, kept in the store.
    Store,
}

/// A registration with its namespaces compiled.
#[derive(Debug)]
pub struct AppService {
    pub registration: Registration,
    /// `@<sender_localpart>:<server>`: the appservice's own user.
    pub sender: OwnedUserId,
    /// Either the stable `receive_ephemeral` or MSC2409's name.
    pub receive_ephemeral: bool,
    /// The file it came from, for error messages.
    pub path: PathBuf,
    pub source: Source,
    matcher: NamespaceMatcher,
    /// Woken when the appservice shows it is up again (a successful ping), so a pusher that
    /// is backing off retries at once instead of after up to five minutes.
    pub(super) reachable: tokio::sync::Notify,
    /// Set once it is unregistered: its pusher stops.
    retired: tokio::sync::watch::Sender<bool>,
}

impl AppService {
    /// Reads and checks one registration file.
    pub fn load(path: &Path, server: &ServerName) -> Result<Self, String> {
        let registration = Registration::from_file(path)
            .map_err(|e| format!("appservice registration {}: {e}", path.display()))?;
        Self::new(registration, path, server, Source::Config)
            .map_err(|e| format!("appservice registration {}: {e}", path.display()))
    }

    /// Parses and checks a registration that is not a file of the config's.
    pub fn parse(yaml: &str, server: &ServerName, source: Source) -> Result<Self, String> {
        let registration = Registration::from_yaml_str(yaml).map_err(|e| e.to_string())?;
        let path = match source {
            Source::Config => "<inline>".to_owned(),
            Source::Store => format!("<registered at runtime: {}>", registration.id),
        };
        Self::new(registration, Path::new(&path), server, source)
    }

    fn new(
        registration: Registration,
        path: &Path,
        server: &ServerName,
        source: Source,
    ) -> Result<Self, String> {
        registration.validate().map_err(|e| e.to_string())?;
        let sender = registration
            .sender_user_id(server)
            .map_err(|e| e.to_string())?;
        let matcher = registration.matcher().map_err(|e| e.to_string())?;
        Ok(AppService {
            receive_ephemeral: registration.receives_ephemeral()
                || registration.receives_ephemeral_unstable(),
            sender,
            path: path.to_owned(),
            source,
            matcher,
            registration,
            reachable: tokio::sync::Notify::new(),
            retired: tokio::sync::watch::channel(false).0,
        })
    }

    /// Marks it unregistered: [`Self::retired`] resolves.
    pub(super) fn retire(&self) {
        self.retired.send_replace(true);
    }

    pub(super) fn is_retired(&self) -> bool {
        *self.retired.borrow()
    }

    /// Resolves once it is unregistered.
    pub(super) async fn retired(&self) {
        let mut rx = self.retired.subscribe();
        let _ = rx.wait_for(|retired| *retired).await;
    }

    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// Whether the appservice may act as `user`: its sender or a user in its namespaces.
    pub fn owns_user(&self, user: &UserId) -> bool {
        user == self.sender || self.matcher.is_user_in_namespace(user.as_str())
    }

    pub fn owns_user_exclusively(&self, user: &UserId) -> bool {
        user == self.sender || self.matcher.is_exclusive_user(user.as_str())
    }

    pub fn owns_alias(&self, alias: &str) -> bool {
        self.matcher.is_room_alias_in_namespace(alias)
    }

    pub fn owns_alias_exclusively(&self, alias: &str) -> bool {
        self.matcher.is_exclusive_alias(alias)
    }

    pub fn owns_room(&self, room_id: &str) -> bool {
        self.matcher.is_room_id_in_namespace(room_id)
    }
}

/// Refuses registrations that would be ambiguous together (duplicate id or as_token).
pub fn check_unique(list: &[AppService]) -> Result<(), String> {
    appservice::registration::check_unique(list.iter().map(|a| (a.path.as_path(), &a.registration)))
        .map_err(|e| e.to_string())
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
        let asv = AppService::parse(YAML, server(), Source::Config).unwrap();
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
            AppService::parse(&bad_regex, server(), Source::Config)
                .unwrap_err()
                .contains("regex")
        );
        let no_token = YAML.replace("as_token: as-secret", "as_token: ''");
        assert!(
            AppService::parse(&no_token, server(), Source::Config)
                .unwrap_err()
                .contains("as_token")
        );
        assert!(AppService::parse("id: [", server(), Source::Config).is_err());
        let a = AppService::parse(YAML, server(), Source::Config).unwrap();
        let b = AppService::parse(
            &YAML.replace("id: whatsapp", "id: other"),
            server(),
            Source::Store,
        )
        .unwrap();
        assert!(check_unique(&[a, b]).unwrap_err().contains("as_token"));
    }
}
