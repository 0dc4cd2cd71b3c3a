//! The application service registration file (spec: "Application Service API", Registration).
//!
//! The same YAML file is read by the homeserver (Synapse's `app_service_config_files`, Charla's
//! `[appservice] registrations`) and by the appservice itself, so both sides parse it here.
//! Keys this crate does not model (`org.matrix.msc3202`, `io.element.msc4190`,
//! `ip_range_whitelist`, …) are kept in [`Registration::extra`] and written back unchanged, so a
//! read-modify-write never drops another tool's settings.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use rand::Rng;
use rand::distributions::Alphanumeric;
use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::RegistrationError;

/// Length of the tokens [`Registration::generate`] makes (mautrix uses 64 as well).
pub const TOKEN_LENGTH: usize = 64;

/// One registration file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Unique, never-changing id of the appservice.
    pub id: String,
    /// Where the homeserver reaches the appservice. The key is required, but may be `null`
    /// ("no traffic"): Synapse refuses a file without it so that push is never turned off by
    /// accident, and so do we.
    #[serde(deserialize_with = "required_nullable")]
    pub url: Option<String>,
    /// The token the appservice presents to the homeserver.
    pub as_token: String,
    /// The token the homeserver presents to the appservice.
    pub hs_token: String,
    /// Localpart of the appservice's own user (the "bot").
    pub sender_localpart: String,
    /// User, alias and room namespaces.
    pub namespaces: Namespaces,
    /// Whether masqueraded users are rate limited; absent means yes (Synapse's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<bool>,
    /// Third-party protocols the appservice provides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// Spec (v1.13+): push EDUs in the transaction's `ephemeral` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_ephemeral: Option<bool>,
    /// MSC2409's unstable name: push EDUs under `de.sorunome.msc2409.ephemeral`.
    #[serde(
        rename = "de.sorunome.msc2409.push_ephemeral",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub msc2409_push_ephemeral: Option<bool>,
    /// The name MSC2409 used late in review; mautrix still writes it next to the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_ephemeral: Option<bool>,
    /// Every other key of the file, kept as read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_norway::Value>,
}

/// The three namespace lists. Each may be missing in the file (Synapse treats that as empty);
/// all three are always written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    #[serde(default, deserialize_with = "list_or_null")]
    pub users: Vec<Namespace>,
    #[serde(default, deserialize_with = "list_or_null")]
    pub aliases: Vec<Namespace>,
    #[serde(default, deserialize_with = "list_or_null")]
    pub rooms: Vec<Namespace>,
}

/// One namespace entry. Both keys are required, as in the spec and Synapse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub exclusive: bool,
    pub regex: String,
}

impl Namespace {
    pub fn new(regex: impl Into<String>, exclusive: bool) -> Self {
        Self {
            exclusive,
            regex: regex.into(),
        }
    }
}

/// `url: null` and `url: "http://…"` are both fine, a missing `url` is not.
fn required_nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// `rooms:` with nothing after it is YAML null; treat it as the empty list it means.
fn list_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Namespace>, D::Error> {
    Ok(Option::<Vec<Namespace>>::deserialize(d)?.unwrap_or_default())
}

/// Tokens never reach logs: `Debug` shows everything but them.
impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("as_token", &"<redacted>")
            .field("hs_token", &"<redacted>")
            .field("sender_localpart", &self.sender_localpart)
            .field("namespaces", &self.namespaces)
            .field("rate_limited", &self.rate_limited)
            .field("protocols", &self.protocols)
            .field("receive_ephemeral", &self.receive_ephemeral)
            .field("msc2409_push_ephemeral", &self.msc2409_push_ephemeral)
            .field("push_ephemeral", &self.push_ephemeral)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A fresh random token: 64 characters from `[A-Za-z0-9]`, safe in URLs, headers and YAML.
pub fn generate_token() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(TOKEN_LENGTH)
        .map(char::from)
        .collect()
}

