//! Registration files as mautrix and the Synapse documentation write them: parsing, writing
//! back, validation messages and namespace matching.

use appservice::{Namespace, Namespaces, Registration, RegistrationError};
use serde_norway::Value;

const MAUTRIX: &str = include_str!("fixtures/mautrix.yaml");
const SYNAPSE_DOCS: &str = include_str!("fixtures/synapse-docs.yaml");

fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).unwrap()
}

/// The written file must say what the original said; the only difference allowed is that
/// namespace lists the original left out are written as `[]`.
fn assert_round_trip(original: &str) {
    let registration = Registration::from_yaml_str(original).unwrap();
    let written = registration.to_yaml_string().unwrap();
    assert_eq!(Registration::from_yaml_str(&written).unwrap(), registration);
    let mut expected = yaml(original);
    let namespaces = expected
        .get_mut("namespaces")
        .unwrap()
        .as_mapping_mut()
        .unwrap();
    for kind in ["users", "aliases", "rooms"] {
        if !namespaces.contains_key(kind) {
            namespaces.insert(kind.into(), Value::Sequence(vec![]));
        }
    }
    assert_eq!(yaml(&written), expected, "written:\n{written}");
}

#[test]
fn a_mautrix_registration_reads_and_writes_back_unchanged() {
    let reg = Registration::from_yaml_str(MAUTRIX).unwrap();
    assert_eq!(reg.id, "whatsapp");
    assert_eq!(reg.url.as_deref(), Some("http://localhost:29318"));
    assert_eq!(
        reg.as_token,
        "Jq7rZQ0yTs3nH0vY4p1dW2cK9mXbL5aE8gR6uN3oI7fS1tV0jP4qC2wD9hM5kB8z"
    );
    assert_eq!(
        reg.hs_token,
        "pW3nE8rT1yU6iO0aS5dF2gH7jK4lZ9xC3vB6nM1qW8eR5tY2uI0oP7aS4dF9gH3j"
    );
    assert_eq!(reg.sender_localpart, "Xv8kQm2LpR5tWz9Y");
    assert_eq!(reg.rate_limited, Some(false));
    assert!(!reg.is_rate_limited());
    assert_eq!(
        reg.namespaces,
        Namespaces {
            users: vec![
                Namespace::new("^@whatsappbot:example\\.org$", true),
                Namespace::new("^@whatsapp_.*:example\\.org$", true),
            ],
            aliases: vec![],
            rooms: vec![],
        }
    );
    assert!(reg.receives_ephemeral() && reg.receives_ephemeral_unstable());
    let extra: Vec<_> = reg
        .extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    assert_eq!(
        extra,
        [
            ("io.element.msc4190", Value::Bool(true)),
            ("org.matrix.msc3202", Value::Bool(true))
        ]
    );
    assert_round_trip(MAUTRIX);
}

#[test]
fn a_synapse_docs_registration_reads_and_writes_back_unchanged() {
    let reg = Registration::from_yaml_str(SYNAPSE_DOCS).unwrap();
    assert_eq!(reg.id, "IRC Bridge");
    assert_eq!(reg.sender_localpart, "_irc_bot");
    assert_eq!(reg.rate_limited, None);
    assert!(reg.is_rate_limited(), "Synapse's default");
    assert_eq!(reg.protocols, Some(vec!["irc".to_owned()]));
    assert!(!reg.receives_ephemeral() && !reg.receives_ephemeral_unstable());
    assert_eq!(
        reg.namespaces.aliases,
        [Namespace::new("#_irc_bridge_.*", false)]
    );
    assert!(reg.extra.is_empty());
    assert_round_trip(SYNAPSE_DOCS);
}

#[test]
fn namespace_matching_follows_synapse() {
    let mautrix = Registration::from_yaml_str(MAUTRIX)
        .unwrap()
        .matcher()
        .unwrap();
    assert!(mautrix.is_user_in_namespace("@whatsapp_4917012345:example.org"));
    assert!(mautrix.is_user_in_namespace("@whatsappbot:example.org"));
    assert!(
        !mautrix.is_user_in_namespace("@whatsappbot:example.org.evil"),
        "^…$ is honoured"
    );
    assert!(!mautrix.is_user_in_namespace("@alice:example.org"));
    assert!(mautrix.is_exclusive_user("@whatsapp_1:example.org"));
    assert!(!mautrix.is_room_alias_in_namespace("#whatsapp_1:example.org"));

    let docs = Registration::from_yaml_str(SYNAPSE_DOCS).unwrap();
    // Unanchored patterns match from the start of the id (Python's re.match), not inside it.
    assert!(docs.is_user_in_namespace("@_irc_bridge_bob:example.org"));
    assert!(!docs.is_user_in_namespace("@bob_irc_bridge_:example.org"));
    assert!(docs.is_room_alias_in_namespace("#_irc_bridge_chan:example.org"));
    assert!(!docs.is_room_id_in_namespace("!_irc_bridge_:example.org"));
    let m = docs.matcher().unwrap();
    assert!(m.is_exclusive_user("@_irc_bridge_bob:example.org"));
    assert!(
        !m.is_exclusive_alias("#_irc_bridge_chan:example.org"),
        "alias namespace is not exclusive"
    );
    assert!(!m.is_exclusive_room("!x:example.org"));
}

