//! A fake Matrix server run by a test: its own TLS key document, its own signing key, requests
//! signed with `X-Matrix`, events hashed and signed by hand. It does what a real server would
//! not: forged, tampered and forking events, exactly as the test writes them.

use std::{net::SocketAddr, sync::Arc};

use base64::Engine;
use ruma::{
    CanonicalJsonObject,
    room_version_rules::RoomVersionRules,
    signatures::{Ed25519KeyPair, hash_and_sign_event, reference_hash, sign_json},
};
use serde_json::{Value, json};

use crate::common::enc;

/// A fake origin: serves its key document over TLS, signs requests and events.
pub(super) struct Fake {
    pub(super) name: String,
    pub(super) key: Ed25519KeyPair,
    key_server: tokio::task::JoinHandle<()>,
}

impl Fake {
    pub(super) async fn start(certs: &std::path::Path) -> Fake {
        let der = Ed25519KeyPair::generate();
        let key = Ed25519KeyPair::from_der(&der, "fake".to_owned()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.public_key());
        let mut doc: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": name,
            "valid_until_ts": ruma::MilliSecondsSinceUnixEpoch::now().get() + ruma::UInt::from(3_600_000u32),
            "verify_keys": { "ed25519:fake": { "key": public } },
            "old_verify_keys": {},
        }))
        .unwrap();
        sign_json(&name, &key, &mut doc).unwrap();
        let doc = Arc::new(serde_json::to_string(&doc).unwrap());
        let acceptor = tls_acceptor(certs);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, doc) = (acceptor.clone(), doc.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_req| {
                        let doc = doc.clone();
                        async move {
                            let mut response = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(doc.as_str().to_owned()),
                            ));
                            response.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Fake {
            name,
            key,
            key_server: task,
        }
    }

    /// Stops serving the key document: the fake no longer answers key fetches (what it sends
    /// is still signed with its key).
    pub(super) fn stop_key_server(&self) {
        self.key_server.abort();
    }

    pub(super) fn user(&self, local: &str) -> String {
        format!("@{local}:{}", self.name)
    }

    /// An `X-Matrix` header for a request to `destination`.
    fn authorization(
        &self,
        method: &str,
        uri: &str,
        destination: &str,
        body: Option<&Value>,
    ) -> String {
        let mut object: CanonicalJsonObject = serde_json::from_value(json!({
            "method": method, "uri": uri, "origin": self.name, "destination": destination,
        }))
        .unwrap();
        if let Some(body) = body {
            object.insert(
                "content".into(),
                serde_json::from_value(body.clone()).unwrap(),
            );
        }
        sign_json(&self.name, &self.key, &mut object).unwrap();
        let sig = object["signatures"].as_object().unwrap()[&self.name]
            .as_object()
            .unwrap()["ed25519:fake"]
            .as_str()
            .unwrap()
            .to_owned();
        format!(
            "X-Matrix origin=\"{}\",destination=\"{destination}\",key=\"ed25519:fake\",sig=\"{sig}\"",
            self.name
        )
    }

    /// Signs a request and sends it to the Charla at `addr` named `destination`.
    pub(super) async fn call(
        &self,
        addr: SocketAddr,
        destination: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{}{uri}", addr.port());
        let mut request = client.request(method.parse().unwrap(), url).header(
            "authorization",
            self.authorization(method, uri, destination, body.as_ref()),
        );
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sends a request that must be refused with `status` and `errcode`.
    pub(super) async fn refused(
        &self,
        (addr, destination): (SocketAddr, &str),
        (method, uri): (&str, &str),
        body: Option<Value>,
        (status, errcode): (u16, &str),
    ) {
        let (got, answer) = self.call(addr, destination, method, uri, body).await;
        assert_eq!(
            (got, &answer["errcode"]),
            (status, &json!(errcode)),
            "{uri}: {answer}"
        );
    }

    /// Hashes and signs an event with `key` (the fake's own, or another); its id and JSON.
    pub(super) fn seal(&self, key: &Ed25519KeyPair, mut event: Value) -> (String, Value) {
        event.as_object_mut().unwrap().remove("event_id");
        let mut object: CanonicalJsonObject = serde_json::from_value(event).unwrap();
        hash_and_sign_event(
            &self.name,
            key,
            &mut object,
            &RoomVersionRules::V11.redaction,
        )
        .unwrap();
        let id = format!(
            "${}",
            reference_hash(&object, &RoomVersionRules::V11).unwrap()
        );
        (id, serde_json::to_value(&object).unwrap())
    }
}

