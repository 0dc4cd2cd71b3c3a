//! The system under test: an in-process Charla with the email bridge, and its agent.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use lettre::{AsyncSmtpTransport, Tokio1Executor, transport::smtp::PoolConfig};
use serde_json::{Value, json};

use super::{DESK, MAX_MESSAGE_BYTES};
use crate::bench::client::BoxError;
use crate::server::RunningServer;

/// The server with the bridge, its agent, and what the bench reaches them with.
pub(super) struct Rig {
    pub(super) server: RunningServer,
    pub(super) bridge: Arc<email::Bridge>,
    smtp: SocketAddr,
    pub(super) base: String,
    pub(super) http: reqwest::Client,
    /// The agent's access token.
    pub(super) token: String,
}

impl Rig {
    pub(super) async fn start(
        dir: &Path,
        relay_port: u16,
        clients: usize,
    ) -> Result<Rig, BoxError> {
        let text = format!(
            "server_name = \"localhost\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\
             [storage]\npath = {data:?}\n\
             [limits]\nsend_per_second = 1000000.0\nsend_burst = 1000000\n\
             [logging]\nfilter = \"warn\"\n\
             [support]\ngreeting = \"\"\n\
             [bridges.email]\nenabled = true\naddress = \"{DESK}\"\n\
             smtp_listen = \"127.0.0.1:0\"\nsmtp_relay = \"smtp+plain://127.0.0.1:{relay_port}\"\n\
             invite = [\"@agent:localhost\"]\nauthenticate = false\n\
             mails_per_sender_per_hour = 1000000\nmails_per_sender_burst = 1000000\n\
             max_connections = {max_connections}\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n",
            data = dir.join("data"),
            // lettre's pool may hold more sockets than sends in flight for a moment.
            max_connections = (clients * 4).max(256),
        );
        let config = crate::config::Config::from_toml(&text)?;
        let server = crate::server::start(config).await?;
        let handle = server
            .email
            .as_ref()
            .ok_or("the email bridge is not running")?;
        let (bridge, smtp) = (handle.bridge().clone(), handle.smtp_addr());
        let base = server.base_url();
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .build()?;
        let answer: Value = http
            .post(format!("{base}/_matrix/client/v3/register"))
            .json(&json!({"username": "agent", "password": "bench-password",
                          "auth": {"type": "m.login.dummy"}}))
            .send()
            .await?
            .json()
            .await?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| format!("agent registration failed: {answer}"))?
            .to_owned();
        Ok(Rig {
            server,
            bridge,
            smtp,
            base,
            http,
            token,
        })
    }

    pub(super) async fn join(&self, room: &str) -> Result<(), BoxError> {
        self.http
            .post(format!(
                "{}/_matrix/client/v3/join/{}",
                self.base,
                enc(room)
            ))
            .bearer_auth(&self.token)
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// `PUT /send` of an `m.room.message` as the agent; its event id.
    pub(super) async fn send(
        &self,
        room: &str,
        txn: &str,
        content: &Value,
    ) -> Result<String, BoxError> {
        let answer: Value = self
            .http
            .put(format!(
                "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                self.base,
                enc(room)
            ))
            .bearer_auth(&self.token)
            .json(content)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(answer["event_id"].as_str().ok_or("no event_id")?.to_owned())
    }

    /// The customers' message bodies in `room`, oldest first, as the agent reads them.
    pub(super) async fn customer_bodies(&self, room: &str) -> Result<Vec<String>, BoxError> {
        let mut bodies = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
                self.base,
                enc(room)
            );
            if let Some(f) = &from {
                url.push_str(&format!("&from={}", enc(f)));
            }
            let page: Value = self
                .http
                .get(url)
                .bearer_auth(&self.token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            for event in &chunk {
                let puppet = event["sender"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("@email_"));
                if puppet
                    && event["type"] == "m.room.message"
                    && let Some(body) = event["content"]["body"].as_str()
                {
                    bodies.push(body.to_owned());
                }
            }
            match page["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        bodies.reverse();
        Ok(bodies)
    }

    pub(super) fn transport(&self, pool: usize) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.smtp.ip().to_string())
            .port(self.smtp.port())
            .timeout(Some(Duration::from_secs(120)))
            .pool_config(PoolConfig::new().max_size(pool.min(u32::MAX as usize) as u32))
            .build()
    }
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
