//! Shared-secret registration (#18 item 4): no secret printed in the docs works, the shipped
//! config starts with a generated secret in the data folder, a placeholder is refused at start,
//! and nobody pre-registers a user inside an appservice's exclusive namespace.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::common::{
    Client, TestServer, assert_error,
    process::{self, free_port},
};

const PATH: &str = "/_synapse/admin/v1/register";

fn mac(secret: &str, nonce: &str, user: &str, password: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    for part in [nonce, user, password] {
        mac.update(part.as_bytes());
        mac.update(b"\x00");
    }
    mac.update(b"notadmin");
    hex::encode(mac.finalize().into_bytes())
}

/// A nonce, then a registration of `user` with a MAC keyed by `secret`.
async fn register(c: &Client, secret: &str, user: &str) -> (u16, Value) {
    let (status, body) = c.get(PATH).await;
    assert_eq!(status, 200, "{body}");
    let nonce = body["nonce"].as_str().unwrap().to_owned();
    c.post(
        PATH,
        json!({ "nonce": nonce, "username": user, "password": "a-password",
                "mac": mac(secret, &nonce, user, "a-password") }),
    )
    .await
}

/// README's first command, on the shipped `config.toml` (only the port changed, in a copy so
/// the data folder is the test's): it starts, the documented placeholder does not work, and the
/// secret generated into the data folder does.
#[tokio::test]
async fn the_shipped_config_runs_with_a_generated_secret_and_no_printed_one_works() {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let port = free_port();
    assert!(shipped.contains("listen = \"127.0.0.1:8008\""));
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        shipped.replace(
            "listen = \"127.0.0.1:8008\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let _server = process::serve(&config, &base).await;
    let c = Client {
        http: reqwest::Client::new(),
        base,
        token: None,
    };
    for printed in ["change-me", ""] {
        let (status, body) = register(&c, printed, "eve").await;
        assert_error(status, &body, 403, "M_FORBIDDEN");
    }
    let secret_file = dir.path().join("data/registration_shared_secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "only the server's user reads the secret"
        );
    }
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let (status, body) = register(&c, secret.trim(), "ana").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@ana:localhost");
}

#[tokio::test]
async fn a_config_with_the_old_placeholder_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"localhost\"\n[server]\nlisten = \"127.0.0.1:{}\"\n\
             [storage]\npath = \"data\"\n[registration]\nshared_secret = \"change-me\"\n",
            free_port()
        ),
    )
    .unwrap();
    let stderr = process::refused_start(&config).expect("refused to start with a public secret");
    assert!(
        stderr.contains("registration.shared_secret") && stderr.contains("placeholder"),
        "the refusal says what to fix: {stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing was created before the refusal"
    );
}

#[tokio::test]
async fn shared_secret_registration_respects_exclusive_namespaces() {
    const SECRET: &str = "a-shared-secret-for-tests";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("whatsapp.yaml");
    std::fs::write(
        &file,
        "id: whatsapp\nurl: null\nas_token: as-token-x\nhs_token: hs-token-x\n\
         sender_localpart: whatsappbot\nnamespaces:\n  users:\n    - exclusive: true\n      \
         regex: '@whatsapp_.*:localhost'\n  aliases: []\n  rooms: []\n",
    )
    .unwrap();
    let s = TestServer::start_with(&format!(
        "[registration]\nshared_secret = \"{SECRET}\"\n[appservice]\nregistrations = [{file:?}]\n"
    ))
    .await;
    let c = s.client();
    let (status, body) = register(&c, SECRET, "whatsapp_34600111222").await;
    assert_error(status, &body, 400, "M_EXCLUSIVE");
    let (status, _) = c
        .post(
            "/_matrix/client/v3/login",
            json!({ "type": "m.login.password", "user": "whatsapp_34600111222",
                    "password": "a-password" }),
        )
        .await;
    assert_eq!(status, 403, "no account was created");
    // Outside the namespace the same secret works.
    let (status, body) = register(&c, SECRET, "maria").await;
    assert_eq!(status, 200, "{body}");
}
