//! Bridges inside `charla serve`. A bridge still talks to Charla only through the Application
//! Service API: its registration (tokens generated once, kept under the data folder) is added
//! to the appservice registry like any registration file, its endpoints and webhook are nested
//! under `/bridges/<name>` on the server's listener, and it calls the Client-Server API at the
//! listener's address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use serde_json::{Value, json};

use crate::config::Config;
use crate::error::Error;
use crate::metrics::HttpMetrics;

/// A bridge whose registration is in place, to be built once the listener is known.
pub struct PreparedWhatsApp {
    registration: appservice::Registration,
    state_dir: PathBuf,
}

/// Makes the conversation state an in-process bridge's bot sets count as the desk's (its rooms
/// are the desk's conversations), also when `support.desk_appservices` was written before the
/// bridge was enabled: without it the desk would take each new room for one the bot was merely
/// invited into, and overwrite its channel and contact.
fn trust_as_desk(config: &mut Config, appservice: &str) {
    let desk = &mut config.support.desk_appservices;
    if !desk.iter().any(|id| id == appservice) {
        desk.push(appservice.to_owned());
    }
}

/// Writes the WhatsApp bridge's registration (URL `http://<addr>/bridges/whatsapp`) and adds it
/// to `config.appservice.registrations`, when the bridge is enabled.
pub fn prepare_whatsapp(
    config: &mut Config,
    addr: SocketAddr,
) -> Result<Option<PreparedWhatsApp>, Error> {
    let bridge = &config.bridges.whatsapp;
    if !bridge.enabled {
        return Ok(None);
    }
    let state_dir = whatsapp::bridge::state_dir(bridge, &config.storage.path);
    let file = if bridge.registration.as_os_str().is_empty() {
        state_dir.join("registration.yaml")
    } else {
        bridge.registration.clone()
    };
    let url = format!("http://{addr}/bridges/whatsapp");
    let registration = whatsapp::registration::load_or_generate(
        &file,
        &url,
        &config.server_name,
        &bridge.bot_localpart,
    )
    .map_err(|e| Error::internal(format!("WhatsApp bridge registration: {e}")))?;
    config.appservice.registrations.push(file);
    trust_as_desk(config, whatsapp::registration::ID);
    // In one process the support bot's canned responses are known: the bridge leaves
    // `!template NAME` with those names to the bot.
    let canned = config.support.templates.iter().map(|t| t.name.clone());
    let bot_templates = &mut config.bridges.whatsapp.bot_templates;
    for name in canned {
        if !bot_templates.contains(&name) {
            bot_templates.push(name);
        }
    }
    Ok(Some(PreparedWhatsApp {
        registration,
        state_dir,
    }))
}

/// Builds the bridge against the homeserver at `addr`, nests its routes into `app` and starts
/// its workers.
pub fn start_whatsapp(
    prepared: PreparedWhatsApp,
    config: &Config,
    addr: SocketAddr,
    app: Router,
    metrics: Option<&Arc<HttpMetrics>>,
) -> Result<(Router, whatsapp::BridgeHandle), Error> {
    let service = whatsapp::BridgeService::new(
        config.bridges.whatsapp.clone(),
        prepared.registration,
        &format!("http://{addr}"),
        &config.server_name,
        &prepared.state_dir,
    )
    .map_err(|e| Error::internal(format!("WhatsApp bridge: {e}")))?;
    let routes = crate::metrics::http::instrument(service.router(), metrics);
    let app = app.nest_service("/bridges/whatsapp", routes);
    Ok((app, service.start()))
}

/// The email bridge, its registration in place, to be started once the listener is known.
pub struct PreparedEmail {
    registration: appservice::Registration,
    state_dir: PathBuf,
}

/// Writes the email bridge's registration (URL `http://<addr>/bridges/email`) and adds it to
/// `config.appservice.registrations`, when the bridge is enabled.
pub fn prepare_email(
    config: &mut Config,
    addr: SocketAddr,
) -> Result<Option<PreparedEmail>, Error> {
    let bridge = &config.bridges.email;
    if !bridge.enabled {
        return Ok(None);
    }
    let state_dir = email::bridge::state_dir(bridge, &config.storage.path);
    let file = email::bridge::registration_file(bridge, &config.storage.path);
    let url = format!("http://{addr}/bridges/email");
    let registration = email::registration::load_or_generate(
        &file,
        &url,
        &config.server_name,
        &bridge.bot_localpart,
    )
    .map_err(|e| Error::internal(format!("email bridge registration: {e}")))?;
    config.appservice.registrations.push(file);
    trust_as_desk(config, email::registration::ID);
    // In one process the support bot is known: its greeting and FAQ answers are automatic.
    let bot = format!("@{}:{}", config.support.bot_localpart, config.server_name);
    let automatic = &mut config.bridges.email.automatic_senders;
    if config.support.enabled && !automatic.contains(&bot) {
        automatic.push(bot);
    }
    Ok(Some(PreparedEmail {
        registration,
        state_dir,
    }))
}

