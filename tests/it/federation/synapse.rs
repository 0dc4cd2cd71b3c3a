//! Interoperability with Synapse, the reference homeserver, from PyPI: a Synapse on loopback
//! (a TLS federation listener with a self-signed certificate, a plain client listener) and a
//! Charla federate both ways. Users of each join the other's rooms (by id and by alias, also
//! after an invite), messages cross in order, typing and receipts cross, an encrypted message
//! sent by a matrix-sdk user on one server is decrypted by one on the other, and a Synapse room
//! of a version Charla does not support is refused cleanly.
//!
//! `tests/run` installs Synapse into `target/synapse-venv` (or the virtualenv whose Python
//! `CHARLA_SYNAPSE_PYTHON` names).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    certificate, peer_at,
    rooms::{bodies, ephemeral, join_via, sync_until, whoami},
};
use crate::common::{Client, enc};

/// A Synapse process on loopback, killed when dropped.
struct Synapse {
    child: Child,
    /// Its server name, `127.0.0.1:<federation port>`.
    name: String,
    /// Its client API, plain HTTP.
    client_base: String,
    dir: tempfile::TempDir,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    match std::env::var_os("CHARLA_SYNAPSE_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/synapse-venv/bin/python"),
    }
}

fn free_port() -> u16 {
    crate::common::process::free_port()
}