impl Registration {
    /// A bridge's registration kept in a file: the one at `path`, or (first start) the one
    /// `generate` makes, with fresh tokens; pointed at `url` (an in-process bridge's URL follows
    /// the listener) and written back when anything changed.
    pub fn load_or_generate(
        path: &Path,
        url: &str,
        generate: impl FnOnce() -> Registration,
    ) -> Result<Registration, RegistrationError> {
        let mut registration = if path.exists() {
            Registration::from_file(path)?
        } else {
            generate()
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

    /// A new registration with fresh `as_token` and `hs_token`, not rate limited (bridges send
    /// on behalf of many users), and without EDUs.
    pub fn generate(
        id: impl Into<String>,
        url: Option<String>,
        sender_localpart: impl Into<String>,
        namespaces: Namespaces,
    ) -> Self {
        Self {
            id: id.into(),
            url,
            as_token: generate_token(),
            hs_token: generate_token(),
            sender_localpart: sender_localpart.into(),
            namespaces,
            rate_limited: Some(false),
            protocols: None,
            receive_ephemeral: None,
            msc2409_push_ephemeral: None,
            push_ephemeral: None,
            extra: BTreeMap::new(),
        }
    }

    /// Asks for EDUs under both the stable and MSC2409's name, as mautrix does, so that
    /// homeservers that only know one of them still send them.
    pub fn set_receive_ephemeral(&mut self, on: bool) {
        self.receive_ephemeral = Some(on);
        self.msc2409_push_ephemeral = Some(on);
    }

    /// Whether the homeserver should put EDUs under the transaction's `ephemeral` key.
    pub fn receives_ephemeral(&self) -> bool {
        self.receive_ephemeral == Some(true) || self.push_ephemeral == Some(true)
    }

    /// Whether the homeserver should put EDUs under `de.sorunome.msc2409.ephemeral`.
    pub fn receives_ephemeral_unstable(&self) -> bool {
        self.msc2409_push_ephemeral == Some(true)
    }

    /// `rate_limited` with Synapse's default (absent or not a bool: limited).
    pub fn is_rate_limited(&self) -> bool {
        self.rate_limited.unwrap_or(true)
    }

    /// Parses a registration and validates it.
    pub fn from_yaml_str(yaml: &str) -> Result<Self, RegistrationError> {
        let registration: Self =
            serde_norway::from_str(yaml).map_err(|e| RegistrationError::Yaml(e.to_string()))?;
        registration.validate()?;
        Ok(registration)
    }

    /// Reads, parses and validates a registration file; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, RegistrationError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| RegistrationError::Io(format!("{}: {e}", path.display())))?;
        Self::from_yaml_str(&text).map_err(|e| e.in_file(path))
    }

    /// The YAML text of this registration.
    pub fn to_yaml_string(&self) -> Result<String, RegistrationError> {
        serde_norway::to_string(self).map_err(|e| RegistrationError::Yaml(e.to_string()))
    }

    /// Writes the file atomically (temporary file, then rename) and readable by its owner only,
    /// since it holds both tokens.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), RegistrationError> {
        let path = path.as_ref();
        let io = |e: std::io::Error| RegistrationError::Io(format!("{}: {e}", path.display()));
        let text = self.to_yaml_string()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Checks what a homeserver relies on, with a message that says what to fix.
    pub fn validate(&self) -> Result<(), RegistrationError> {
        let invalid = |msg: String| Err(RegistrationError::Invalid(msg));
        if self.id.trim().is_empty() {
            return invalid("`id` must not be empty".into());
        }
        if self.id.contains('|') {
            return invalid(format!("`id` {:?} must not contain '|'", self.id));
        }
        if self.as_token.is_empty() {
            return invalid("`as_token` must not be empty".into());
        }
        if self.hs_token.is_empty() {
            return invalid("`hs_token` must not be empty".into());
        }
        if let Some(url) = &self.url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                _ => return invalid(format!("`url` {url:?} must be an http(s) URL or null")),
            }
        }
        if !is_valid_sender_localpart(&self.sender_localpart) {
            return invalid(format!(
                "`sender_localpart` {:?} must be non-empty and use only letters, digits, '.', '_', \
                 '=', '-', '/', '+' and '~'",
                self.sender_localpart
            ));
        }
        for (kind, list) in self.namespaces.lists() {
            for (i, ns) in list.iter().enumerate() {
                if let Err(e) = compile(&ns.regex) {
                    return invalid(format!(
                        "`namespaces.{kind}[{i}].regex` {:?} is not a valid regular expression: {e}",
                        ns.regex
                    ));
                }
            }
        }
        if let Some(protocols) = &self.protocols
            && let Some(i) = protocols.iter().position(|p| p.is_empty())
        {
            return invalid(format!("`protocols[{i}]` must not be empty"));
        }
        Ok(())
    }

    /// The appservice's own user on the homeserver `server_name`.
    pub fn sender_user_id(
        &self,
        server_name: &ruma::ServerName,
    ) -> Result<ruma::OwnedUserId, RegistrationError> {
        ruma::UserId::parse_with_server_name(self.sender_localpart.as_str(), server_name)
            .map_err(|e| RegistrationError::Invalid(format!("`sender_localpart`: {e}")))
    }

    /// The compiled namespaces, for matching many ids.
    pub fn matcher(&self) -> Result<NamespaceMatcher, RegistrationError> {
        NamespaceMatcher::new(self)
    }

    /// Whether `user_id` is in a users namespace (compiles the regexes on each call; keep a
    /// [`NamespaceMatcher`] where this is hot). An invalid registration matches nothing.
    pub fn is_user_in_namespace(&self, user_id: &str) -> bool {
        self.matcher()
            .is_ok_and(|m| m.is_user_in_namespace(user_id))
    }

    /// Whether `alias` is in an aliases namespace (see [`Self::is_user_in_namespace`]).
    pub fn is_room_alias_in_namespace(&self, alias: &str) -> bool {
        self.matcher()
            .is_ok_and(|m| m.is_room_alias_in_namespace(alias))
    }

    /// Whether `room_id` is in a rooms namespace (see [`Self::is_user_in_namespace`]).
    pub fn is_room_id_in_namespace(&self, room_id: &str) -> bool {
        self.matcher()
            .is_ok_and(|m| m.is_room_id_in_namespace(room_id))
    }
}