#[test]
fn url_may_be_null_but_not_missing() {
    let null_url = SYNAPSE_DOCS.replace("url: \"http://127.0.0.1:1234\"", "url: null");
    let reg = Registration::from_yaml_str(&null_url).unwrap();
    assert_eq!(reg.url, None);
    assert!(reg.to_yaml_string().unwrap().contains("\nurl: null\n"));
    assert_round_trip(&null_url);

    let no_url = SYNAPSE_DOCS.replace("url: \"http://127.0.0.1:1234\"\n", "");
    match Registration::from_yaml_str(&no_url) {
        Err(RegistrationError::Yaml(m)) => assert!(m.contains("missing field `url`"), "{m}"),
        other => panic!("{other:?}"),
    }
}

fn invalid(edit: impl FnOnce(&mut Registration)) -> String {
    let mut reg = Registration::from_yaml_str(SYNAPSE_DOCS).unwrap();
    edit(&mut reg);
    match reg.validate() {
        Err(RegistrationError::Invalid(message)) => message,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn validation_says_what_is_wrong() {
    assert_eq!(invalid(|r| r.id = " ".into()), "`id` must not be empty");
    assert_eq!(
        invalid(|r| r.id = "a|b".into()),
        "`id` \"a|b\" must not contain '|'"
    );
    assert_eq!(
        invalid(|r| r.as_token.clear()),
        "`as_token` must not be empty"
    );
    assert_eq!(
        invalid(|r| r.hs_token.clear()),
        "`hs_token` must not be empty"
    );
    assert_eq!(
        invalid(|r| r.url = Some("localhost:8080".into())),
        "`url` \"localhost:8080\" must be an http(s) URL or null"
    );
    assert_eq!(
        invalid(|r| r.url = Some(String::new())),
        "`url` \"\" must be an http(s) URL or null"
    );
    assert_eq!(
        invalid(|r| r.sender_localpart = "bot:x".into()),
        "`sender_localpart` \"bot:x\" must be non-empty and use only letters, digits, '.', '_', '=', \
         '-', '/', '+' and '~'"
    );
    let bad_regex = invalid(|r| r.namespaces.users.push(Namespace::new("@_irc_[", true)));
    assert!(
        bad_regex.starts_with(
            "`namespaces.users[1].regex` \"@_irc_[\" is not a valid regular expression: "
        ),
        "{bad_regex}"
    );
    // Python-only syntax (look-around) is refused rather than silently matching nothing.
    let lookahead = invalid(|r| r.namespaces.rooms.push(Namespace::new("!(?!x).*", false)));
    assert!(
        lookahead.starts_with("`namespaces.rooms[0].regex`"),
        "{lookahead}"
    );
    assert_eq!(
        invalid(|r| r.protocols = Some(vec!["irc".into(), String::new()])),
        "`protocols[1]` must not be empty"
    );
}

#[test]
fn yaml_errors_name_the_missing_key() {
    let no_exclusive = SYNAPSE_DOCS.replace("    - exclusive: true\n      regex", "    - regex");
    match Registration::from_yaml_str(&no_exclusive) {
        Err(RegistrationError::Yaml(m)) => assert!(m.contains("missing field `exclusive`"), "{m}"),
        other => panic!("{other:?}"),
    }
    match Registration::from_yaml_str("id: x\n") {
        Err(RegistrationError::Yaml(m)) => assert!(m.contains("missing field"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn generated_registrations_are_written_privately_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("whatsapp.yaml");
    let namespaces = Namespaces {
        users: vec![Namespace::new("@_wa_.*:charla\\.local", true)],
        aliases: vec![Namespace::new("#_wa_.*:charla\\.local", true)],
        rooms: vec![],
    };
    let mut reg = Registration::generate(
        "whatsapp",
        Some("http://127.0.0.1:29318".into()),
        "_wa_bot",
        namespaces,
    );
    reg.set_receive_ephemeral(true);
    reg.write_file(&path).unwrap();
    let read = Registration::from_file(&path).unwrap();
    assert_eq!(read, reg);
    assert_eq!(read.as_token.len(), 64);
    assert_ne!(read.as_token, read.hs_token);
    let text = std::fs::read_to_string(&path).unwrap();
    let written = yaml(&text);
    assert_eq!(written["receive_ephemeral"], Value::Bool(true));
    assert_eq!(
        written["de.sorunome.msc2409.push_ephemeral"],
        Value::Bool(true)
    );
    assert_eq!(written["rate_limited"], Value::Bool(false));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    std::fs::write(&path, text.replace("_wa_bot", "Bad Bot")).unwrap();
    match Registration::from_file(&path) {
        Err(RegistrationError::Invalid(m)) => {
            assert!(
                m.starts_with(&format!(
                    "{}: `sender_localpart` \"Bad Bot\"",
                    path.display()
                )),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    match Registration::from_file(dir.path().join("missing.yaml")) {
        Err(RegistrationError::Io(m)) => assert!(m.contains("missing.yaml"), "{m}"),
        other => panic!("{other:?}"),
    }
}