impl Synapse {
    async fn start() -> Synapse {
        let python = python();
        assert!(
            python.exists(),
            "Synapse is not installed at {}: run tests/run, which installs it",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        certificate(dir.path());
        let (fed_port, client_port) = (free_port(), free_port());
        let d = dir.path().display();
        let limit = "{per_second: 1000, burst_count: 1000}";
        let config = format!(
            r#"server_name: "127.0.0.1:{fed_port}"
pid_file: {d}/homeserver.pid
listeners:
  - port: {fed_port}
    tls: true
    bind_addresses: ['127.0.0.1']
    type: http
    resources: [{{names: [federation], compress: false}}]
  - port: {client_port}
    tls: false
    bind_addresses: ['127.0.0.1']
    type: http
    resources: [{{names: [client], compress: false}}]
database: {{name: sqlite3, args: {{database: {d}/homeserver.db}}}}
media_store_path: {d}/media
signing_key_path: {d}/signing.key
tls_certificate_path: {d}/cert.pem
tls_private_key_path: {d}/key.pem
trusted_key_servers: []
suppress_key_server_warning: true
federation_verify_certificates: false
federation_ip_range_blacklist: []
ip_range_whitelist: ["127.0.0.0/8"]
enable_registration: true
enable_registration_without_verification: true
report_stats: false
macaroon_secret_key: "charla-interop-test-macaroon"
form_secret: "charla-interop-test-form"
rc_message: {limit}
rc_registration: {limit}
rc_login: {{address: {limit}, account: {limit}, failed_attempts: {limit}}}
rc_joins: {{local: {limit}, remote: {limit}}}
rc_invites: {{per_room: {limit}, per_user: {limit}, per_issuer: {limit}}}
rc_federation: {{window_size: 1000, sleep_limit: 1000, sleep_delay: 1, reject_limit: 1000, concurrent: 100}}
"#
        );
        let config_path = dir.path().join("homeserver.yaml");
        std::fs::write(&config_path, config).unwrap();
        let keys = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(
            keys.status.success(),
            "{}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let log = std::fs::File::create(dir.path().join("synapse.log")).unwrap();
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config_path)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let synapse = Synapse {
            child,
            name: format!("127.0.0.1:{fed_port}"),
            client_base: format!("http://127.0.0.1:{client_port}"),
            dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let url = format!("{}/_matrix/client/versions", synapse.client_base);
            if let Ok(r) = http.get(url).send().await
                && r.status().is_success()
            {
                return synapse;
            }
            assert!(
                Instant::now() < deadline,
                "Synapse did not start: {}",
                synapse.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("synapse.log")).unwrap_or_default()
    }

    /// Registers `name` (password [`crate::sdk_e2ee::PASSWORD`]) through the dummy flow.
    async fn register(&self, name: &str) -> Client {
        register(&self.client_base, name).await
    }
}

/// Registers on any homeserver through the dummy flow, following its UIA session.
async fn register(base: &str, name: &str) -> Client {
    let mut client = Client {
        http: reqwest::Client::new(),
        base: base.to_owned(),
        token: None,
    };
    let mut body = json!({ "username": name, "password": crate::sdk_e2ee::PASSWORD });
    let (status, answer) = client
        .post("/_matrix/client/v3/register", body.clone())
        .await;
    let answer = match status {
        401 => {
            body["auth"] = json!({ "type": "m.login.dummy", "session": answer["session"] });
            let (status, answer) = client.post("/_matrix/client/v3/register", body).await;
            assert_eq!(status, 200, "{answer}");
            answer
        }
        _ => {
            assert_eq!(status, 200, "{answer}");
            answer
        }
    };
    client.token = answer["access_token"].as_str().map(str::to_owned);
    client
}

fn timeline_of(seen: &[Value], room: &str) -> Vec<Value> {
    seen.iter()
        .flat_map(|s| {
            s["rooms"]["join"][room]["timeline"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charla_and_synapse_federate_both_ways() {
    let synapse = Synapse::start().await;
    let certs = tempfile::tempdir().unwrap();
    certificate(certs.path());
    let data = tempfile::tempdir().unwrap();
    let charla = peer_at(certs.path(), free_port(), data.path(), "").await;
    let carla = register(&charla.base_url(), "carla").await;
    let sam = synapse.register("sam").await;
    let (carla_id, sam_id) = (whoami(&carla).await, whoami(&sam).await);
    let charla_name = charla.services.config.server_name.to_string();

    // Sam (Synapse) joins Carla's room on Charla; messages cross both ways, in order.
    let room = carla
        .create_room(json!({ "preset": "public_chat", "name": "Soporte" }))
        .await;
    join_via(&sam, &room, &charla_name).await;
    let (mut c_since, mut s_since) = (None, None);
    sync_until(&carla, &mut c_since, |_| true).await;
    sync_until(&sam, &mut s_since, |_| true).await;
    carla.send_text(&room, "c1", "hola desde Charla").await;
    carla.send_text(&room, "c2", "segundo mensaje").await;
    let seen = sync_until(&sam, &mut s_since, |s| bodies(s, &room).len() >= 2).await;
    assert_eq!(
        bodies(&seen, &room),
        ["hola desde Charla", "segundo mensaje"]
    );
    assert_eq!(timeline_of(&seen, &room)[0]["sender"], json!(carla_id));
    let sams = sam.send_text(&room, "s1", "hello from Synapse").await;
    let seen = sync_until(&carla, &mut c_since, |s| {
        bodies(s, &room).contains(&"hello from Synapse".to_owned())
    })
    .await;
    assert_eq!(
        bodies(&seen, &room),
        ["hola desde Charla", "segundo mensaje", "hello from Synapse"]
    );

    // Typing and receipts cross both ways.
    let typing = |who: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            enc(&room),
            enc(who)
        )
    };
    let (status, _) = sam
        .put(
            &typing(&sam_id),
            json!({ "typing": true, "timeout": 20000 }),
        )
        .await;
    assert_eq!(status, 200);
    sync_until(&carla, &mut c_since, |s| {
        ephemeral(s, &room, "m.typing", |e| {
            e["content"]["user_ids"] == json!([sam_id])
        })
    })
    .await;
    let (status, _) = carla
        .put(
            &typing(&carla_id),
            json!({ "typing": true, "timeout": 20000 }),
        )
        .await;
    assert_eq!(status, 200);
    sync_until(&sam, &mut s_since, |s| {
        ephemeral(s, &room, "m.typing", |e| {
            e["content"]["user_ids"]
                .as_array()
                .is_some_and(|u| u.contains(&json!(carla_id)))
        })
    })
    .await;
    let receipt = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        enc(&room),
        enc(&sams)
    );
    assert_eq!(carla.post(&receipt, json!({})).await.0, 200);
    sync_until(&sam, &mut s_since, |s| {
        ephemeral(s, &room, "m.receipt", |e| {
            e["content"][&sams]["m.read"][&carla_id]["ts"].is_u64()
        })
    })
    .await;

    // Carla joins Sam's room on Synapse by its alias, and they talk there.
    let (status, made) = sam
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "preset": "public_chat", "room_version": "11", "room_alias_name": "partners" }),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let room2 = made["room_id"].as_str().unwrap().to_owned();
    let alias = format!("#partners:{}", synapse.name);
    let (status, body) = carla
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&alias)),
            json!({}),
        )
        .await;
    assert_eq!((status, &body["room_id"]), (200, &json!(room2)), "{body}");
    sync_until(&carla, &mut c_since, |_| true).await;
    sam.send_text(&room2, "s2", "welcome to Synapse").await;
    sync_until(&carla, &mut c_since, |s| {
        bodies(s, &room2).contains(&"welcome to Synapse".to_owned())
    })
    .await;
    carla.send_text(&room2, "c3", "gracias").await;
    sync_until(&sam, &mut s_since, |s| {
        bodies(s, &room2).contains(&"gracias".to_owned())
    })
    .await;

    // Synapse's default room version (12) is refused cleanly.
    let (status, made) = sam
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "preset": "public_chat" }),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let v12 = made["room_id"].as_str().unwrap();
    let (status, body) = carla
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(v12),
                enc(&synapse.name)
            ),
            json!({}),
        )
        .await;
    crate::common::assert_error(status, &body, 400, "M_INCOMPATIBLE_ROOM_VERSION");

    // Media both ways: each server fetches the other's over federation.
    use super::media::{fetch, upload};
    let photo = crate::media::png(40, 30);
    let (sam_token, carla_token) = (sam.token.clone().unwrap(), carla.token.clone().unwrap());
    let uri = upload(
        &synapse.client_base,
        &sam_token,
        "image/png",
        "foto.png",
        photo.clone(),
    )
    .await;
    let path = format!(
        "/_matrix/client/v1/media/download/{}",
        uri.strip_prefix("mxc://").unwrap()
    );
    let (status, headers, bytes) = fetch(&charla.base_url(), &carla_token, &path).await;
    assert_eq!(
        (status, &bytes),
        (200, &photo),
        "Charla fetches Synapse's media"
    );
    assert_eq!(headers["content-type"], "image/png");
    let uri = upload(
        &charla.base_url(),
        &carla_token,
        "image/png",
        "recibo.png",
        photo.clone(),
    )
    .await;
    let path = format!(
        "/_matrix/client/v1/media/download/{}",
        uri.strip_prefix("mxc://").unwrap()
    );
    let (status, headers, bytes) = fetch(&synapse.client_base, &sam_token, &path).await;
    assert_eq!(
        (status, &bytes),
        (200, &photo),
        "Synapse fetches Charla's media"
    );
    assert_eq!(headers["content-type"], "image/png");
    let thumb = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width=32&height=32&method=scale",
        uri.strip_prefix("mxc://").unwrap()
    );
    let (status, _, bytes) = fetch(&synapse.client_base, &sam_token, &thumb).await;
    assert_eq!(status, 200, "Synapse thumbnails Charla's media");
    assert!(image::load_from_memory(&bytes).is_ok());

    // End-to-end encryption across the two: matrix-sdk users on each server.
    use crate::sdk_e2ee::{collect, encrypted_room_with, login, sync, sync_until as sdk_until};
    use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
    register(&charla.base_url(), "ana").await;
    synapse.register("sol").await;
    let ana = login(&charla.base_url(), "ana", "ana laptop").await;
    let sol = login(&synapse.client_base, "sol", "sol phone").await;
    sync(&ana).await;
    sync(&sol).await;
    let encrypted = encrypted_room_with(&ana, &sol).await;
    let mut sol_rx = collect(&sol);
    ana.get_room(&encrypted)
        .unwrap()
        .send(RoomMessageEventContent::text_plain("Pedido 4411 enviado"))
        .await
        .expect("Ana sends");
    let ana_id = ana.user_id().unwrap().to_owned();
    assert_eq!(
        sdk_until(&sol, &mut sol_rx, 1).await,
        vec![(ana_id, "Pedido 4411 enviado".to_owned())],
        "the Synapse user decrypts the Charla user's message"
    );
    let mut ana_rx = collect(&ana);
    sol.get_room(&encrypted)
        .unwrap()
        .send(RoomMessageEventContent::text_plain("Received, thanks"))
        .await
        .expect("Sol sends");
    let sol_id = sol.user_id().unwrap().to_owned();
    let got = sdk_until(&ana, &mut ana_rx, 2).await;
    assert!(
        got.contains(&(sol_id, "Received, thanks".to_owned())),
        "the Charla user decrypts the Synapse user's answer: {got:?}"
    );
    charla.stop().await;
}
