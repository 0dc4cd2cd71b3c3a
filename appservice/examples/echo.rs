//! An echo bot: answers every message in its rooms with `echo: …`, and joins rooms it is
//! invited to.
//!
//! ```text
//! cargo run -p charla-appservice --example echo -- \
//!     <homeserver URL> <server name> <registration.yaml> <listen address> [state folder]
//! ```
//!
//! If the registration file does not exist it is generated (users `@echo_…`, sender
//! `echobot`, URL `http://<listen address>`); give it to the homeserver and restart that.

use appservice::{
    AppService, Handler, HandlerError, Intent, Namespace, Namespaces, Registration, SendOptions,
};
use ruma::events::room::member::MembershipState;
use ruma::events::room::message::RoomMessageEventContent;
use ruma::events::{
    AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
};
use ruma::serde::Raw;
use ruma::{OwnedServerName, RoomOrAliasId};

/// The bot: its handler is also used by `tests/echo.rs`.
pub struct Echo {
    pub bot: Intent,
}

impl Handler for Echo {
    async fn on_event(
        &self,
        event: AnyTimelineEvent,
        _raw: &Raw<AnyTimelineEvent>,
    ) -> Result<(), HandlerError> {
        match event {
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
                MessageLikeEvent::Original(m),
            )) if m.sender != self.bot.user_id() => {
                let echo =
                    RoomMessageEventContent::text_plain(format!("echo: {}", m.content.body()));
                // Derived from the event, so a redelivered transaction does not echo twice.
                let txn_id = Some(format!("echo-{}", m.event_id));
                let options = SendOptions {
                    txn_id,
                    ..Default::default()
                };
                self.bot.send_message(&m.room_id, &echo, options).await?;
            }
            AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(m)))
                if m.state_key == self.bot.user_id()
                    && m.content.membership == MembershipState::Invite =>
            {
                let room: &RoomOrAliasId = (&*m.room_id).into();
                self.bot.join(room, &[]).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [homeserver, server_name, path, listen, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: echo <homeserver URL> <server name> <registration.yaml> <listen address> [state folder]"
        );
        std::process::exit(2);
    };
    let server_name = OwnedServerName::try_from(server_name.as_str())?;
    let registration = match Registration::from_file(path) {
        Ok(registration) => registration,
        Err(error) if std::path::Path::new(path).exists() => return Err(error.into()),
        Err(_) => {
            let escaped = server_name.as_str().replace('.', "\\.");
            let namespaces = Namespaces {
                users: vec![Namespace::new(format!("@echo_.*:{escaped}"), true)],
                ..Namespaces::default()
            };
            let registration = Registration::generate(
                "echo",
                Some(format!("http://{listen}")),
                "echobot",
                namespaces,
            );
            registration.write_file(path)?;
            println!("wrote {path}: give it to the homeserver");
            registration
        }
    };
    let state = rest.first().map(String::as_str).unwrap_or("echo-state");
    let app = AppService::builder(registration, homeserver, &server_name)
        .state_dir(state)
        .build_with(|parts| Echo { bot: parts.bot() })?;
    app.bot().ensure_registered().await?;
    let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
    println!("echo bot {} listening on {listen}", app.bot().user_id());
    app.serve(listener).await?;
    Ok(())
}
