//! Server discovery through SRV records: a server whose name carries no port and has no
//! `.well-known` delegation is reached where its `_matrix-fed._tcp` record points, under its
//! own name. The test runs a DNS server on loopback (`[federation] nameservers`).

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use hickory_resolver::proto::{
    op::{Message, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, SRV},
    },
};
use serde_json::json;

use super::{certificate, peer_at};
use crate::common::{enc, registered};

/// A DNS server on UDP loopback that knows one SRV record (`srv` → `localhost:port`) and that
/// `localhost` is 127.0.0.1; every other name does not exist. It records the questions asked.
async fn dns_server(srv: &'static str, port: u16) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(question) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::response(question.metadata.id, OpCode::Query);
            answer.metadata.recursion_desired = question.metadata.recursion_desired;
            answer.metadata.recursion_available = true;
            for query in &question.queries {
                answer.add_query(query.clone());
                let name = query.name().to_ascii();
                log.lock()
                    .unwrap()
                    .push(format!("{} {name}", query.query_type()));
                match (query.query_type(), name.as_str()) {
                    (RecordType::SRV, n) if n == srv => {
                        let target = Name::from_ascii("localhost.").unwrap();
                        answer.add_answer(Record::from_rdata(
                            query.name().clone(),
                            60,
                            RData::SRV(SRV::new(10, 5, port, target)),
                        ));
                    }
                    (RecordType::A, "localhost.") => {
                        answer.add_answer(Record::from_rdata(
                            query.name().clone(),
                            60,
                            RData::A(A(Ipv4Addr::LOCALHOST)),
                        ));
                    }
                    (_, "localhost.") => {}
                    _ => answer.metadata.response_code = ResponseCode::NXDomain,
                }
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
        }
    });
    (addr, asked)
}

#[tokio::test]
async fn a_server_known_only_by_its_srv_record_is_reached_under_its_name() {
    let certs = tempfile::tempdir().unwrap();
    certificate(certs.path());
    let b_port = crate::common::process::free_port();
    let (dns, asked) = dns_server("_matrix-fed._tcp.charla-b.test.", b_port).await;

    // B is named without a port: only its SRV record says where it listens.
    let b_dir = tempfile::tempdir().unwrap();
    let text = format!(
        "server_name = \"charla-b.test\"\n\
         [storage]\npath = {:?}\ncache_capacity_mb = 16\n\
         [logging]\nfilter = \"warn\"\n\
         [federation]\nenabled = true\nlisten = \"127.0.0.1:{b_port}\"\n\
         tls_certificate = {:?}\ntls_private_key = {:?}\n\
         verify_certificates = false\nip_range_blocklist = []\n",
        b_dir.path().join("data"),
        certs.path().join("cert.pem"),
        certs.path().join("key.pem"),
    );
    let mut config = charla::config::Config::from_toml(&text).unwrap();
    config.server.listen = ([127, 0, 0, 1], 0).into();
    let b = charla::server::start(config).await.unwrap();
    let a_dir = tempfile::tempdir().unwrap();
    let a = peer_at(
        certs.path(),
        crate::common::process::free_port(),
        a_dir.path(),
        &format!("nameservers = [\"{dns}\"]"),
    )
    .await;

    let bob = registered(&b.base_url(), "bob").await;
    let (status, _) = bob
        .put(
            "/_matrix/client/v3/profile/@bob:charla-b.test/displayname",
            json!({"displayname": "Bob de B"}),
        )
        .await;
    assert_eq!(status, 200);
    let alice = registered(&a.base_url(), "alice").await;
    let (status, profile) = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc("@bob:charla-b.test")
        ))
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["displayname"], json!("Bob de B"));
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked.contains(&"SRV _matrix-fed._tcp.charla-b.test.".to_owned()),
        "{asked:?}"
    );
    a.stop().await;
    b.stop().await;
}