/// A user of the fake server in a Charla room, joined through `make_join`/`send_join`.
pub(super) struct Joined {
    pub(super) join_id: String,
    pub(super) depth: u64,
    /// The room's state as `send_join` answered it.
    pub(super) state: Vec<Value>,
}

impl Joined {
    /// The id of the state event of type `kind` in the answer.
    pub(super) fn state_id(&self, kind: &str) -> String {
        let event = self.state.iter().find(|e| e["type"] == kind).unwrap();
        event_id(event)
    }
}

/// A room version 11 event's id: its reference hash.
pub(super) fn event_id(event: &Value) -> String {
    let object: CanonicalJsonObject = serde_json::from_value(event.clone()).unwrap();
    format!(
        "${}",
        reference_hash(&object, &RoomVersionRules::V11).unwrap()
    )
}

impl Fake {
    /// Joins `user` (of this server) to `room` on the Charla at `addr` named `destination`.
    pub(super) async fn join(
        &self,
        (addr, destination): (SocketAddr, &str),
        room: &str,
        user: &str,
    ) -> Joined {
        let uri = format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11",
            enc(room),
            enc(user)
        );
        let (status, template) = self.call(addr, destination, "GET", &uri, None).await;
        assert_eq!(status, 200, "{template}");
        let mut join = template["event"].clone();
        join["origin_server_ts"] = json!(ruma::MilliSecondsSinceUnixEpoch::now());
        let (join_id, join) = self.seal(&self.key, join);
        let uri = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            enc(room),
            enc(&join_id)
        );
        let (status, answer) = self.call(addr, destination, "PUT", &uri, Some(join)).await;
        assert_eq!(status, 200, "{answer}");
        Joined {
            join_id,
            depth: template["event"]["depth"].as_u64().unwrap(),
            state: answer["state"].as_array().unwrap().clone(),
        }
    }

    /// Sends one transaction of `pdus`; the answer's `pdus` results.
    pub(super) async fn send_pdus(
        &self,
        (addr, destination): (SocketAddr, &str),
        txn: &str,
        pdus: Vec<Value>,
    ) -> Value {
        let body = json!({
            "origin": self.name,
            "origin_server_ts": ruma::MilliSecondsSinceUnixEpoch::now(),
            "pdus": pdus,
            "edus": [],
        });
        let uri = format!("/_matrix/federation/v1/send/{txn}");
        let (status, answer) = self.call(addr, destination, "PUT", &uri, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        answer["pdus"].clone()
    }
}

/// A Charla federating on loopback and a fake server beside it, sharing one certificate.
pub(super) struct Scene {
    pub(super) charla: charla::server::RunningServer,
    /// Charla's server name.
    pub(super) here: String,
    pub(super) addr: SocketAddr,
    pub(super) fake: Fake,
    pub(super) certs: tempfile::TempDir,
    pub(super) data: tempfile::TempDir,
    pub(super) port: u16,
}

impl Scene {
    pub(super) async fn start() -> Scene {
        let certs = tempfile::tempdir().unwrap();
        super::certificate(certs.path());
        let data = tempfile::tempdir().unwrap();
        let port = crate::common::process::free_port();
        let charla = super::peer_at(certs.path(), port, data.path(), "").await;
        let here = charla.services.config.server_name.to_string();
        let addr = charla.federation_addr.unwrap();
        let fake = Fake::start(certs.path()).await;
        Scene {
            charla,
            here,
            addr,
            fake,
            certs,
            data,
            port,
        }
    }
}

fn tls_acceptor(certs: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs.join("cert.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.join("key.pem")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
