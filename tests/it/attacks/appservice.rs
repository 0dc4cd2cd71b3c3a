//! The appservice transaction endpoint authenticates before it reads a body (#18 item 9): the
//! in-process WhatsApp bridge's `/_matrix/app/v1/transactions` sits on the public listener, and
//! a caller without the homeserver's token could make it buffer 32 MiB bodies.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::TestServer;

const BRIDGE: &str = "[bridges.whatsapp]\nenabled = true\napi_base = \"http://127.0.0.1:9/v21.0\"\n\
                      phone_number_id = \"106540352242922\"\naccess_token = \"token\"\n\
                      app_secret = \"app-secret\"\nverify_token = \"verify\"\n";

/// Sends a request that announces a 32 MiB body but sends ten bytes of it, and reads the answer
/// (bounded: a server that waits for the body never answers).
async fn announce_large_body(server: &TestServer, method: &str, path: &str, auth: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(server.server.addr)
        .await
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"events\":",
        32 * 1024 * 1024
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer: the server is waiting for the body"
    );
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_transaction_without_the_token_is_refused_before_its_body_is_read() {
    let s = TestServer::start_with(BRIDGE).await;
    let path = "/bridges/whatsapp/_matrix/app/v1/transactions/attack1";
    let answer = announce_large_body(&s, "PUT", path, "not-the-hs-token").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let answer =
        announce_large_body(&s, "POST", "/bridges/whatsapp/_matrix/app/v1/ping", "nope").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}