impl Namespaces {
    fn lists(&self) -> [(&'static str, &[Namespace]); 3] {
        [
            ("users", &self.users),
            ("aliases", &self.aliases),
            ("rooms", &self.rooms),
        ]
    }
}

/// Checks what must be unique among the registrations of one homeserver (the spec: "each
/// `as_token` and `id` MUST be unique"; the `as_token` is how a request names its appservice).
/// Errors name both files, as Synapse's do. Tokens are never part of the message.
pub fn check_unique<'a>(
    registrations: impl IntoIterator<Item = (&'a Path, &'a Registration)>,
) -> Result<(), RegistrationError> {
    let mut ids: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut tokens: BTreeMap<&str, &Path> = BTreeMap::new();
    for (path, registration) in registrations {
        if let Some(first) = ids.insert(&registration.id, path) {
            return Err(RegistrationError::Invalid(format!(
                "two registrations use the id {:?}: {} and {}",
                registration.id,
                first.display(),
                path.display()
            )));
        }
        if let Some(first) = tokens.insert(&registration.as_token, path) {
            return Err(RegistrationError::Invalid(format!(
                "two registrations use the same as_token: {} and {}",
                first.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// Whether `localpart` can be the appservice's sender: the spec's localpart grammar plus the
/// upper-case letters and `~` of historical user ids (mautrix generates a random mixed-case
/// sender localpart, and Synapse accepts any localpart that needs no URL encoding).
pub fn is_valid_sender_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._=-/+~".contains(&b))
}

/// Synapse tests namespaces with Python's `re.match`: the match must start at the beginning of
/// the id but may end anywhere, so `@_wa_.*` matches `@_wa_1:example.org`. We anchor the same
/// way; registrations that want a full match write `^…$` themselves (mautrix does).
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})"))
}

/// Compiled namespaces of one registration.
#[derive(Clone, Debug)]
pub struct NamespaceMatcher {
    users: Vec<(Regex, bool)>,
    aliases: Vec<(Regex, bool)>,
    rooms: Vec<(Regex, bool)>,
}

impl NamespaceMatcher {
    pub fn new(registration: &Registration) -> Result<Self, RegistrationError> {
        let build = |list: &[Namespace]| {
            list.iter()
                .map(|ns| {
                    compile(&ns.regex)
                        .map(|re| (re, ns.exclusive))
                        .map_err(|e| RegistrationError::Invalid(format!("{:?}: {e}", ns.regex)))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let ns = &registration.namespaces;
        Ok(Self {
            users: build(&ns.users)?,
            aliases: build(&ns.aliases)?,
            rooms: build(&ns.rooms)?,
        })
    }

    /// The first matching namespace decides exclusivity, as in Synapse.
    fn find(list: &[(Regex, bool)], id: &str) -> Option<bool> {
        list.iter()
            .find(|(re, _)| re.is_match(id))
            .map(|(_, exclusive)| *exclusive)
    }

    pub fn is_user_in_namespace(&self, user_id: &str) -> bool {
        Self::find(&self.users, user_id).is_some()
    }

    pub fn is_room_alias_in_namespace(&self, alias: &str) -> bool {
        Self::find(&self.aliases, alias).is_some()
    }

    pub fn is_room_id_in_namespace(&self, room_id: &str) -> bool {
        Self::find(&self.rooms, room_id).is_some()
    }

    /// Whether the first users namespace matching `user_id` is exclusive. (The sender user is
    /// always exclusive to its appservice too; the homeserver adds that check, since only it
    /// knows its server name.)
    pub fn is_exclusive_user(&self, user_id: &str) -> bool {
        Self::find(&self.users, user_id).unwrap_or(false)
    }

    pub fn is_exclusive_alias(&self, alias: &str) -> bool {
        Self::find(&self.aliases, alias).unwrap_or(false)
    }

    pub fn is_exclusive_room(&self, room_id: &str) -> bool {
        Self::find(&self.rooms, room_id).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(users: &[(&str, bool)]) -> Registration {
        let namespaces = Namespaces {
            users: users.iter().map(|(r, e)| Namespace::new(*r, *e)).collect(),
            ..Namespaces::default()
        };
        Registration::generate(
            "wa",
            Some("http://127.0.0.1:29318".into()),
            "wabot",
            namespaces,
        )
    }

    #[test]
    fn tokens_are_64_url_safe_chars_and_fresh() {
        let a = reg(&[]);
        let b = reg(&[]);
        for token in [&a.as_token, &a.hs_token, &b.as_token] {
            assert_eq!(token.len(), 64);
            assert!(token.bytes().all(|c| c.is_ascii_alphanumeric()), "{token}");
        }
        assert_ne!(a.as_token, a.hs_token);
        assert_ne!(a.as_token, b.as_token);
        assert_eq!(a.validate(), Ok(()));
    }

    #[test]
    fn matching_is_anchored_at_the_start_like_synapse() {
        let m = reg(&[("@_wa_.*:example\\.org", true), ("@wabot2", false)])
            .matcher()
            .unwrap();
        assert!(m.is_user_in_namespace("@_wa_123:example.org"));
        assert!(
            !m.is_user_in_namespace("@x_wa_123:example.org"),
            "must match from the start"
        );
        assert!(!m.is_user_in_namespace("@_wa_123:example.com"));
        // re.match semantics: a prefix match is a match.
        assert!(m.is_user_in_namespace("@wabot2:anywhere"));
        assert!(m.is_exclusive_user("@_wa_1:example.org"));
        assert!(!m.is_exclusive_user("@wabot2:example.org"));
        assert!(!m.is_exclusive_user("@alice:example.org"));
    }

    #[test]
    fn sender_user_id() {
        let server = ruma::server_name!("example.org");
        assert_eq!(
            reg(&[]).sender_user_id(server).unwrap(),
            "@wabot:example.org"
        );
        // mautrix's random mixed-case sender is a valid (historical-grammar) user id.
        let mut mixed = reg(&[]);
        mixed.sender_localpart = "Xv8kQm2LpR5tWz9Y".into();
        assert_eq!(
            mixed.sender_user_id(server).unwrap(),
            "@Xv8kQm2LpR5tWz9Y:example.org"
        );
    }

    #[test]
    fn ids_and_as_tokens_must_be_unique() {
        let (a, b) = (reg(&[]), reg(&[]));
        let (pa, pb) = (Path::new("a.yaml"), Path::new("b.yaml"));
        assert_eq!(
            check_unique([(pa, &a), (pb, &b)]),
            Err(RegistrationError::Invalid(
                "two registrations use the id \"wa\": a.yaml and b.yaml".into()
            ))
        );
        let mut c = b.clone();
        c.id = "other".into();
        assert_eq!(check_unique([(pa, &a), (pb, &c)]), Ok(()));
        c.as_token = a.as_token.clone();
        assert_eq!(
            check_unique([(pa, &a), (pb, &c)]),
            Err(RegistrationError::Invalid(
                "two registrations use the same as_token: a.yaml and b.yaml".into()
            ))
        );
    }

    #[test]
    fn localparts() {
        assert!(is_valid_sender_localpart("_wa_bot.1=x-y/z+w~"));
        assert!(is_valid_sender_localpart("Xv8kQm2LpR5tWz9Y"));
        assert!(!is_valid_sender_localpart(""));
        assert!(!is_valid_sender_localpart("bot bot"));
        assert!(!is_valid_sender_localpart("bot:x"));
        assert!(!is_valid_sender_localpart("bot@x"));
    }

    #[test]
    fn debug_hides_tokens() {
        let r = reg(&[]);
        let shown = format!("{r:?}");
        assert!(
            !shown.contains(&r.as_token) && !shown.contains(&r.hs_token),
            "{shown}"
        );
    }
}
