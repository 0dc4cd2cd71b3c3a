//! Phase 3, attachments: 25 MB mailed in and 25 MB sent out, each compared end to end.

use std::time::{Duration, Instant};

use base64::Engine;
use lettre::message::{Attachment, MultiPart, SinglePart, header::ContentType};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ATTACHMENT_BYTES, DESK, mails::send_mail, relay::Relay, rig::Rig, watch::Watcher};
use crate::bench::{client::BoxError, report::Report, setup::progress};

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

fn digest(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A 25 MB attachment mailed in; the room it arrived in.
pub(super) async fn attachment_in(
    rig: &Rig,
    watcher: &Watcher,
    r: &mut Report,
) -> Result<String, BoxError> {
    const FILE: &str = "grande.bin";
    const FROM: &str = "adjuntos@example.org";
    let data = random_bytes(ATTACHMENT_BYTES);
    let mail = lettre::Message::builder()
        .from(format!("Adjuntos <{FROM}>").parse()?)
        .to(DESK.parse()?)
        .subject("Un archivo grande")
        .message_id(Some("<adjunto.grande@example.org>".into()))
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain("Adjunto el archivo.".to_owned()))
                .singlepart(Attachment::new(FILE.into()).body(
                    data.clone(),
                    ContentType::parse("application/octet-stream")?,
                )),
        )?
        .formatted();
    progress(format!(
        "email: a {} attachment in (a {} mail)",
        mb(data.len()),
        mb(mail.len())
    ));
    let transport = rig.transport(1);
    let started = Instant::now();
    send_mail(&transport, FROM, &mail)
        .await
        .map_err(|e| format!("the 25 MB mail was refused: {e}"))?;
    let accepted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let seen = loop {
        if let Some(seen) = watcher.get(FILE) {
            break seen;
        }
        if Instant::now() > deadline {
            return Err("the 25 MB attachment did not arrive within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = seen.at.duration_since(started);
    r.row(
        "25 MB in: SMTP 250, m.file in the room",
        format!(
            "{:.2} s, {:.2} s (a {} mail)",
            accepted.as_secs_f64(),
            took.as_secs_f64(),
            mb(mail.len())
        ),
    );
    r.set("attachment_in_secs", took.as_secs_f64());
    let mxc = seen.url.ok_or("the m.file has no url")?;
    let (server, media) = mxc
        .trim_start_matches("mxc://")
        .split_once('/')
        .ok_or("bad mxc URI")?;
    let downloaded = rig
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{server}/{media}",
            rig.base
        ))
        .bearer_auth(&rig.token)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let same = downloaded.len() == data.len() && digest(&downloaded) == digest(&data);
    r.row(
        "25 MB in: downloaded, compared",
        format!(
            "{}, SHA-256 {}",
            mb(downloaded.len()),
            if same { "equal" } else { "DIFFERENT" }
        ),
    );
    if !same {
        r.problem(format!(
            "the inbound attachment differs: {} bytes sent, {} downloaded",
            data.len(),
            downloaded.len()
        ));
    }
    if seen.count != 1 {
        r.problem(format!(
            "the inbound attachment arrived {} times",
            seen.count
        ));
    }
    Ok(seen.room)
}

/// A 25 MB file uploaded by the agent and sent in `room`, until the relay has it.
pub(super) async fn attachment_out(
    rig: &Rig,
    relay: &Relay,
    room: &str,
    r: &mut Report,
) -> Result<(), BoxError> {
    const FILE: &str = "respuesta.bin";
    let data = random_bytes(ATTACHMENT_BYTES);
    progress(format!("email: a {} attachment out", mb(data.len())));
    rig.join(room).await?;
    *relay.sink.big.lock() = None;
    let started = Instant::now();
    let upload: Value = rig
        .http
        .post(format!(
            "{}/_matrix/media/v3/upload?filename={FILE}",
            rig.base
        ))
        .bearer_auth(&rig.token)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let uploaded = started.elapsed();
    let content = json!({
        "msgtype": "m.file", "body": FILE, "filename": FILE, "url": upload["content_uri"],
        "info": {"mimetype": "application/octet-stream", "size": data.len()},
    });
    let sent_at = Instant::now();
    let event = rig.send(room, "big-out", &content).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let (at, mail) = loop {
        if let Some(big) = relay.sink.big.lock().take() {
            break big;
        }
        if Instant::now() > deadline {
            let delivery = rig.bridge.delivery(&event);
            return Err(format!(
                "the relay got no 25 MB mail within 300 s (delivery {delivery:?})"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = at.duration_since(sent_at);
    r.row(
        "25 MB out: upload, m.file sent -> relay",
        format!(
            "{:.2} s, {:.2} s (a {} mail)",
            uploaded.as_secs_f64(),
            took.as_secs_f64(),
            mb(mail.len())
        ),
    );
    r.set("attachment_out_secs", took.as_secs_f64());
    r.set("attachment_out_upload_secs", uploaded.as_secs_f64());
    let decoded = attachment_of(&mail, FILE);
    let same = decoded
        .as_ref()
        .is_ok_and(|d| d.len() == data.len() && digest(d) == digest(&data));
    r.row(
        "25 MB out: decoded from the relayed mail, compared",
        match &decoded {
            Ok(d) => format!(
                "{}, SHA-256 {}",
                mb(d.len()),
                if same { "equal" } else { "DIFFERENT" }
            ),
            Err(e) => e.clone(),
        },
    );
    if !same {
        r.problem(format!(
            "the outbound attachment differs or is missing: {}",
            decoded.map_or_else(|e| e, |d| format!("{} bytes", d.len()))
        ));
    }
    // The delivery is recorded just after the relay's answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = rig.bridge.delivery(&event).map(|d| d.status);
        if status.as_deref() == Some("sent") {
            break;
        }
        if Instant::now() > deadline {
            r.problem(format!(
                "the 25 MB answer's delivery is {status:?}, not sent"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The bytes of the base64 part named `filename` in a raw mail.
fn attachment_of(mail: &[u8], filename: &str) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(mail).map_err(|_| "the relayed mail is not ASCII")?;
    let name = text
        .find(&format!("filename=\"{filename}\""))
        .ok_or_else(|| format!("no part named {filename} in the relayed mail"))?;
    let part_start = text[..name].rfind("\r\n--").unwrap_or(0);
    let body_start = name
        + text[name..]
            .find("\r\n\r\n")
            .ok_or("the attachment's part has no body")?
        + 4;
    let headers = text[part_start..body_start].to_ascii_lowercase();
    if !headers.contains("content-transfer-encoding: base64") {
        return Err(format!("the attachment's part is not base64: {headers}"));
    }
    let body_end = body_start
        + text[body_start..]
            .find("\r\n--")
            .unwrap_or(text.len() - body_start);
    let compact: Vec<u8> = text[body_start..body_end]
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("the attachment's base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenarios::email::relay::answer_text;

    #[test]
    fn relayed_attachments_are_read_back() {
        let mail = format!(
            "Message-ID: <x@desk>\r\nSubject: Re\r\n\r\n--B\r\n\
             Content-Type: text/plain\r\n\r\n{}\r\n--B\r\n\
             Content-Disposition: attachment; filename=\"f.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAw==\r\n--B--\r\n",
            answer_text(12, 345)
        );
        assert_eq!(
            attachment_of(mail.as_bytes(), "f.bin").unwrap(),
            [0, 1, 2, 3]
        );
        assert!(attachment_of(mail.as_bytes(), "g.bin").is_err());
    }
}