/// Builds the email bridge against the homeserver at `addr`, nests its routes into `app`,
/// binds its SMTP listener (offering STARTTLS with `tls`) and starts its workers.
pub async fn start_email(
    prepared: PreparedEmail,
    config: &Config,
    addr: SocketAddr,
    app: Router,
    metrics: Option<&Arc<HttpMetrics>>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(Router, email::BridgeHandle), Error> {
    let service = email::BridgeService::new(
        config.bridges.email.clone(),
        prepared.registration,
        &format!("http://{addr}"),
        &config.server_name,
        &prepared.state_dir,
    )
    .map_err(|e| Error::internal(format!("email bridge: {e}")))?;
    let routes = crate::metrics::http::instrument(service.router(), metrics);
    let app = app.nest_service("/bridges/email", routes);
    let handle = service
        .start(tls)
        .await
        .map_err(|e| Error::internal(format!("email bridge: {e}")))?;
    Ok((app, handle))
}

/// The email bridge's per-message states, as the support API shows them.
impl crate::support::DeliveryStates for email::Bridge {
    fn delivery(&self, room_id: &ruma::RoomId, event_id: &str) -> Option<Value> {
        let delivery = email::Bridge::delivery(self, event_id)?;
        if delivery.room_id != room_id {
            return None;
        }
        let mut state = json!({
            "channel": "email",
            "status": delivery.status,
            "message_id": delivery.message_id,
            "updated_ts": delivery.updated_ts,
        });
        if let Some(error) = delivery.error {
            state["error"] = json!({"message": error});
        }
        Some(state)
    }
}

/// Flags of `charla whatsapp-sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address of the simulator's listener.
    #[arg(long, default_value = "127.0.0.1:9009")]
    pub listen: String,
    /// Take the phone number id, token and secrets from `[bridges.whatsapp]` of this config,
    /// and send webhooks to its server's `/bridges/whatsapp/webhook`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where to send webhooks (overrides the one derived from --config).
    #[arg(long)]
    pub webhook: Option<String>,
    #[arg(long)]
    pub phone_number_id: Option<String>,
    #[arg(long)]
    pub access_token: Option<String>,
    #[arg(long)]
    pub app_secret: Option<String>,
}

/// `charla whatsapp-sim`: serves the simulator until ctrl-c.
pub async fn run_sim(args: SimArgs) -> Result<(), String> {
    let mut sim = whatsapp::sim::SimConfig::default();
    if let Some(path) = &args.config {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let bridge = &config.bridges.whatsapp;
        let set = |target: &mut String, value: &str| {
            if !value.is_empty() {
                *target = value.to_owned();
            }
        };
        set(&mut sim.phone_number_id, &bridge.phone_number_id);
        set(&mut sim.access_token, &bridge.access_token);
        set(&mut sim.app_secret, &bridge.app_secret);
        sim.webhook_url = format!("{}/bridges/whatsapp/webhook", config.public_base_url());
    }
    for (target, value) in [
        (&mut sim.webhook_url, args.webhook),
        (&mut sim.phone_number_id, args.phone_number_id),
        (&mut sim.access_token, args.access_token),
        (&mut sim.app_secret, args.app_secret),
    ] {
        if let Some(value) = value {
            *target = value;
        }
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let simulator = whatsapp::sim::Simulator::new(sim.clone());
    let server = simulator.serve(listener).map_err(|e| e.to_string())?;
    println!("WhatsApp Cloud API simulator on {}", server.url());
    println!("  api_base = \"{}\"", server.api_base());
    println!("  phone_number_id = \"{}\"", sim.phone_number_id);
    println!("  webhooks to {}", sim.webhook_url);
    println!(
        "  a customer writes: curl -X POST {}/sim/customers/34600111222/messages -d '{{\"name\":\"María\",\"message\":{{\"type\":\"text\",\"text\":{{\"body\":\"Hola\"}}}}}}' -H 'content-type: application/json'",
        server.url()
    );
    println!("  what the business sent: curl {}/sim/sent", server.url());
    let _ = tokio::signal::ctrl_c().await;
    server.stop().await;
    Ok(())
}

/// The WhatsApp bridge's per-message states, as the support API shows them.
impl crate::support::DeliveryStates for whatsapp::Bridge {
    fn delivery(&self, room_id: &ruma::RoomId, event_id: &str) -> Option<Value> {
        let delivery = whatsapp::Bridge::delivery(self, event_id)?;
        if delivery.room_id != room_id {
            return None;
        }
        let mut state = json!({
            "channel": "whatsapp",
            "status": delivery.status,
            "wamid": delivery.wamid,
            "updated_ts": delivery.updated_ts,
        });
        if delivery.error_code.is_some() || delivery.error.is_some() {
            state["error"] = json!({"code": delivery.error_code, "message": delivery.error});
        }
        Some(state)
    }
}
