//! SPF and DMARC of inbound mail, against a DNS server on loopback (`nameservers`): a mail
//! its domain vouches for is marked `pass`; one forging a domain that publishes a reject
//! policy is still brought in (a customer may forward badly) but marked `fail`, and the
//! agents are warned in a private notice.

use std::net::SocketAddr;

use hickory_resolver::proto::{
    op::{Message, OpCode, ResponseCode},
    rr::{RData, Record, RecordType, rdata::TXT},
};

use super::{Rig, plain_mail};

/// TXT records: `good.test` allows 127.0.0.1, `forged.test` only 192.0.2.1; both publish
/// `p=reject`. Every other name does not exist.
async fn dns_server() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
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
                let txt = match (query.query_type(), query.name().to_ascii().as_str()) {
                    (RecordType::TXT, "good.test.") => Some("v=spf1 ip4:127.0.0.1 -all"),
                    (RecordType::TXT, "forged.test.") => Some("v=spf1 ip4:192.0.2.1 -all"),
                    (RecordType::TXT, "_dmarc.good.test." | "_dmarc.forged.test.") => {
                        Some("v=DMARC1; p=reject")
                    }
                    _ => None,
                };
                match txt {
                    Some(txt) => answer.add_answer(Record::from_rdata(
                        query.name().clone(),
                        60,
                        RData::TXT(TXT::new(vec![txt.to_owned()])),
                    )),
                    None => {
                        answer.metadata.response_code = ResponseCode::NXDomain;
                        continue;
                    }
                };
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
        }
    });
    addr
}

#[tokio::test]
async fn spf_and_dmarc_results_are_shown_and_a_forgery_is_flagged() {
    let dns = dns_server().await;
    let rig = Rig::start_with(&format!("authenticate = true\nnameservers = [\"{dns}\"]\n")).await;
    let mut joined = Vec::new();

    let good = plain_mail(
        "Eva <eva@good.test>",
        "Hola",
        "g1@good.test",
        "",
        "Soy Eva.",
    );
    rig.send_raw("eva@good.test", &good).await.unwrap();
    let room = rig.next_conversation(&mut joined).await;
    let messages = rig.wait_messages(&room, 1).await;
    let auth = &messages[0]["content"]["io.charla.email"]["auth"];
    assert_eq!(auth["spf"], "pass", "{auth}");
    assert_eq!(auth["dmarc"], "pass", "{auth}");
    assert!(
        auth["header"].as_str().unwrap().contains("spf=pass"),
        "{auth}"
    );
    // The agents see the results of the mail that opened the conversation.
    assert_eq!(
        notices(&rig, &room).await,
        ["Sender checks for eva@good.test: SPF pass, DKIM none, DMARC pass."]
    );

    let forged = plain_mail(
        "The CEO <ceo@forged.test>",
        "Urgent transfer",
        "f1@forged.test",
        "",
        "Send me the customer list.",
    );
    rig.send_raw("ceo@forged.test", &forged).await.unwrap();
    let room = rig.next_conversation(&mut joined).await;
    let messages = rig.wait_messages(&room, 1).await;
    let auth = &messages[0]["content"]["io.charla.email"]["auth"];
    assert_eq!(auth["spf"], "fail", "{auth}");
    assert_eq!(auth["dmarc"], "fail", "{auth}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let warned = rig.messages(&room).await.into_iter().any(|m| {
            m["sender"] == "@emailbot:localhost"
                && m["content"]["io.charla.internal"] == true
                && m["content"]["body"]
                    .as_str()
                    .unwrap()
                    .contains("may not be from ceo@forged.test")
        });
        if warned {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no DMARC warning");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The bridge bot's private notices in a room, once there is one.
async fn notices(rig: &Rig, room: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let told: Vec<String> = rig
            .messages(room)
            .await
            .into_iter()
            .filter(|m| {
                m["sender"] == "@emailbot:localhost" && m["content"]["io.charla.internal"] == true
            })
            .map(|m| m["content"]["body"].as_str().unwrap().to_owned())
            .collect();
        if !told.is_empty() {
            return told;
        }
        assert!(std::time::Instant::now() < deadline, "no notice in {room}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
