//! The customers' mails: the threads' builders and the send, as a customer's MTA.

use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::DESK;

/// A mail as a customer's MTA hands it over: `from` to the desk.
pub(super) async fn send_mail(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    from: &str,
    raw: &[u8],
) -> Result<(), String> {
    let envelope = lettre::address::Envelope::new(
        Some(from.parse().map_err(|e| format!("{from}: {e}"))?),
        vec![DESK.parse().map_err(|e| format!("{DESK}: {e}"))?],
    )
    .map_err(|e| e.to_string())?;
    match transport.send_raw(&envelope, raw).await {
        Ok(answer) if answer.is_positive() => Ok(()),
        Ok(answer) => Err(format!("answered {}", answer.code())),
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn customer(t: usize) -> String {
    format!("cliente{t}@example.org")
}

pub(super) fn mail_text(t: usize, j: usize) -> String {
    format!("Hola, mensaje {j} del hilo {t}.")
}

fn message_id(t: usize, j: usize) -> String {
    format!("t{t}.m{j}@example.org")
}

/// Mail `j` of thread `t`: the first opens it, the others reply (quoting, Gmail style).
pub(super) fn thread_mail(t: usize, j: usize) -> Vec<u8> {
    let (subject, threading, quote) = if j == 0 {
        (format!("Pedido {t}"), String::new(), String::new())
    } else {
        let references: Vec<String> = (0..j).map(|k| format!("<{}>", message_id(t, k))).collect();
        (
            format!("Re: Pedido {t}"),
            format!(
                "In-Reply-To: <{}>\r\nReferences: {}\r\n",
                message_id(t, j - 1),
                references.join(" ")
            ),
            format!(
                "\r\n\r\nOn Sun, 6 Dec 2026 at 10:00, Cliente {t} <{}> wrote:\r\n> {}\r\n",
                customer(t),
                mail_text(t, j - 1)
            ),
        )
    };
    format!(
        "From: Cliente {t} <{from}>\r\nTo: {DESK}\r\nSubject: {subject}\r\n\
         Message-ID: <{id}>\r\n{threading}Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         {text}{quote}\r\n",
        from = customer(t),
        id = message_id(t, j),
        text = mail_text(t, j),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_names_its_thread_and_quotes() {
        let mail = String::from_utf8(thread_mail(7, 2)).unwrap();
        assert!(mail.contains("Message-ID: <t7.m2@example.org>\r\n"));
        assert!(mail.contains("In-Reply-To: <t7.m1@example.org>\r\n"));
        assert!(mail.contains("References: <t7.m0@example.org> <t7.m1@example.org>\r\n"));
        assert!(mail.contains("\r\n\r\nHola, mensaje 2 del hilo 7.\r\n\r\nOn "));
        assert!(
            !String::from_utf8(thread_mail(7, 0))
                .unwrap()
                .contains("In-Reply-To")
        );
    }
}
